"""PgBouncer vs direct, as the app's clients use it: pgbench on a local stack this script starts, then tables.

    .venv/bin/python bench/pgbouncer.py [--seconds 5] [--rounds 5] [--scale 10] [--quick] [--compare-settings]

It brings up the same stack as `dbctl local up` (PostgreSQL + PgBouncer on the shared renderer's config,
migrations and roles; no replica, whose WAL replay would only add noise) in a temp dir on free ports, and
tears it down at the end. Every run is pgbench as spike_app, the application's role, over TLS + SCRAM with
`sslmode=verify-full` against the stack's CA, as the .env URLs connect; `-M extended`, the protocol Prisma
speaks. The paths alternate over `--rounds` runs of `--seconds` each and the tables show medians: these
machines are shared, and load from elsewhere then hits every path alike. Nothing is asserted.

Rows (the issue's targets are in the last table):
- 1 client, `SELECT 1`, steady connection: what PgBouncer adds to one query (p50 from the log), with and
  without the reset.
- connect-per-transaction (`-C`, 20 clients, select-only): a serverless client's connect + TLS + SCRAM +
  one query + disconnect per request. `-j` = clients, so one client's blocking connect never delays another's
  transaction and the logged latency is the transaction's own; the connect is the `connect ms` column.
- 50 steady clients, select-only (`-S`) and read/write (80 % a one-row SELECT, 20 % UPDATE + INSERT in a
  transaction), as an application's pool connects: direct, PgBouncer as rendered, and PgBouncer without
  `server_reset_query_always` (the session reset after every transaction; how much of the gap it is).

Per run: TPS (pgbench's), p50/p99 from `--log` (every transaction's latency), and CPU seconds per 1,000
transactions from /proc around the run: the machine's (all CPU states except idle and iowait, whatever
runs there) and who paid: pgbench, PgBouncer, PostgreSQL (bench/measure.py).

`--compare-settings` instead prices PgBouncer settings against the rendered config: TLS choices on
connect-per-transaction (TLS 1.2 only, an RSA 2048 certificate, one named ECDH curve, and PostgreSQL's own
handshake at TLS 1.2 for the server leg) and CPU-per-query settings on 50 steady clients.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench import measure
from dbctl.core import names
from dbctl.local.bouncer import pgbouncer_config, pgbouncer_version, pooled_verifiers
from dbctl.local.lifecycle import throwaway_stack
from dbctl.local.stack import Stack
from dbctl.pgbouncer.config import PgBouncerConfig, render_ini
from dbctl.pgbouncer.process import PgBouncerServer
from dbctl.postgres.install import find_binary
from dbctl.postgres.osproc import HOST, free_port, service_owner
from dbctl.postgres.tls import CertificateAuthority, write_file

# What Prisma sends: the extended protocol.
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
SELECT_1 = "SELECT 1;\n"
CONNECT_CLIENTS = 20
STEADY_CLIENTS = 50


@dataclass(frozen=True)
class Workload:
    name: str
    scripts: tuple[str, ...]
    clients: int
    connect_each: bool = False  # pgbench -C: a new connection per transaction


@dataclass(frozen=True)
class Route:
    """One way to the database: a port, whose PgBouncer (if any) counts as the pooler's CPU, extra libpq
    environment (e.g. PGSSLMAXPROTOCOLVERSION) for the client."""

    label: str
    port: int
    pgbouncer_pid: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds spent during one run."""

    machine: float
    pgbench: float
    pgbouncer: float
    postgres: float


@dataclass(frozen=True)
class Run:
    tps: float
    processed: int
    failed: int
    avg_ms: float | None
    connect_ms: float | None
    p50_us: float | None
    p99_us: float | None
    cpu: Cpu
    error: str = ""

    def per_1000(self, seconds: float) -> float | None:
        return 1000 * seconds / self.processed if self.processed else None


_PATTERNS = {
    "processed": re.compile(r"number of transactions actually processed: (\d+)"),
    "failed": re.compile(r"number of failed transactions: (\d+)"),
    "latency": re.compile(r"latency average = ([\d.]+) ms"),
    # steady: "(without initial connection time)"; with -C: "(including reconnection times)"
    "tps": re.compile(r"tps = ([\d.]+) \((?:without initial connection time|including reconnection times)\)"),
    "connect": re.compile(r"(?:initial|average) connection time = ([\d.]+) ms"),
}


def parse_pgbench(output: str) -> tuple[int, int, float | None, float, float | None]:
    """(processed, failed, average latency ms, tps, connection ms) from pgbench's summary. The connection
    time is the initial one for steady clients, the average per connection under -C."""

    def find(key: str) -> str | None:
        m = _PATTERNS[key].search(output)
        return m.group(1) if m else None

    latency, connect = find("latency"), find("connect")
    return (
        int(find("processed") or 0),
        int(find("failed") or 0),
        float(latency) if latency else None,
        float(find("tps") or 0.0),
        float(connect) if connect else None,
    )


@dataclass
class Bench:
    """What every run needs: pgbench, the app's credential, the CA, whose CPU is PostgreSQL's."""

    pgbench: Path
    user: str  # the app role's active login user (spike_app_a or _b)
    password: str
    ca_file: Path
    postmaster_pid: int
    scale: int
    scripts_dir: Path
    # seconds one steady client takes to connect on each path (label), from calibrate()
    connect_seconds: dict[str, float] = field(default_factory=dict)

    def run(self, path: Route, workload: Workload, seconds: int, *, transactions: int | None = None) -> Run:
        """One pgbench run with CPU sampled around it; the password travels in PGPASSWORD, never argv."""
        clients = workload.clients
        threads = clients if workload.connect_each else max(1, min(os.cpu_count() or 1, clients))
        # pgbench's -T clock includes connecting steady clients (TLS + SCRAM each, one after another per
        # thread); TPS is its own figure without that time, so give the connecting its allowance.
        duration = seconds + (
            0
            if workload.connect_each
            else math.ceil(1.5 * self.connect_seconds.get(path.label, 0) * clients + 1)
        )
        length = ["-t", str(transactions)] if transactions else ["-T", str(duration)]
        conninfo = f"host={HOST} port={path.port} dbname={names.DATABASE_NAME} user={self.user}"
        env = {
            **os.environ,
            "PGPASSWORD": self.password,
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(self.ca_file),
            "PGCONNECT_TIMEOUT": "60",
            **path.env,
        }
        with tempfile.TemporaryDirectory(prefix="dbctl-bench-log-") as logs:
            args = [str(self.pgbench), "-n", "-M", PROTOCOL, "-c", str(clients), "-j", str(threads), *length]
            args += ["-C"] if workload.connect_each else []
            args += ["-s", str(self.scale), "--log", f"--log-prefix={logs}/tx", *workload.scripts, conninfo]
            before = self._sample(path)
            proc = subprocess.run(
                args, capture_output=True, text=True, env=env, timeout=duration + 300, check=False
            )
            cpu = self._cpu(path, before)
            latencies = measure.read_pgbench_logs(Path(logs))
        processed, failed, avg_ms, tps, connect_ms = parse_pgbench(proc.stdout)
        p50, p99 = measure.percentiles(latencies) if latencies else (None, None)
        error = ""
        if proc.returncode != 0 and not processed:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            error = f"pgbench failed: {lines[-1][:100] if lines else proc.returncode}"
        return Run(tps, processed, failed, avg_ms, connect_ms, p50, p99, cpu, error)

    def _sample(self, path: Route) -> tuple[int, float, int, int]:
        pgbouncer = measure.process_ticks(path.pgbouncer_pid) if path.pgbouncer_pid else None
        return (
            measure.machine_ticks().busy,
            measure.rusage_children_seconds(),
            pgbouncer.own if pgbouncer else 0,
            measure.tree_ticks(self.postmaster_pid),
        )

    def _cpu(self, path: Route, before: tuple[int, float, int, int]) -> Cpu:
        # rusage of waited-for children: pgbench only (the servers run on until the end of the benchmark).
        after, hz = self._sample(path), measure.CLOCK_TICKS
        return Cpu(
            machine=(after[0] - before[0]) / hz,
            pgbench=after[1] - before[1],
            pgbouncer=(after[2] - before[2]) / hz,
            postgres=(after[3] - before[3]) / hz,
        )

    def calibrate(self, path: Route) -> None:
        """How long 50 clients take to connect on this path (one transaction each): the -T allowance."""
        run = self.run(path, Workload("calibrate", ("-S",), STEADY_CLIENTS), 0, transactions=1)
        self.connect_seconds[path.label] = (run.connect_ms or 1000.0) / 1000 / STEADY_CLIENTS


# ---------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Row:
    workload: str
    path: str
    clients: int
    runs: tuple[Run, ...]

    def median(self, value: Callable[[Run], float | None]) -> float | None:
        values = [v for r in self.runs if (v := value(r)) is not None]
        return statistics.median(values) if values else None

    @property
    def tps(self) -> float:
        return self.median(lambda r: r.tps) or 0.0

    def cpu_per_1000(self, part: str = "machine") -> float | None:
        return self.median(lambda r: r.per_1000(getattr(r.cpu, part)))

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.runs)


def alternate(rounds: int, paths: Sequence[Route], run: Callable[[int, Route], Run]) -> dict[str, list[Run]]:
    """`rounds` runs per path, the order reversed every other round."""
    out: dict[str, list[Run]] = {p.label: [] for p in paths}
    for i in range(rounds):
        for path in paths if i % 2 == 0 else tuple(reversed(paths)):
            out[path.label].append(run(i, path))
    return out


def _num(value: float | None, fmt: str, width: int) -> str:
    return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"


def format_rows(rows: Sequence[Row]) -> str:
    header = (
        f"{'workload':<16} {'path':<20} {'clients':>7} {'TPS':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'connect ms':>10} {'failed':>6}  {'CPU s/1000 tx':>13}  {'pgbench':>7} {'pgbouncer':>9} "
        f"{'postgres':>8}  runs (TPS)"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        p50, p99 = r.median(lambda x: x.p50_us), r.median(lambda x: x.p99_us)
        cells = [
            f"{r.workload:<16} {r.path:<20} {r.clients:>7} {r.tps:8.0f}",
            _num(p50 / 1000 if p50 is not None else None, ".3f", 8),
            _num(p99 / 1000 if p99 is not None else None, ".3f", 8),
            _num(r.median(lambda x: x.connect_ms), ".1f", 10),
            f"{r.failed:>6} ",
            _num(r.cpu_per_1000(), ".3f", 13) + " ",
            _num(r.cpu_per_1000("pgbench"), ".3f", 7),
            _num(r.cpu_per_1000("pgbouncer"), ".3f", 9),
            _num(r.cpu_per_1000("postgres"), ".3f", 8) + " ",
            ", ".join(f"{x.tps:.0f}" for x in r.runs),
        ]
        errors = sorted({x.error for x in r.runs if x.error})
        lines.append(" ".join(cells) + (f"  {'; '.join(errors)}" if errors else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    label: str
    measured: float | None
    unit: str
    goal: str
    met: bool | None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(rows: Mapping[tuple[str, str], Row]) -> list[Target]:
    """The issue's targets from this run's rows."""
    out = []
    connect = _ratio(rows[("connect-per-tx", "pgbouncer")].tps, rows[("connect-per-tx", "direct")].tps)
    out.append(Target("connect-per-tx TPS, PgBouncer / direct", connect, "x", ">= 3", _at_least(connect, 3)))
    p50 = {p: rows[("1 client", p)].median(lambda r: r.p50_us) for p in ("direct", "pgbouncer")}
    added = p50["pgbouncer"] - p50["direct"] if p50["pgbouncer"] and p50["direct"] else None
    out.append(Target("added latency, 1 client, SELECT 1 (p50)", added, "us", "<= 50", _at_most(added, 50)))
    for workload in ("select-only", "read/write"):
        ratio = _ratio(rows[(workload, "pgbouncer")].tps, rows[(workload, "direct")].tps)
        out.append(
            Target(f"50 steady clients {workload}: TPS ratio", ratio, "", ">= 0.90", _at_least(ratio, 0.9))
        )
    for workload in ("select-only", "read/write", "connect-per-tx"):
        ratio = _ratio(
            rows[(workload, "pgbouncer")].cpu_per_1000(), rows[(workload, "direct")].cpu_per_1000()
        )
        out.append(
            Target(f"CPU/1000 tx {workload}: PgBouncer / direct", ratio, "x", "<= 1.3", _at_most(ratio, 1.3))
        )
    return out


def _at_least(value: float | None, goal: float) -> bool | None:
    return None if value is None else value >= goal


def _at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def format_targets(items: Sequence[Target]) -> str:
    header = f"{'target':<48} {'measured':>10} {'goal':>9}  met"
    lines = [header, "-" * len(header)]
    for t in items:
        measured = f"{t.measured:.2f}{t.unit}" if t.measured is not None else "-"
        met = "?" if t.met is None else ("met" if t.met else "NOT met")
        lines.append(f"{t.label:<48} {measured:>10} {t.goal + t.unit:>9}  {met}")
    return "\n".join(lines)


def who_pays(rows: Mapping[tuple[str, str], Row]) -> list[str]:
    """Per workload: the servers' CPU per 1,000 tx (pgbench excluded), PgBouncer path over direct; and how
    much of the TPS gap the session reset is (PgBouncer without it, measured in the same rounds)."""
    lines = []
    for workload in ("1 client", "connect-per-tx", "select-only", "read/write"):
        direct, pooled = rows[(workload, "direct")], rows[(workload, "pgbouncer")]
        servers = [
            (r.cpu_per_1000("pgbouncer") or 0) + (r.cpu_per_1000("postgres") or 0) for r in (direct, pooled)
        ]
        client = [r.cpu_per_1000("pgbench") or 0 for r in (direct, pooled)]
        if servers[0]:
            lines.append(
                f"{workload}: servers' CPU/1000 tx (PgBouncer + PostgreSQL) {servers[1]:.3f} s vs direct "
                f"{servers[0]:.3f} s ({servers[1] / servers[0]:.2f}x); pgbench's own {client[1]:.3f} vs "
                f"{client[0]:.3f} s"
            )
        no_reset = rows.get((workload, "pgbouncer-no-reset"))
        if no_reset and direct.tps > pooled.tps:
            share = (no_reset.tps - pooled.tps) / (direct.tps - pooled.tps)
            lines.append(
                f"{workload}: without the reset PgBouncer/direct TPS is {no_reset.tps / direct.tps:.2f} "
                f"(with it {pooled.tps / direct.tps:.2f}): the reset is {share:.0%} of the gap"
            )
    return lines


# ---------------------------------------------------------------- the stack and extra PgBouncers


def machine(started: time.struct_time) -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} vCPUs ({model}), started {time.strftime('%Y-%m-%d %H:%M UTC', started)}"


def prepare(stack: Stack, pgbench: Path, scale: int) -> None:
    """pgbench's tables, owned by spike_owner (so spike_app gets DML by default privileges)."""
    migrator = stack.creds[names.MIGRATOR_ROLE]
    env = {
        **os.environ,
        "PGPASSWORD": migrator.password,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(stack.authority.cert_file),
        "PGOPTIONS": f"-c role={names.OWNER_ROLE}",
    }
    conninfo = f"host={HOST} port={stack.state.pg_port} dbname={names.DATABASE_NAME} user={migrator.username}"
    say(f"pgbench -i -s {scale} as {names.MIGRATOR_ROLE} (role {names.OWNER_ROLE}) ...")
    subprocess.run(
        [str(pgbench), "-i", "-q", "-s", str(scale), conninfo], env=env, check=True, capture_output=True
    )


@contextmanager
def bench_on_a_stack(scale: int) -> Iterator[tuple[Bench, Stack]]:
    """A scratch stack with pgbench's tables at `scale`, and a Bench that runs pgbench as the app's user."""
    pgbench = find_binary("pgbench")
    # The stack is not durable (fsync off): the figures are about pooling, and fsync on a shared disk would
    # only add noise to both sides.
    with (
        tempfile.TemporaryDirectory(prefix="dbctl-bench-scripts-") as scripts,
        throwaway_stack("dbctl-bench-", echo=say) as stack,
    ):
        prepare(stack, pgbench, scale)
        postmaster = int((stack.cluster.data_dir / "postmaster.pid").read_text().split()[0])
        app = stack.creds[names.APP_ROLE]
        yield (
            Bench(
                pgbench,
                app.username,
                app.password,
                stack.authority.cert_file,
                postmaster,
                scale,
                Path(scripts),
            ),
            stack,
        )


class ExtraSettingsServer(PgBouncerServer):
    """A PgBouncer whose rendered pgbouncer.ini gets `extra` settings appended (the last section is
    [pgbouncer], and a later line wins): settings the renderer does not have, to price them."""

    def __init__(self, directory: Path, extra: Mapping[str, str]) -> None:
        super().__init__(directory)
        self.extra = dict(extra)

    def _write(self, config: PgBouncerConfig, verifiers: Mapping[str, str]) -> None:
        super()._write(config, verifiers)
        if self.extra:
            with self.ini_path.open("a") as f:
                f.write("".join(f"{key} = {value}\n" for key, value in self.extra.items()))


@contextmanager
def extra_pgbouncer(
    stack: Stack, updates: Mapping[str, object], extra: Mapping[str, str] | None = None
) -> Iterator[tuple[PgBouncerServer, int]]:
    """A second PgBouncer on the stack's PostgreSQL: the local stack's config with `updates` (validated
    again) and `extra` ini lines, on a free port. Yields (server, port)."""
    directory = Path(tempfile.mkdtemp(prefix="pgb-", dir=stack.paths.root))
    server = ExtraSettingsServer(directory, extra or {})
    base = pgbouncer_config(stack, server)
    port = free_port()
    config = PgBouncerConfig.model_validate({**base.model_dump(), "listen_port": port, **updates})
    server.start(config, pooled_verifiers(stack.creds))
    try:
        yield server, port
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def issue_rsa_certificate(authority: CertificateAuthority, directory: Path) -> tuple[Path, Path]:
    """An RSA 2048 server key and certificate from the stack's CA (same names and lifetime as dbctl.tls's
    ECDSA P-256 one), to price the key type. Returns (cert, key)."""
    ca_cert = x509.load_pem_x509_certificate(authority.cert_file.read_bytes())
    ca_key = serialization.load_pem_private_key(authority.key_file.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_file, key_file = directory / "rsa.crt", directory / "rsa.key"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    owner = service_owner()
    write_file(key_file, pem, 0o600, owner)
    write_file(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644, owner)
    return cert_file, key_file


# ---------------------------------------------------------------- the two modes


def workloads(scripts_dir: Path) -> dict[str, Workload]:
    read, write, one = (scripts_dir / n for n in ("read.sql", "write.sql", "select1.sql"))
    read.write_text(READ_SCRIPT)
    write.write_text(WRITE_SCRIPT)
    one.write_text(SELECT_1)
    return {
        "1 client": Workload("1 client", ("-f", str(one)), 1),
        "connect-per-tx": Workload("connect-per-tx", ("-S",), CONNECT_CLIENTS, connect_each=True),
        "select-only": Workload("select-only", ("-S",), STEADY_CLIENTS),
        "read/write": Workload("read/write", ("-f", f"{read}@80", "-f", f"{write}@20"), STEADY_CLIENTS),
    }


def main_tables(bench: Bench, stack: Stack, args: argparse.Namespace) -> str:
    loads = workloads(bench.scripts_dir)
    pgbouncer_pid = int(PgBouncerServer(stack.pgbouncer_dir).pid_path.read_text().split()[0])
    direct = Route("direct", stack.state.pg_port)
    pooled = Route("pgbouncer", stack.state.pgbouncer_port, pgbouncer_pid)
    rows: dict[tuple[str, str], Row] = {}
    with extra_pgbouncer(stack, {"server_reset_query_always": False}) as (server, port):
        assert server.process is not None
        no_reset = Route("pgbouncer-no-reset", port, server.process.pid)
        for path in (direct, pooled, no_reset):
            bench.calibrate(path)
        say(f"seconds to connect one steady client: {bench.connect_seconds}")
        plan: list[tuple[Workload, tuple[Route, ...]]] = [
            (loads["1 client"], (direct, pooled, no_reset)),
            (loads["connect-per-tx"], (direct, pooled)),
            (loads["select-only"], (direct, pooled, no_reset)),
            (loads["read/write"], (direct, pooled, no_reset)),
        ]
        for workload, paths in plan:

            def one(i: int, path: Route, workload: Workload = workload) -> Run:
                say(f"{workload.name}: {path.label}, round {i + 1}/{args.rounds} ...")
                return bench.run(path, workload, args.seconds)

            for label, runs in alternate(args.rounds, paths, one).items():
                rows[(workload.name, label)] = Row(workload.name, label, workload.clients, tuple(runs))
    return "\n\n".join(
        [format_rows(list(rows.values())), "\n".join(who_pays(rows)), format_targets(targets(rows))]
    )


# name: (workload, config updates, extra ini lines, client env)
Variant = tuple[str, Mapping[str, object], Mapping[str, str], Mapping[str, str]]


def compare_settings(bench: Bench, stack: Stack, args: argparse.Namespace) -> str:
    """Each variant is a fresh PgBouncer per run (the rendered config plus one change) on the same
    PostgreSQL, so no variant's idle server connections crowd max_connections; `as rendered` is one too."""
    loads = workloads(bench.scripts_dir)
    rsa_cert, rsa_key = issue_rsa_certificate(stack.authority, stack.pgbouncer_tls_dir)
    client_tls = pgbouncer_config(stack, PgBouncerServer(stack.pgbouncer_dir)).client_tls.model_dump()
    tls12 = {"client_tls": {**client_tls, "protocols": "tlsv1.2"}}
    variants: dict[str, Variant] = {
        "as rendered": ("connect-per-tx", {}, {}, {}),
        "client TLS 1.2 only": ("connect-per-tx", tls12, {}, {}),
        "RSA 2048 cert": (
            "connect-per-tx",
            {"client_tls": {**client_tls, "key_file": str(rsa_key), "cert_file": str(rsa_cert)}},
            {},
            {},
        ),
        "ecdhcurve prime256v1": (
            "connect-per-tx",
            {"client_tls": {**client_tls, "ecdhcurve": "prime256v1"}},
            {},
            {},
        ),
        "tcp_defer_accept 1": ("connect-per-tx", {"tcp_defer_accept": True}, {}, {}),
        "direct": ("connect-per-tx", {}, {}, {}),
        "direct TLS 1.2": ("connect-per-tx", {}, {}, {"PGSSLMAXPROTOCOLVERSION": "TLSv1.2"}),
        "steady as rendered": ("select-only", {}, {}, {}),
        "pkt_buf 16384": ("select-only", {}, {"pkt_buf": "16384"}, {}),
        "sbuf_loopcnt 0": ("select-only", {}, {"sbuf_loopcnt": "0"}, {}),
        "tcp_keepalive 0": ("select-only", {}, {"tcp_keepalive": "0"}, {}),
        "tcp_user_timeout 10000": ("select-only", {}, {"tcp_user_timeout": "10000"}, {}),
        "max_prepared_statements 0": ("select-only", {"max_prepared_statements": 0}, {}, {}),
    }
    say("rendered client TLS: " + ", ".join(f"{k}={v}" for k, v in client_tls.items() if "file" not in k))
    bench.calibrate(Route("direct", stack.state.pg_port))
    bench.connect_seconds["pgbouncer"] = bench.connect_seconds["direct"]
    rows: list[Row] = []
    by_workload: dict[str, list[str]] = {}
    for name, (variant_workload, _, _, _) in variants.items():
        by_workload.setdefault(variant_workload, []).append(name)
    for workload_name, names_ in by_workload.items():
        workload = loads[workload_name]
        paths = [Route(name, 0) for name in names_]

        def one(i: int, path: Route, workload: Workload = workload) -> Run:
            _, updates, extra, env = variants[path.label]
            say(f"{workload.name}: {path.label}, round {i + 1}/{args.rounds} ...")
            if path.label.startswith("direct"):
                return bench.run(Route("direct", stack.state.pg_port, None, env), workload, args.seconds)
            with extra_pgbouncer(stack, updates, extra) as (server, port):
                assert server.process is not None
                return bench.run(Route("pgbouncer", port, server.process.pid, env), workload, args.seconds)

        for label, runs in alternate(args.rounds, paths, one).items():
            rows.append(Row(workload.name, label, workload.clients, tuple(runs)))
    lines = [format_rows(rows), ""]
    for workload_name, names_ in by_workload.items():
        base = next(r for r in rows if r.path == names_[0])
        for r in rows:
            if r.workload == workload_name and r is not base:
                cpu = _ratio(r.cpu_per_1000("pgbouncer"), base.cpu_per_1000("pgbouncer"))
                lines.append(
                    f"{workload_name}: {r.path} vs {base.path}: TPS x{r.tps / base.tps:.2f}"
                    + (f", PgBouncer CPU/1000 tx x{cpu:.2f}" if cpu is not None else "")
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=5, help="measured seconds per run (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs per path (default 5)")
    parser.add_argument(
        "--scale", type=int, default=10, help="pgbench scale factor (default 10: 1M accounts)"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s: about a minute")
    parser.add_argument(
        "--compare-settings", action="store_true", help="price TLS and CPU settings instead of the targets"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.scale = 2, 2, 1
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    fds = measure.raise_fd_limit(8192)
    started, started_at, load_before = time.monotonic(), time.gmtime(), load_average()
    with bench_on_a_stack(args.scale) as (bench, stack):
        body = (compare_settings if args.compare_settings else main_tables)(bench, stack, args)
        config = render_ini(pgbouncer_config(stack, PgBouncerServer(stack.pgbouncer_dir)))
    bouncer = ".".join(map(str, pgbouncer_version()))
    tls = ", ".join(
        line
        for line in config.splitlines()
        if line.startswith(("client_tls_p", "client_tls_e", "server_tls_p"))
    )
    print(f"machine: {machine(started_at)}; load average before/after: {load_before} / {load_average()}")
    print(
        f"pgbench: scale {args.scale}, {args.rounds} alternating rounds of {args.seconds} s per path "
        "(medians); "
        f"-M {PROTOCOL}; sslmode=verify-full (the stack's CA); RLIMIT_NOFILE {fds}"
    )
    print(
        f"PgBouncer {bouncer}, transaction pool, default_pool_size 20 + reserve 5, {tls}; "
        f"whole run {time.monotonic() - started:.0f} s"
    )
    print("CPU s/1000 tx: machine-wide (/proc/stat, all states but idle and iowait); then who paid")
    print(body)
    return 0


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
