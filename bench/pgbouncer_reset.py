"""What PgBouncer's session reset costs the app's query shape: direct, DISCARD ALL, reset_session(), no reset.

    .venv/bin/python bench/pgbouncer_reset.py [--seconds 5] [--rounds 3] [--clients 20] [--quick]

bench/pgbouncer.py's stack and helpers (`dbctl local up --no-replica` in a temp dir, pgbench as spike_app over
TLS + SCRAM with verify-full, CPU from /proc around each run), four paths interleaved in one run: PostgreSQL
direct; the stack's PgBouncer as rendered (`server_reset_query = RESET_QUERY`, the call in its fail-closed
block); the same config with `DISCARD ALL`; and with no reset (`server_reset_query_always = 0`). The
workload is the Prisma-shaped transaction of issue 24: BEGIN, three reads by primary key, COMMIT, with named
prepared statements (`-M prepared`, what PgBouncer >= 1.21 keeps per server connection) and unnamed
(`-M extended`).
Per path: TPS, p50/p99, CPU s per 1,000 transactions (machine-wide, then pgbench / PgBouncer / PostgreSQL),
and PgBouncer's own `total_server_parse_count` per transaction (SHOW STATS around each run, after a warm-up
run per path; every pgbench run opens new clients, whose first statements a server connection may not have
yet, so a figure just above 0 is that). A separate
module from bench/pgbouncer.py only to keep each under ~400 lines. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg.conninfo import make_conninfo

from bench import measure
from bench.pgbouncer import (
    Bench,
    Route,
    Row,
    Run,
    Target,
    Workload,
    _at_least,
    _at_most,
    _ratio,
    alternate,
    bench_on_a_stack,
    extra_pgbouncer,
    format_rows,
    format_targets,
    load_average,
    machine,
    say,
)
from dbctl.core import names
from dbctl.local.stack import Stack
from dbctl.pgbouncer.process import PgBouncerServer
from dbctl.postgres.osproc import HOST
from dbctl.schema.session_reset import RESET_QUERY

PRISMA_SHAPED = """\\set a random(1, 100000 * :scale)
\\set b random(1, 100000 * :scale)
\\set c random(1, 100000 * :scale)
BEGIN;
SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid = :a;
SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid = :b;
SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid = :c;
COMMIT;
"""
# path label: PgBouncerConfig updates (None: direct; {}: the stack's own PgBouncer, as rendered)
PATHS: Mapping[str, Mapping[str, object] | None] = {
    "direct": None,
    "discard-all": {"server_reset_query": "DISCARD ALL"},
    "reset_session": {},
    "no-reset": {"server_reset_query_always": False},
}


def pgbouncer_totals(stack: Stack, port: int) -> dict[str, int]:
    """PgBouncer's SHOW STATS totals (total_xact_count, total_server_parse_count, ...) for the app's database,
    as spike_monitor (a stats user); tests/integration/app/test_prisma_statements.py reads them too."""
    monitor = stack.creds[names.MONITOR_ROLE]
    conninfo = make_conninfo(
        host=HOST,
        port=str(port),
        dbname="pgbouncer",
        user=monitor.username,
        password=monitor.password,
        sslmode="verify-full",
        sslrootcert=str(stack.authority.cert_file),
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute("SHOW STATS")
        columns = [c.name for c in cur.description or []]
        for row in cur.fetchall():
            if row[columns.index("database")] == names.DATABASE_NAME:
                return {c: int(str(v)) for c, v in zip(columns, row, strict=True) if c.startswith("total_")}
    raise SystemExit(f"PgBouncer on port {port}: SHOW STATS has no row for {names.DATABASE_NAME}")


def server_parses(stack: Stack, port: int) -> int:
    return pgbouncer_totals(stack, port)["total_server_parse_count"]


def reset_tables(bench: Bench, stack: Stack, args: argparse.Namespace) -> str:
    script = bench.scripts_dir / "prisma.sql"
    script.write_text(PRISMA_SHAPED)
    loads = {
        mode: Workload(f"prisma-3 {mode}", ("-M", mode, "-f", str(script)), args.clients)
        for mode in ("prepared", "extended")
    }
    stack_pid = int(PgBouncerServer(stack.pgbouncer_dir).pid_path.read_text().split()[0])
    rows: dict[tuple[str, str], Row] = {}
    parses: dict[tuple[str, str], list[float]] = {}
    with ExitStack() as servers:
        routes: list[Route] = []
        for label, updates in PATHS.items():
            if updates is None:
                routes.append(Route(label, stack.state.pg_port))
            elif not updates:
                routes.append(Route(label, stack.state.pgbouncer_port, stack_pid))
            else:
                server, port = servers.enter_context(extra_pgbouncer(stack, updates))
                assert server.process is not None
                routes.append(Route(label, port, server.process.pid))
        for route in routes:
            bench.calibrate(route)
        for workload in loads.values():
            for route in routes:  # warm-up: each path's server connections prepare the statements once
                bench.run(route, workload, 1, transactions=3)

            def one(i: int, path: Route, workload: Workload = workload) -> Run:
                say(f"{workload.name}: {path.label}, round {i + 1}/{args.rounds} ...")
                before = server_parses(stack, path.port) if path.pgbouncer_pid else 0
                run = bench.run(path, workload, args.seconds)
                if path.pgbouncer_pid and run.processed:
                    after = server_parses(stack, path.port)
                    parses.setdefault((workload.name, path.label), []).append(
                        (after - before) / run.processed
                    )
                return run

            for label, runs in alternate(args.rounds, routes, one).items():
                rows[(workload.name, label)] = Row(workload.name, label, workload.clients, tuple(runs))
    parse_lines = ["server parses per transaction (PgBouncer's SHOW STATS; median of the runs, then each):"]
    for (workload_name, label), values in parses.items():
        each = ", ".join(f"{v:.3f}" for v in values)
        parse_lines.append(f"  {workload_name:<20} {label:<14} {statistics.median(values):6.3f}   {each}")
    return "\n\n".join(
        [format_rows(list(rows.values())), "\n".join(parse_lines), format_targets(targets(rows, parses))]
    )


def targets(
    rows: Mapping[tuple[str, str], Row], parses: Mapping[tuple[str, str], list[float]]
) -> list[Target]:
    """Issue 24's targets, from this run."""
    prepared = "prisma-3 prepared"
    tps = {label: rows[(prepared, label)].tps for label in PATHS}
    vs_none = _ratio(tps["reset_session"], tps["no-reset"])
    vs_discard = _ratio(tps["reset_session"], tps["discard-all"])
    parsed = parses.get((prepared, "reset_session"))
    parse_rate = statistics.median(parsed) if parsed else None
    cpu = _ratio(rows[(prepared, "reset_session")].cpu_per_1000(), rows[(prepared, "direct")].cpu_per_1000())
    return [
        Target("prepared TPS: reset_session / no reset", vs_none, "x", ">= 0.9", _at_least(vs_none, 0.9)),
        Target(
            "prepared TPS: reset_session / DISCARD ALL", vs_discard, "x", ">= 1.2", _at_least(vs_discard, 1.2)
        ),
        Target("server parses per tx, reset_session", parse_rate, "", "0", _at_most(parse_rate, 0.0)),
        Target("CPU/1000 tx: reset_session / direct", cpu, "x", "<= 1.5", _at_most(cpu, 1.5)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=5, help="measured seconds per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per path (default 3)")
    # pgbench -M prepared prepares each client's statements with a blocking call: with more clients than
    # server connections (20 + reserve 5), a thread waits for a server connection that its own other clients
    # hold in open transactions, until idle_transaction_timeout (seen with 50 clients). So 20.
    parser.add_argument("--clients", type=int, default=20, help="steady pgbench clients (default 20)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s at scale 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.scale = 2, 2, 1
    if args.rounds < 1 or args.seconds < 1 or args.clients < 1:
        parser.error("--rounds, --seconds and --clients must be at least 1")
    fds = measure.raise_fd_limit(8192)
    started, started_at, load_before = time.monotonic(), time.gmtime(), load_average()
    with bench_on_a_stack(args.scale) as (bench, stack):
        body = reset_tables(bench, stack, args)
    print(f"machine: {machine(started_at)}; load average before/after: {load_before} / {load_average()}")
    print(
        f"pgbench: scale {args.scale}, {args.clients} clients, {args.rounds} alternating rounds of "
        f"{args.seconds} s per path (medians); sslmode=verify-full; RLIMIT_NOFILE {fds}; "
        f"whole run {time.monotonic() - started:.0f} s"
    )
    print(f"reset_session: server_reset_query = {RESET_QUERY}, server_reset_query_always = 1")
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
