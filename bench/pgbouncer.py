"""PgBouncer vs direct: pgbench against a local stack this script starts itself, then a table.

    .venv/bin/python bench/pgbouncer.py [--seconds 10] [--rounds 3] [--round-seconds 5] [--scale 10]

It brings up the same stack as `dbctl local up` (PostgreSQL + PgBouncer with the shared renderer's config,
migrations and roles) in a temp dir on free ports, so it never touches a developer's `.local/`, and tears it
down at the end. Choices (the table's header repeats the numbers):

- Tables: `pgbench -i` as spike_migrator acting as spike_owner (`-c role=spike_owner`), in the stack's own
  throwaway `spike_land` database: the tables then belong to spike_owner and the roles step's default
  privileges give spike_app exactly the DML it has on the app's tables. No superuser, no extra grants.
- Runs: as spike_app, the application's role, both direct and through PgBouncer's transaction pool. Its
  per-role connection limit (200) is not below what max_connections leaves to non-superusers, so direct at
  1,000 clients fails where production would: on max_connections.
- Steady connections (no `-C`): clients connect once, as an application's pool does. `-M extended`, the
  protocol Prisma speaks. TLS on both paths (sslmode=require), as the .env URLs have it; `-j` = CPU count.
  pgbench's -T clock includes connecting, so each row gets a connect allowance measured up front.
- The ratio's rows (50 clients, direct and PgBouncer) alternate over several short runs and report the
  median: these machines are shared, and load from elsewhere then hits both sides alike.
- Workloads: select-only (`-S`), and a small read/write mix: two custom scripts on pgbench's own tables,
  80 % one-row SELECT, 20 % a transaction that UPDATEs an account and INSERTs a history row.
- Failures: pgbench's "number of failed transactions"; when pgbench aborts because connections are refused
  (direct at 1,000: "remaining connection slots are reserved", i.e. max_connections), every client's work
  counts as failed and the row says why.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from dbctl import local, names
from dbctl.cluster import find_binary, free_port

# What Prisma sends: the extended protocol (with pgbouncer=true, unnamed statements only).
PROTOCOL = "extended"

READ_SCRIPT = (
    "\\set aid random(1, 100000 * :scale)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
)
WRITE_SCRIPT = """\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
  VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
"""


@dataclass(frozen=True)
class Target:
    label: str
    host: str
    port: int
    dbname: str
    user: str
    password: str


@dataclass(frozen=True)
class Result:
    workload: str
    path: str
    clients: int
    tps: float
    latency_ms: float | None
    processed: int
    failed: int
    connect_ms: float | None = None
    note: str = ""


_PATTERNS = {
    "processed": re.compile(r"number of transactions actually processed: (\d+)"),
    "failed": re.compile(r"number of failed transactions: (\d+)"),
    "latency": re.compile(r"latency average = ([\d.]+) ms"),
    "tps": re.compile(r"tps = ([\d.]+) \(without initial connection time\)"),
    "connect": re.compile(r"initial connection time = ([\d.]+) ms"),
}


def parse_pgbench(output: str) -> tuple[int, int, float | None, float, float | None]:
    """(processed, failed, average latency ms, tps, initial connection ms) from pgbench's summary."""

    def find(key: str) -> str | None:
        m = _PATTERNS[key].search(output)
        return m.group(1) if m else None

    processed = int(find("processed") or 0)
    failed = int(find("failed") or 0)
    latency = find("latency")
    connect = find("connect")
    tps = float(find("tps") or 0.0)
    return processed, failed, float(latency) if latency else None, tps, float(connect) if connect else None


def _abort_reason(stderr: str) -> str:
    for pattern, reason in (
        ("too many clients already", "max_connections reached"),
        ("remaining connection slots are reserved", "max_connections reached"),
        ("too many connections for role", "the role's connection limit reached"),
        ("no more connections allowed", "PgBouncer max_client_conn reached"),
    ):
        if pattern in stderr:
            return f"aborted: {reason} (FATAL: {pattern})"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"aborted: {lines[-1][:80]}" if lines else "aborted"


def run_pgbench(
    pgbench: Path,
    target: Target,
    *,
    workload: str,
    scripts: Sequence[str],
    clients: int,
    seconds: int,
    scale: int,
    connect_allowance: float = 0.0,
    transactions: int | None = None,
) -> Result:
    """One pgbench run; the password goes through PGPASSWORD, never argv.

    pgbench's -T clock includes connecting the clients (TLS + SCRAM each, one after another per thread), so
    -T is `seconds` plus `connect_allowance`; TPS is pgbench's own figure without the connection time."""
    threads = max(1, min(os.cpu_count() or 1, clients))
    duration = seconds + math.ceil(connect_allowance)
    conninfo = f"host={target.host} port={target.port} dbname={target.dbname} user={target.user}"
    length = ["-t", str(transactions)] if transactions else ["-T", str(duration)]
    args = [str(pgbench), "-n", "-M", PROTOCOL, "-c", str(clients), "-j", str(threads), *length]
    args += ["-s", str(scale), *scripts, conninfo]
    env = {**os.environ, "PGPASSWORD": target.password, "PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "60"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=duration + 300, check=False)
    processed, failed, latency, tps, connect_ms = parse_pgbench(proc.stdout)
    if proc.returncode != 0 and processed == 0:
        # pgbench gives up when a client can't connect: all of this row's clients failed.
        return Result(
            workload, target.label, clients, 0.0, None, 0, clients, None, _abort_reason(proc.stderr)
        )
    note = (
        "" if processed else f"no transaction within -T {duration} (connecting took {connect_ms or 0:.0f} ms)"
    )
    return Result(workload, target.label, clients, tps, latency, processed, failed, connect_ms, note)


def connect_seconds_per_client(pgbench: Path, target: Target, scale: int) -> float:
    """Wall time pgbench needs per client to connect (TLS + SCRAM): 50 clients, one transaction each."""
    result = run_pgbench(
        pgbench,
        target,
        workload="calibrate",
        scripts=["-S"],
        clients=50,
        seconds=0,
        scale=scale,
        transactions=1,
    )
    return (result.connect_ms or 1000.0) / 1000 / 50


def format_table(results: Sequence[Result]) -> str:
    columns = ("TPS", "avg ms", "failed", "connect s")
    header = (
        f"{'workload':<12} {'path':<10} {'clients':>7} " + " ".join(f"{c:>9}" for c in columns) + "  note"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        latency = f"{r.latency_ms:9.2f}" if r.latency_ms is not None else f"{'-':>9}"
        connect = f"{r.connect_ms / 1000:9.1f}" if r.connect_ms is not None else f"{'-':>9}"
        row = f"{r.workload:<12} {r.path:<10} {r.clients:>7} {r.tps:>9.0f} {latency} {r.failed:>9} {connect}"
        row += f"  {r.note}"
        lines.append(row.rstrip())
    for workload in dict.fromkeys(r.workload for r in results):
        at_50 = {r.path: r for r in results if r.workload == workload and r.clients == 50}
        if "direct" in at_50 and "pgbouncer" in at_50 and at_50["direct"].tps > 0:
            ratio = at_50["pgbouncer"].tps / at_50["direct"].tps
            lines.append(f"{workload}: PgBouncer/direct TPS at 50 clients = {ratio:.2f}")
    return "\n".join(lines)


def raise_fd_limit(wanted: int) -> int:
    """pgbench needs a socket per client (and PgBouncer, started from here, two per client): lift the soft
    RLIMIT_NOFILE toward the hard limit. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({model}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"


@contextmanager
def scratch_stack() -> Iterator[local.Stack]:
    """`dbctl local up` in a temp dir on free ports; torn down afterwards."""
    root = Path(tempfile.mkdtemp(prefix="dbctl-bench-"))
    root.chmod(0o755)  # as root the servers run as `postgres`, which must enter it
    stack = local.open_stack(local.Paths(root), free_port(), free_port())
    try:
        # Not durable (fsync off), as when the figures in docs/benchmarks.md were taken: the ratio is about
        # pooling, and fsync on a shared disk would only add noise to both sides.
        local.up(stack, say, durable=False)
        yield stack
    finally:
        local.down(stack, lambda m: None)
        shutil.rmtree(root, ignore_errors=True)


def prepare(stack: local.Stack, pgbench: Path, scale: int) -> None:
    """pgbench's tables, owned by spike_owner (so spike_app gets DML by default privileges)."""
    migrator = stack.creds[names.MIGRATOR_ROLE]
    env = {
        **os.environ,
        "PGPASSWORD": migrator.password,
        "PGSSLMODE": "require",
        "PGOPTIONS": f"-c role={names.OWNER_ROLE}",
    }
    conninfo = (
        f"host={local.HOST} port={stack.state.pg_port} dbname={names.DATABASE_NAME} user={migrator.username}"
    )
    print(
        f"==> pgbench -i -s {scale} as {names.MIGRATOR_ROLE} (role {names.OWNER_ROLE}) ...", file=sys.stderr
    )
    subprocess.run(
        [str(pgbench), "-i", "-q", "-s", str(scale), conninfo], env=env, check=True, capture_output=True
    )


def median_run(runs: Sequence[Result]) -> Result:
    """The run with the median TPS, its note saying how many alternating runs it is the median of."""
    ordered = sorted(runs, key=lambda r: r.tps)
    chosen = ordered[len(ordered) // 2]
    spread = ", ".join(f"{r.tps:.0f}" for r in runs)
    return replace(chosen, note=f"median of {len(runs)} alternating runs ({spread})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per row (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating direct/PgBouncer runs at 50 clients"
    )
    parser.add_argument("--round-seconds", type=int, default=5, help="measured seconds per round (default 5)")
    parser.add_argument(
        "--scale", type=int, default=10, help="pgbench scale factor (default 10: 1M accounts)"
    )
    args = parser.parse_args(argv)
    pgbench = find_binary("pgbench")
    fds = raise_fd_limit(8192)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dbctl-bench-scripts-") as scripts_dir:
        read = Path(scripts_dir) / "read.sql"
        write = Path(scripts_dir) / "write.sql"
        read.write_text(READ_SCRIPT)
        write.write_text(WRITE_SCRIPT)
        workloads = {"select-only": ["-S"], "read/write": ["-f", f"{read}@80", "-f", f"{write}@20"]}
        results: list[Result] = []
        with scratch_stack() as stack:
            prepare(stack, pgbench, args.scale)
            app = stack.creds[names.APP_ROLE]
            port = {"direct": stack.state.pg_port, "pgbouncer": stack.state.pgbouncer_port}
            direct, pooled = (
                Target(label, local.HOST, port[label], names.DATABASE_NAME, app.username, app.password)
                for label in ("direct", "pgbouncer")
            )
            per_client = {
                t.label: connect_seconds_per_client(pgbench, t, args.scale) for t in (direct, pooled)
            }
            say(f"connecting (TLS + SCRAM) takes {per_client} s per client, {os.cpu_count()} pgbench threads")

            def run(workload: str, target: Target, clients: int, seconds: int) -> Result:
                say(f"{workload}: {target.label} at {clients} clients ...")
                return run_pgbench(
                    pgbench,
                    target,
                    workload=workload,
                    scripts=workloads[workload],
                    clients=clients,
                    seconds=seconds,
                    scale=args.scale,
                    connect_allowance=1.5 * per_client[target.label] * clients + 1,
                )

            for workload in workloads:
                # The ratio's two rows alternate, so load from elsewhere on the machine hits both alike.
                pair: dict[str, list[Result]] = {"direct": [], "pgbouncer": []}
                for i in range(args.rounds):
                    for target in (direct, pooled) if i % 2 == 0 else (pooled, direct):
                        pair[target.label].append(run(workload, target, 50, args.round_seconds))
                results += [median_run(pair["direct"]), median_run(pair["pgbouncer"])]
                for target, clients in ((pooled, 500), (pooled, 1000), (direct, 1000)):
                    results.append(run(workload, target, clients, args.seconds))
            with psycopg.connect(stack.cluster.admin_conninfo(), autocommit=True) as conn:
                row = conn.execute("SHOW max_connections").fetchone()
                max_connections = row[0] if row else "?"
    bouncer = ".".join(map(str, local.pgbouncer_version()))
    print(f"machine: {machine()}; load average before/after: {LOAD_BEFORE} / {load_average()}")
    print(
        f"pgbench: scale {args.scale}; 50 clients: {args.rounds} alternating runs of {args.round_seconds} s, "
        f"other rows {args.seconds} s; steady connections; -M {PROTOCOL}; sslmode=require; "
        f"-j {os.cpu_count()}; RLIMIT_NOFILE {fds}"
    )
    print(
        f"PostgreSQL max_connections={max_connections}; PgBouncer {bouncer}, transaction pool, "
        f"default_pool_size 20 + reserve 5; whole run {time.monotonic() - started:.0f} s"
    )
    print(format_table(results))
    return 0


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


LOAD_BEFORE = load_average()


if __name__ == "__main__":
    raise SystemExit(main())
