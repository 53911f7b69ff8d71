"""`dbctl migrate`, `dbctl migrate resolve` and `dbctl status`: options and output around the verbs of
dbctl/schema/commands.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dbctl.cli import targets
from dbctl.cli.errors import errors
from dbctl.core.errors import DbctlError
from dbctl.local.state import Paths
from dbctl.rehearsal import copies
from dbctl.schema import commands, deploy, lint
from dbctl.schema.migrate import MIGRATIONS_DIR


def _migrations_dir_option(help: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--migrations-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=MIGRATIONS_DIR,
        show_default=True,
        help=help,
    )


def _json_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, for machines.")


def _schema_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--migrations-dir and --json, after the connection's options."""
    options = [_migrations_dir_option(), _json_option()]
    for option in reversed(options):
        func = option(func)
    return func


def _echo_step(as_json: bool) -> deploy.Echo | None:
    if as_json:
        return None
    return lambda step: click.echo(step.line())


@click.group(invoke_without_command=True)
@targets.admin_options
@_schema_options
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--lock-wait", default=60.0, show_default=True, help="Seconds to wait for another run's lock.")
@click.option(
    "--reset-passwords",
    is_flag=True,
    help="With --credentials: also change passwords dbctl or a rotation already set (only once PgBouncer's "
    "auth source holds these verifiers; an older file would undo a rotation).",
)
@click.pass_context
def migrate_command(
    ctx: click.Context,
    database_url: str | None,
    credentials: Path | None,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
    migrations_dir: Path,
    as_json: bool,
    dry_run: bool,
    lock_wait: float,
    reset_passwords: bool,
) -> None:
    """Apply pending schema migrations and converge the least-privilege roles (the post-deploy step)."""
    if ctx.invoked_subcommand is not None:
        return
    with errors(as_json):
        database = targets.admin_database(database_url, credentials, stack_name, via, ssl_root_cert)
        report = commands.migrate(
            database,
            migrations_dir=migrations_dir,
            dry_run=dry_run,
            lock_wait=lock_wait,
            echo=_echo_step(as_json),
            reset_passwords=reset_passwords,
        )
    if as_json:
        click.echo(json.dumps({"ok": True, **report.as_dict()}))
        return
    if dry_run:
        verdict = "would change: see above" if report.changed else "no changes needed"
    else:
        verdict = "applied changes" if report.changed else "no changes: database and roles already up to date"
    click.echo(f"{report.total_ms:8.1f} ms  {'done':<9} {verdict}")


@migrate_command.command("resolve")
@click.option("--rolled-back", "rolled_back", required=True, metavar="NAME", help="The failed migration.")
@targets.database_url_option("Admin connection URL.")
@targets.stack_option()
@targets.via_option("With --stack: connect through a tunnel.")
@targets.ssl_root_cert_option("With --stack: RDS CA.")
@_migrations_dir_option(
    "Where the migration is: its CREATE INDEX CONCURRENTLY's INVALID leftovers are dropped."
)
def resolve_command(
    rolled_back: str,
    database_url: str | None,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
    migrations_dir: Path,
) -> None:
    """Mark a failed migration as rolled back (like `prisma migrate resolve --rolled-back`)."""
    with errors(False):
        database = targets.admin_database(database_url, None, stack_name, via, ssl_root_cert)
        where, dropped = commands.resolve(database, rolled_back, migrations_dir=migrations_dir)
    for line in dropped:
        click.echo(line)
    click.echo(f"marked {rolled_back} as rolled back on {where}; the next `dbctl migrate` applies it again")


@migrate_command.command("lint")
@_migrations_dir_option()
@_json_option()
@click.option(
    "--github",
    is_flag=True,
    help="Also GitHub Actions annotations on stdout (not with --json) and a job summary "
    "(GITHUB_STEP_SUMMARY).",
)
@click.option(
    "--squawk",
    "squawk",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The squawk binary (default: the locked one in tools/squawk).",
)
@click.argument("migrations", nargs=-1, metavar="[MIGRATION]...")
def lint_command(
    migrations_dir: Path, as_json: bool, github: bool, squawk: Path | None, migrations: tuple[str, ...]
) -> None:
    """Lint migrations with squawk (the named ones, else every one): locks and rewrites that can take
    production down, each with its safe rewrite. Exit 0 when clean, 1 with findings.

    Accept a finding in the file, with a reason: `-- squawk-ignore RULE -- why it is safe here`.
    """
    with errors(as_json):
        report = lint.lint(migrations_dir, squawk, list(migrations))
    if as_json:
        click.echo(json.dumps({"ok": True, **report.as_dict()}))
    else:
        for finding in report.findings:
            click.echo(finding.text())
        accepted = f", {len(report.accepted)} accepted with a reason" if report.accepted else ""
        click.echo(f"{len(report.checked)} migration(s) checked: {len(report.findings)} finding(s){accepted}")
    if github:
        if not as_json:  # stdout stays one JSON object with --json
            for line in lint.github_annotations(report):
                click.echo(line)
        lint.write_step_summary(report)
    sys.exit(1 if report.findings else 0)


@migrate_command.command("rehearse")
@_migrations_dir_option()
@click.option("--load", is_flag=True, help="Run a light read/write load of the app's queries meanwhile.")
@click.option(
    "--copy-url",
    envvar="REHEARSE_DATABASE_URL",
    show_envvar=True,
    help="Rehearse on this copy (e.g. a PITR clone) instead of the latest local backup; refused when it "
    "reaches the primary (--stack's, else the local stack's).",
)
@targets.stack_option("With --copy-url: the stack whose primary the URL must not reach (checked first).")
@targets.via_option("With --stack: connect to its primary (for the check) through a tunnel.")
@targets.ssl_root_cert_option("With --stack: RDS CA.")
@_json_option()
@targets.local_root_option()
def rehearse_command(
    migrations_dir: Path,
    load: bool,
    copy_url: str | None,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
    as_json: bool,
    root: Path,
) -> None:
    """Apply the pending migrations to a copy of real data and report, per migration, its duration and the
    strongest lock it took (table, how long), and whether lock_timeout would fire.

    Without --copy-url: the latest `dbctl local backup`, restored into a scratch database that is dropped
    afterwards.
    """
    say = None if as_json else click.echo
    with errors(as_json):
        paths = Paths(root.resolve())
        if copy_url:
            if load:
                raise DbctlError("--load runs as the local stack's app role: use it without --copy-url")
            if stack_name:
                primary = targets.admin_database(None, None, stack_name, via, ssl_root_cert).url
            else:
                primary = copies.local_primary(paths)
            report = copies.rehearse_copy(copy_url, primary, migrations_dir, say=say)
        else:
            if stack_name:
                raise DbctlError("--stack needs --copy-url, a copy of that stack's data: never its primary")
            report = copies.rehearse_local(paths, migrations_dir, load=load, say=say)
    if as_json:
        click.echo(json.dumps({"ok": True, **report.as_dict()}))
    elif report.load:
        click.echo(f"load: {report.app_queries} app queries" + "".join(f"; {e}" for e in report.app_errors))
    sys.exit(0 if all(m.ok for m in report.migrations) else 1)


@click.command("status")
@targets.admin_options
@_schema_options
def status_command(
    database_url: str | None,
    credentials: Path | None,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
    migrations_dir: Path,
    as_json: bool,
) -> None:
    """Applied, pending and failed migrations, and role drift. Exit 0 when up to date, 1 otherwise.

    Without --credentials (or --stack), passwords are not compared.
    """
    with errors(as_json):
        database = targets.admin_database(database_url, credentials, stack_name, via, ssl_root_cert)
        report = commands.status(database, migrations_dir=migrations_dir, echo=_echo_step(as_json))
    if as_json:
        click.echo(json.dumps({"ok": True, "up_to_date": not report.changed, **report.as_dict()}))
    else:
        for name in report.applied:
            click.echo(f"applied   {name}")
        for name in report.pending:
            click.echo(f"pending   {name}")
        for failed in report.failed:
            click.echo(f"failed    {failed['name']}: {failed['log']}")
        for problem in report.problems:
            click.echo(f"changed   {problem}")
        for change in report.role_changes:
            click.echo(f"drift     {change}")
        for change in report.maintenance:
            click.echo(f"drift     {change}")
        for item in report.drift:
            click.echo(f"drift     {item}")
        click.echo("up to date" if not report.changed else "not up to date")
    sys.exit(1 if report.changed else 0)
