"""How many clients PgBouncer holds at once: 1,000 through one process, 2,000 through two on one port.

    .venv/bin/python bench/pgbouncer_clients.py [--rows 1:1000:1000,2:1000:2000,2:1100:2000]

Each row (processes : max_client_conn per process : clients) starts a PgBouncer of its own (the shared
renderer's config; with two processes so_reuseport and [peers]) in front of a throwaway PostgreSQL prepared
by `dbctl migrate`'s step, then opens every client at once as the app connects (TLS + SCRAM as spike_app,
psycopg async, at most --in-flight handshakes at a time), holds them all open, runs `SELECT 1` on each, and
closes them. It prints a table: clients connected and failed (with the first error), queries failed, how
many clients each process held (counted by the kernel: `ss -tnp` on the listen port, by pgbouncer pid, so no
admin connection takes a slot) against its max_client_conn, and the time to connect them all (a figure, not
a target). Raises `ulimit -n` toward the hard limit for the client sockets.

The kernel's so_reuseport hashing spreads new connections over the processes at random (per connection), so
2,000 clients on two processes are near 1,000 each but rarely exactly: a max_client_conn of exactly half
refuses the excess on the busier process. The default rows show both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg.conninfo import make_conninfo

from bench import measure
from dbctl.core import names
from dbctl.core.scram import SALT_BYTES, scram_verifier
from dbctl.pgbouncer.config import POOLED_ROLES, ClientTls, ServerTls
from dbctl.pgbouncer.process import PgBouncerServer
from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.postgres.osproc import free_port
from dbctl.schema import deploy, maintenance

DEFAULT_ROWS = "1:1000:1000,2:1000:2000,2:1100:2000"
_ROW = re.compile(r"(\d+):(\d+):(\d+)")
# `ss -Htnp state established`: "0 0 127.0.0.1:6543 127.0.0.1:51911 users:(("pgbouncer",pid=22015,fd=10))"
_SS_LINE = re.compile(r"^\s*\d+\s+\d+\s+\S+:(\d+)\s+\S+\s+users:\(.*?pid=(\d+)")


@dataclass(frozen=True)
class Row:
    processes: int
    max_client_conn: int
    clients: int


@dataclass(frozen=True)
class Outcome:
    row: Row
    connected: int
    failed: int
    first_error: str
    query_failures: int
    per_process: tuple[int, ...]  # clients each process held, by peer id
    connect_seconds: float


def parse_rows(text: str) -> list[Row]:
    """`"1:1000:1000,2:1000:2000"` -> rows of (processes, max_client_conn per process, clients)."""
    rows = []
    for part in text.split(","):
        match = _ROW.fullmatch(part.strip())
        if match is None or min(int(g) for g in match.groups()) < 1:
            raise argparse.ArgumentTypeError(
                f"row {part!r} is not PROCESSES:MAX_CLIENT_CONN:CLIENTS, each >= 1 (e.g. 2:1000:2000)"
            )
        rows.append(Row(*(int(g) for g in match.groups())))
    return rows


def clients_per_pid(ss_output: str, port: int, pids: Sequence[int]) -> list[int]:
    """How many established connections on local `port` each pid in `pids` holds, from `ss -Htnp` output."""
    counts = Counter(
        int(m[2]) for line in ss_output.splitlines() if (m := _SS_LINE.match(line)) and int(m[1]) == port
    )
    return [counts.get(pid, 0) for pid in pids]


def format_table(outcomes: Sequence[Outcome]) -> str:
    header = (
        f"{'processes':>9} {'max_client_conn':>15} {'clients':>7} {'connected':>9} {'failed':>6} "
        f"{'queries failed':>14} {'per process (max)':>22} {'connect s':>9}  first error"
    )
    lines = [header]
    for o in outcomes:
        held = " + ".join(str(n) for n in o.per_process)
        within = "ok" if all(n <= o.row.max_client_conn for n in o.per_process) else "OVER"
        lines.append(
            f"{o.row.processes:>9} {o.row.max_client_conn:>15} {o.row.clients:>7} {o.connected:>9} "
            f"{o.failed:>6} {o.query_failures:>14} {held + f' ({within})':>22} {o.connect_seconds:>9.1f}  "
            f"{o.first_error or '-'}"
        )
    return "\n".join(lines)


async def _hold(
    conninfo: str, clients: int, in_flight: int
) -> tuple[list[psycopg.AsyncConnection], list[str]]:
    gate = asyncio.Semaphore(in_flight)
    conns: list[psycopg.AsyncConnection] = []
    errors: list[str] = []

    async def one() -> None:
        async with gate:
            try:
                conns.append(await psycopg.AsyncConnection.connect(conninfo, autocommit=True))
            except psycopg.Error as e:
                errors.append(str(e).strip().splitlines()[-1][:120])

    await asyncio.gather(*(one() for _ in range(clients)))
    return conns, errors


async def _query_all(conns: Sequence[psycopg.AsyncConnection]) -> int:
    async def one(conn: psycopg.AsyncConnection) -> bool:
        try:
            await conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    return sum(not ok for ok in await asyncio.gather(*(one(c) for c in conns)))


def run_row(row: Row, cluster: Cluster, verifiers: dict[str, str], password: str, in_flight: int) -> Outcome:
    server = PgBouncerServer(Path(tempfile.mkdtemp(prefix="dbctl-bench-clients-")))
    port = free_port()
    config = server.config(
        primary_host=cluster.host,
        primary_port=cluster.port,
        listen_port=port,
        processes=row.processes,
        max_client_conn=row.max_client_conn,
        server_tls=ServerTls(sslmode="verify-full", ca_file=str(cluster.ca_file)),
        client_tls=ClientTls(
            sslmode="require", key_file=str(cluster.key_file), cert_file=str(cluster.cert_file)
        ),
    )
    conninfo = make_conninfo(
        host="127.0.0.1",
        port=str(port),
        user=names.login_users(names.APP_ROLE)[0],
        password=password,
        dbname=names.DATABASE_NAME,
        sslmode="verify-full",
        sslrootcert=str(cluster.ca_file),
        connect_timeout="60",
    )
    users = [names.login_users(role)[0] for role in POOLED_ROLES]
    server.start(config, {user: verifiers[user] for user in users})
    try:
        started = time.monotonic()
        conns, errors = asyncio.run(_hold(conninfo, row.clients, in_flight))
        connect_seconds = time.monotonic() - started
        ss = subprocess.run(
            ["ss", "-Htnp", "state", "established"], capture_output=True, text=True, check=True
        )
        per_process = tuple(clients_per_pid(ss.stdout, port, server.pids))

        async def finish() -> int:
            failed = await _query_all(conns)
            await asyncio.gather(*(c.close() for c in conns))
            return failed

        query_failures = asyncio.run(finish())
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
    return Outcome(
        row=row,
        connected=len(conns),
        failed=len(errors),
        first_error=errors[0] if errors else "",
        query_failures=query_failures,
        per_process=per_process,
        connect_seconds=connect_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=parse_rows, default=parse_rows(DEFAULT_ROWS), help=DEFAULT_ROWS)
    parser.add_argument("--in-flight", type=int, default=200, help="handshakes at a time (default 200)")
    args = parser.parse_args(argv)
    rows: list[Row] = args.rows
    limit = measure.raise_fd_limit(max(r.clients for r in rows) + 512)
    print(f"==> {os.cpu_count()} CPUs, RLIMIT_NOFILE {limit}; TLS + SCRAM per client", file=sys.stderr)
    passwords = {role: os.urandom(18).hex() for role in names.LOGIN_ROLES}
    # Keyed by each role's first login user (a pooled role's _a: dbctl.names.login_users), as the secrets are.
    verifiers = {
        names.login_users(role)[0]: scram_verifier(pw, os.urandom(SALT_BYTES))
        for role, pw in passwords.items()
    }
    outcomes = []
    with throwaway_cluster("dbctl-bench-clients-pg-", pgstattuple_schema=maintenance.SCHEMA) as cluster:
        deploy.run_migrate(cluster.admin_url(names.DATABASE_NAME), verifiers)
        for row in rows:
            print(f"==> {row.processes} process(es), {row.clients} clients ...", file=sys.stderr)
            outcomes.append(run_row(row, cluster, verifiers, passwords[names.APP_ROLE], args.in_flight))
    print(format_table(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
