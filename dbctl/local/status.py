"""`dbctl local status` as data: what runs where, replication, migrations and PgBouncer's pools.

`collect(stack)` reads the servers (each reading that fails is an `Unknown` with its reason in one line,
and the others still report); `Status.healthy` and `lines(status)` are pure, so they are tested without
servers.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg

from dbctl.core.errors import DbctlError, one_line
from dbctl.local import replica as local_replica
from dbctl.local.bouncer import pgbouncer_binary, pgbouncer_running, show_pools
from dbctl.local.lifecycle import UNSAFE_NOTE
from dbctl.local.migrations import migration_status
from dbctl.local.stack import Stack, no_replica_reason
from dbctl.postgres.osproc import HOST

T = TypeVar("T")


@dataclass(frozen=True)
class Unknown:
    """A reading that failed: why, in one line."""

    reason: str

    def __str__(self) -> str:
        return f"unknown: {self.reason}"


def attempt(read: Callable[[], T]) -> T | Unknown:
    """read(), or Unknown(<the error in one line>) when it fails with a DbctlError or a database error."""
    try:
        return read()
    except (DbctlError, psycopg.Error) as e:
        return Unknown(one_line(e))


@dataclass(frozen=True)
class Check:
    """A reading with a verdict: ok, and the line that says why."""

    ok: bool
    line: str


@dataclass(frozen=True)
class Server:
    running: bool
    port: int
    directory: Path
    binary: str | Unknown  # which binary and version serve (or would serve) it


@dataclass(frozen=True)
class Replica:
    made: bool  # False: a stack from before the replica (`up` makes it)
    running: bool
    port: int
    directory: Path
    replication: Check | Unknown | None  # streaming?; None: not asked (the replica or the primary is stopped)


@dataclass(frozen=True)
class Status:
    postgres: Server
    pgbouncer: Server
    replica: Replica | None  # None: the stack has none (--no-replica, or a PostgreSQL without TLS)
    no_tls_reason: str | None  # None: PostgreSQL has TLS; else why there is no TLS, hence no replica
    postgres_major: int
    ca_file: Path
    durable: bool | None  # None: not asked (PostgreSQL is stopped)
    migrations: Check | Unknown | None  # None: not asked (PostgreSQL is stopped)
    pools: (
        list[tuple[str, ...]] | Unknown | None
    )  # SHOW POOLS, a header row first; None: PgBouncer is stopped

    @property
    def healthy(self) -> bool:
        """All up and up to date: both servers (and the replica, streaming) run, the migrations and roles
        are current, and PgBouncer's pools can be read."""
        ok = self.postgres.running and self.pgbouncer.running
        if self.replica is not None:
            ok &= self.replica.running
            if self.replica.replication is not None:
                ok &= _passed(self.replica.replication)
        if self.migrations is not None:
            ok &= _passed(self.migrations)
        return ok and not isinstance(self.pools, Unknown)


def _passed(check: Check | Unknown) -> bool:
    return isinstance(check, Check) and check.ok


def collect(stack: Stack) -> Status:
    """Read the stack's servers. Only a reading that needs a connection can be Unknown."""
    cluster = stack.cluster
    pg_running = cluster.is_running()
    bouncer_running = pgbouncer_running(stack)
    replica: Replica | None = None
    if stack.state.replica:
        standby = stack.replica
        replica_running = standby.is_running()
        replication: Check | Unknown | None = None
        if replica_running and pg_running:
            replication = attempt(lambda: Check(*local_replica.status(cluster, standby)))
        replica = Replica(
            made=(standby.data_dir / "PG_VERSION").exists(),
            running=replica_running,
            port=standby.port,
            directory=standby.base_dir,
            replication=replication,
        )
    return Status(
        postgres=Server(
            pg_running,
            stack.state.pg_port,
            cluster.base_dir,
            f"{cluster.install.describe()} ({cluster.install.bindir})",
        ),
        pgbouncer=Server(
            bouncer_running,
            stack.state.pgbouncer_port,
            stack.pgbouncer_dir,
            attempt(lambda: pgbouncer_binary(stack)),
        ),
        replica=replica,
        no_tls_reason=None if cluster.install.tls else no_replica_reason(cluster),
        postgres_major=cluster.install.major,
        ca_file=stack.authority.cert_file,
        durable=cluster.is_durable() if pg_running else None,
        migrations=attempt(lambda: Check(*migration_status(stack))) if pg_running else None,
        pools=attempt(lambda: show_pools(stack)) if bouncer_running else None,
    )


# ---------------------------------------------------------------- as text


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _line(reading: Check | Unknown) -> str:
    return reading.line if isinstance(reading, Check) else str(reading)


def lines(status: Status) -> list[str]:
    """`dbctl local status`'s output, one string per line."""
    out: list[str] = []
    for name, server in (("PostgreSQL", status.postgres), ("PgBouncer ", status.pgbouncer)):
        where = f"running on {HOST}:{server.port}" if server.running else f"stopped (port {server.port})"
        binary = server.binary if isinstance(server.binary, str) else f"{name.strip()} {server.binary}"
        out += [f"{name}  {where}  [{server.directory}]", f"            {binary}"]
    replica = status.replica
    if replica is not None:
        where = f"running on {HOST}:{replica.port}" if replica.running else f"stopped (port {replica.port})"
        if not replica.made:
            where = "not made yet (a stack from before the replica): `dbctl local up` makes it"
        out.append(f"Replica     {where}  [{replica.directory}]")
        if replica.replication is not None:
            out.append(f"replication {_line(replica.replication)}")
    elif status.no_tls_reason is not None:
        out.append(f"Replica     none: {status.no_tls_reason}; the read pool uses the primary")
    else:
        out.append("Replica     none (--no-replica): the read pool uses the primary")
    out.append(
        f"TLS         CA {status.ca_file} (every URL's sslrootcert)"
        if status.no_tls_reason is None
        else f"TLS         CA {status.ca_file} (the pooled URLs' sslrootcert; the direct URLs say "
        f"sslmode=disable: this PostgreSQL {status.postgres_major} has no TLS)"
    )
    if status.durable is not None:
        out.append(
            "durability  fsync, synchronous_commit, full_page_writes on"
            if status.durable
            else f"durability  {UNSAFE_NOTE}"
        )
    if status.migrations is not None:
        out.append(f"migrations  {_line(status.migrations)}")
    if isinstance(status.pools, Unknown):
        out.append(f"pools       {status.pools}")
    elif status.pools is not None:
        out += ["pools (SHOW POOLS):", *textwrap.indent(_table(status.pools), "  ").splitlines()]
    return out
