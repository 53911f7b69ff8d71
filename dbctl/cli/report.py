"""`dbctl report`: options and output around dbctl/schema/commands.py's `report` (as spike_monitor)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dbctl.cli import targets
from dbctl.cli.errors import EXIT_ERROR, errors
from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.schema import commands, report, report_text


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


@click.command("report")
@click.option("--local", "use_local", is_flag=True, help="The local stack (dbctl local up).")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(__file__).resolve().parents[2],
    envvar="DBCTL_LOCAL_ROOT",
    hidden=True,
)
@targets.stack_option("A deployed Pulumi stack (with --via for the SSM tunnel).")
@targets.via_option("With --stack: the tunnel to the primary (SSM port-forward).")
@targets.ssl_root_cert_option("With --stack: RDS CA.")
@targets.database_url_option(
    "spike_monitor's URL, direct to PostgreSQL. Prefer the env var: a URL on the command line shows up in "
    "process lists.",
    envvar="MONITOR_DATABASE_URL",
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
        conninfo = targets.monitor_conninfo(database_url, stack_name, via, ssl_root_cert)
        pools: report.PoolsReader | None = None
        if use_local:
            conninfo, pools = _local_target(root)
        if not conninfo:
            raise DbctlError(
                "no database: pass --local, --stack NAME, or --database-url / MONITOR_DATABASE_URL"
            )
        where, result = commands.report(
            conninfo, pgbouncer_url=pgbouncer_url, pools=pools, top_n=top_n, note=_note
        )
    if as_json:
        click.echo(json.dumps(result, default=str))
    else:
        click.echo(f"report for {where}\n")
        click.echo(report_text.render(result), nl=False)
    # Each section reports its own error; only a report with nothing read fails (exit 2, as errors() would).
    if report.nothing_read(result):
        raise SystemExit(EXIT_ERROR)


def _note(line: str) -> None:
    click.echo(line, err=True)
