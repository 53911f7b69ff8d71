"""`dbctl report`: click wiring around dbctl.report (connect as spike_monitor, collect, print)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from dbctl.cli.errors import errors
from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.schema import report
from dbctl.schema.connection import connect


def _local_target(root: Path) -> tuple[str, report.PoolsReader]:
    """The local stack's spike_monitor: direct to its PostgreSQL, and SHOW POOLS through dbctl.local."""
    from dbctl.local.bouncer import show_pools
    from dbctl.local.stack import existing_stack
    from dbctl.local.state import Paths

    stack = existing_stack(Paths(root.resolve()))
    monitor = stack.creds[names.MONITOR_ROLE]

    def pools() -> list[report.Row]:
        header, *rows = show_pools(stack)
        return [dict(zip(header, row, strict=True)) for row in rows]

    return stack.cluster.conninfo(monitor.username, monitor.password), pools


def _stack_url(stack_name: str, via: str | None, ssl_root_cert: str | None) -> str:
    """spike_monitor's URL from its own secret, the way `migrate --stack` builds the master's."""
    import boto3

    from dbctl.aws import stack

    target = stack.parse_outputs(stack_name, stack.read_outputs(stack_name))
    client = boto3.client("secretsmanager", region_name=target.region or None)
    monitor = dataclasses.replace(target, master_secret_arn=target.role_secret_arns[names.MONITOR_ROLE])
    return stack.admin_url(client, monitor, via=via, ssl_root_cert=ssl_root_cert)


@click.command("report")
@click.option("--local", "use_local", is_flag=True, help="The local stack (dbctl local up).")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(__file__).resolve().parents[2],
    envvar="DBCTL_LOCAL_ROOT",
    hidden=True,
)
@click.option("--stack", "stack_name", help="A deployed Pulumi stack (with --via for the SSM tunnel).")
@click.option(
    "--via", metavar="HOST:PORT", help="With --stack: the tunnel to the primary (SSM port-forward)."
)
@click.option("--ssl-root-cert", type=click.Path(exists=True, dir_okay=False), help="With --stack: RDS CA.")
@click.option(
    "--database-url",
    envvar="MONITOR_DATABASE_URL",
    show_envvar=True,
    help="spike_monitor's URL, direct to PostgreSQL. Prefer the env var: a URL on the command line shows "
    "up in process lists.",
)
@click.option(
    "--pgbouncer-url",
    envvar="MONITOR_PGBOUNCER_URL",
    show_envvar=True,
    help="PgBouncer's admin console as spike_monitor (dbname pgbouncer), for the pgbouncer_pools section.",
)
@click.option("--top", "top_n", type=click.IntRange(1, 1000), default=report.DEFAULT_TOP_N, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object, one key per section.")
def report_command(
    use_local: bool,
    root: Path,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
    database_url: str | None,
    pgbouncer_url: str | None,
    top_n: int,
    as_json: bool,
) -> None:
    """The seed's monitoring queries: connections, slow queries, sizes, indexes, bloat, replication, pools,
    maintenance jobs. Read-only, as spike_monitor; query texts never show the values they ran with."""
    with errors(as_json):
        chosen = [flag for flag, on in (("--local", use_local), ("--stack", bool(stack_name))) if on]
        if len(chosen) > 1 or (chosen and database_url):
            raise DbctlError("pass one of --local, --stack NAME or --database-url / MONITOR_DATABASE_URL")
        if (via or ssl_root_cert) and not stack_name:
            raise DbctlError("--via and --ssl-root-cert go with --stack; put them in the URL otherwise")
        pools: report.PoolsReader | None = None
        if pgbouncer_url:
            url = pgbouncer_url
            pools = lambda: report.show_pools(url)  # noqa: E731
        if use_local:
            conninfo, local_pools = _local_target(root)
            pools = pools or local_pools
        elif stack_name:
            conninfo = _stack_url(stack_name, via, ssl_root_cert)
        elif database_url:
            conninfo = database_url
        else:
            raise DbctlError(
                "no database: pass --local, --stack NAME, or --database-url / MONITOR_DATABASE_URL"
            )
        conn, target = connect(conninfo, application_name="dbctl report")
        with conn:
            if target.user and names.role_of_user(target.user) != names.MONITOR_ROLE:
                click.echo(
                    f"note: connected as"
                    f" {target.user}, not {names.MONITOR_ROLE}: other roles' rows may be hidden",
                    err=True,
                )
            result = report.collect(conn, pools=pools, top_n=top_n)
    if as_json:
        click.echo(json.dumps(result, default=str))
    else:
        click.echo(f"report for {target}\n")
        click.echo(report.render(result), nl=False)
