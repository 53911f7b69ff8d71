"""`dbctl migrate`, `dbctl migrate resolve` and `dbctl status`: click wiring around dbctl.deploy."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from dbctl.cli.errors import errors
from dbctl.core.errors import DbctlError
from dbctl.schema import deploy, migrate
from dbctl.schema.connection import connect
from dbctl.schema.credentials import load_credentials_file


@dataclass(frozen=True)
class Connection:
    """Where to connect and the role verifiers to set, however they were given."""

    url: str
    verifiers: dict[str, str] | None
    before_apply: deploy.BeforeApply | None = None


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--database-url",
            envvar="DATABASE_URL",
            show_envvar=True,
            help="Admin (master) connection URL, direct to PostgreSQL (not PgBouncer). Prefer the env var: "
            "a URL on the command line shows up in process lists.",
        ),
        click.option(
            "--credentials",
            type=click.Path(dir_okay=False, path_type=Path),
            help="JSON file mapping each login role to its SCRAM verifier, or to its secret's JSON "
            "(scram_verifier, password); a plaintext password alone is refused.",
        ),
        click.option(
            "--stack", "stack_name", help="Read endpoint and secrets from this Pulumi stack instead."
        ),
        click.option(
            "--via",
            metavar="HOST:PORT",
            help="With --stack: connect through a tunnel (e.g. SSM port-forward) at HOST:PORT.",
        ),
        click.option(
            "--ssl-root-cert",
            type=click.Path(exists=True, dir_okay=False),
            help="With --stack: the RDS CA bundle for sslmode=verify-full (default: libpq's PGSSLROOTCERT).",
        ),
        click.option(
            "--migrations-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=migrate.MIGRATIONS_DIR,
            show_default=True,
        ),
        click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, for machines."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _before_pending_migrations(target: Any) -> deploy.BeforeApply:
    """The --stack flow's pre-migration hook: runs once, only when migrations are pending, before any change.

    When the stack says so (output pre_migration_snapshot, on in prod), take a manual RDS snapshot of the
    primary named after the first pending migration (the database as it was just before it) and wait until
    it is available (dbctl/aws/snapshots.py). A failure stops the run before anything is applied.
    """

    def hook(pending: list[migrate.Migration]) -> None:
        if not target.pre_migration_snapshot:
            return
        if not target.instance_id:
            raise DbctlError(
                f"stack {target.stack!r} wants a pre-migration snapshot but has no output "
                "primary_instance_id; run `pulumi up` for it first"
            )
        import boto3

        from dbctl.aws import snapshots

        client = boto3.client("rds", region_name=target.region or None)
        click.echo(f"taking pre-migration snapshot of {target.instance_id} (waits until available)", err=True)
        snapshot_id = snapshots.take_pre_migration_snapshot(client, target.instance_id, pending[0].name)
        click.echo(
            f"pre-migration snapshot {snapshot_id} is available; it is kept until deleted by hand", err=True
        )

    return hook


def _resolve_connection(
    database_url: str | None,
    credentials: Path | None,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
    need_credentials: bool,
) -> Connection:
    if stack_name:
        if credentials:
            raise DbctlError("--stack reads the role secrets itself; drop --credentials")
        import boto3

        from dbctl.aws import stack

        target = stack.parse_outputs(stack_name, stack.read_outputs(stack_name))
        client = boto3.client("secretsmanager", region_name=target.region or None)
        url = stack.admin_url(client, target, via=via, ssl_root_cert=ssl_root_cert)
        return Connection(url, stack.role_verifiers(client, target), _before_pending_migrations(target))
    if via or ssl_root_cert:
        raise DbctlError("--via and --ssl-root-cert go with --stack; put them in the URL otherwise")
    if not database_url:
        raise DbctlError("no database: pass --stack NAME, or --database-url / DATABASE_URL")
    if credentials is None:
        if need_credentials:
            raise DbctlError("pass --credentials FILE (each login role's SCRAM verifier)")
        return Connection(database_url, None)
    return Connection(database_url, load_credentials_file(credentials))


def _echo_step(as_json: bool) -> deploy.Echo | None:
    if as_json:
        return None
    return lambda step: click.echo(step.line())


@click.group(invoke_without_command=True)
@_options
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--lock-wait", default=60.0, show_default=True, help="Seconds to wait for another run's lock.")
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
) -> None:
    """Apply pending schema migrations and converge the least-privilege roles (the post-deploy step)."""
    if ctx.invoked_subcommand is not None:
        return
    with errors(as_json):
        conn = _resolve_connection(database_url, credentials, stack_name, via, ssl_root_cert, True)
        assert conn.verifiers is not None
        report = deploy.run_migrate(
            conn.url,
            conn.verifiers,
            migrations_dir=migrations_dir,
            dry_run=dry_run,
            lock_wait=lock_wait,
            before_apply=conn.before_apply,
            echo=_echo_step(as_json),
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
@click.option("--database-url", envvar="DATABASE_URL", show_envvar=True, help="Admin connection URL.")
@click.option("--stack", "stack_name", help="Read endpoint and secrets from this Pulumi stack instead.")
@click.option("--via", metavar="HOST:PORT", help="With --stack: connect through a tunnel.")
@click.option("--ssl-root-cert", type=click.Path(exists=True, dir_okay=False), help="With --stack: RDS CA.")
def resolve_command(
    rolled_back: str,
    database_url: str | None,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
) -> None:
    """Mark a failed migration as rolled back (like `prisma migrate resolve --rolled-back`)."""
    with errors(False):
        target = _resolve_connection(database_url, None, stack_name, via, ssl_root_cert, False)
        conn, where = connect(target.url, application_name="dbctl migrate resolve")
        with conn:
            migrate.resolve_rolled_back(conn, rolled_back)
    click.echo(f"marked {rolled_back} as rolled back on {where}; the next `dbctl migrate` applies it again")


@click.command("status")
@_options
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
        conn = _resolve_connection(database_url, credentials, stack_name, via, ssl_root_cert, False)
        report = deploy.status(
            conn.url, conn.verifiers, migrations_dir=migrations_dir, echo=_echo_step(as_json)
        )
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
