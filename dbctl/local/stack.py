"""The local stack of one checkout: where its servers live, its ports, and the `Stack` that ties its files
(dbctl.local.state) to its two servers (a dbctl.postgres Cluster and its replica; PgBouncer is
dbctl.local.bouncer's).

As root, the servers run as the OS user `postgres`; when it can't enter the checkout, postgres/ and
pgbouncer/ go to /var/lib/postgresql/dbctl-local/<hash of the root>/ instead (see `server_dir`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dbctl.core import names
from dbctl.local.state import (
    Credential,
    LocalError,
    Paths,
    State,
    load_credentials,
    load_or_create_credentials,
)
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.install import find_install
from dbctl.postgres.osproc import HOST, SERVICE_OS_USER, port_is_free
from dbctl.postgres.spec import BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER
from dbctl.postgres.tls import CertificateAuthority

Echo = Callable[[str], None]


# ---------------------------------------------------------------- ports


def require_free_port(port: int, flag: str, what: str) -> None:
    if not port_is_free(port):
        raise LocalError(
            f"port {port} on {HOST} is already in use (wanted for {what}); "
            f"pick another with {flag} <port>, e.g. {flag} {port + 1}"
        )


# ---------------------------------------------------------------- where the servers live


def _reachable_by_service_user(path: Path) -> bool:
    """As root the servers run as the OS user `postgres`, which must be able to traverse every parent."""
    return all(parent.stat().st_mode & 0o001 for parent in path.resolve().parents if parent.exists())


def server_dir(paths: Paths) -> Path:
    """`.local/`, unless we are root and `postgres` can't reach it (a checkout under a 0700 dir such as
    `mktemp -d` or /root): then a per-checkout dir in the `postgres` user's home (/var/lib/postgresql),
    which it owns and nobody else can write to."""
    if os.geteuid() != 0 or _reachable_by_service_user(paths.state_dir):
        return paths.state_dir
    try:
        home = Path(pwd.getpwnam(SERVICE_OS_USER).pw_dir)
    except KeyError:
        return paths.state_dir  # dbctl.postgres.cluster then says to install postgresql
    digest = hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:12]
    return home / "dbctl-local" / digest


# ---------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The local stack of one checkout: its paths, ports, credentials and the two servers."""

    paths: Paths
    state: State
    creds: dict[str, Credential]

    @property
    def cluster(self) -> Cluster:
        return Cluster(
            base_dir=server_dir(self.paths) / "postgres",
            port=self.state.pg_port,
            admin_password=self.creds[DEFAULT_ADMIN_USER].password,
            superuser_password=self.creds[BOOTSTRAP_SUPERUSER].password,
            ca_dir=self.paths.ca_dir,
            install=find_install(self.state.postgres_major),
        )

    @property
    def replica(self) -> Cluster:
        """The hot standby (dbctl.local.replica): the primary's roles and passwords, its own port and cert."""
        return dataclasses.replace(
            self.cluster, base_dir=server_dir(self.paths) / "replica", port=self.state.effective_replica_port
        )

    @property
    def authority(self) -> CertificateAuthority:
        return CertificateAuthority(self.paths.ca_dir)

    @property
    def pgbouncer_dir(self) -> Path:
        return server_dir(self.paths) / "pgbouncer"

    @property
    def pgbouncer_tls_dir(self) -> Path:
        """PgBouncer's key and certificate, and a copy of the CA certificate it verifies PostgreSQL with
        (the service user may not be able to read .local/)."""
        return self.pgbouncer_dir / "tls"


def resolve_state(
    paths: Paths,
    pg_port: int | None,
    pgbouncer_port: int | None,
    postgres_major: int | None = None,
    replica: bool | None = None,
    replica_port: int | None = None,
) -> State:
    """Ports, major and the replica: the flags, else what this stack was created with, else the defaults.

    An existing cluster keeps the port it was initialised with (it is in its postgresql.conf), and its major
    (its data directory is that major's); so does an existing replica its port."""
    saved = State.load(paths)
    if saved is not None and postgres_major is not None and postgres_major != _major(saved):
        raise LocalError(
            f"this stack's PostgreSQL is {_major(saved)}; run `dbctl local up` without --postgres-major, or "
            f"recreate it (deletes its data) with `dbctl local reset --yes --postgres-major {postgres_major}`"
        )
    replica_exists = (server_dir(paths) / "replica" / "data" / "PG_VERSION").exists()
    if (
        saved is not None
        and replica_exists
        and replica is not False
        and replica_port is not None
        and replica_port != saved.effective_replica_port
    ):
        raise LocalError(
            f"this stack's replica was created on port {saved.effective_replica_port}; run `dbctl local up` "
            f"without --replica-port, or rebuild the replica there: `dbctl local up --no-replica`, then "
            f"`dbctl local up --replica-port {replica_port}`"
        )
    if saved is not None and pg_port is not None and pg_port != saved.pg_port:
        raise LocalError(
            f"this stack's PostgreSQL was created on port {saved.pg_port}; run `dbctl local up` without "
            f"--pg-port (or with --pg-port {saved.pg_port}), or recreate it (deletes its data) with "
            f"`dbctl local reset --yes --pg-port {pg_port}`"
        )
    return State(
        pg_port=pg_port or (saved.pg_port if saved else names.POSTGRES_PORT),
        pgbouncer_port=pgbouncer_port or (saved.pgbouncer_port if saved else names.PGBOUNCER_PORT),
        postgres_major=postgres_major or (saved.postgres_major if saved else None),
        replica=replica if replica is not None else (saved.replica if saved else True),
        # A saved stack's pg_port is fixed (checked above), so its replica port stays too.
        replica_port=replica_port or (saved.replica_port if saved else 0),
    )


def _major(state: State) -> int:
    return state.postgres_major or find_install(None).major


def _cluster_exists(paths: Paths) -> bool:
    return (server_dir(paths) / "postgres" / "data" / "PG_VERSION").exists()


def open_stack(
    paths: Paths,
    pg_port: int | None = None,
    pgbouncer_port: int | None = None,
    postgres_major: int | None = None,
    *,
    replica: bool | None = None,
    replica_port: int | None = None,
) -> Stack:
    """The stack to bring up: credentials generated only when there is neither a file nor a cluster."""
    state = resolve_state(paths, pg_port, pgbouncer_port, postgres_major, replica, replica_port)
    return Stack(paths, state, load_or_create_credentials(paths, _cluster_exists(paths)))


def existing_stack(paths: Paths) -> Stack:
    """The stack `up` created; a clear error when there is none. Reads only: never writes a file."""
    state = State.load(paths)
    creds = load_credentials(paths)
    if state is None or creds is None:
        raise LocalError(f"no local stack in {paths.state_dir}; create it with `dbctl local up`")
    return Stack(paths, state, creds)


def running_stack(paths: Paths) -> Stack:
    """The stack `up` created, with its PostgreSQL running (backup, restore test, rotation need it)."""
    stack = existing_stack(paths)
    if not stack.cluster.is_running():
        raise LocalError("the local stack's PostgreSQL is not running; start it with `dbctl local up`")
    return stack


def no_replica_reason(cluster: Cluster) -> str:
    """Why a stack on this install gets no replica: the replica streams from the primary over TLS
    (hostssl, verify-full, as on RDS), and this install was built without it."""
    return (
        f"PostgreSQL {cluster.install.major} ({cluster.install.source}) has no TLS (built without OpenSSL), "
        "and the replica streams only over TLS"
    )
