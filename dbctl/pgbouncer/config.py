"""Render `pgbouncer.ini` and `userlist.txt` from typed settings: pure, no I/O.

One renderer for both places PgBouncer runs: the AWS hosts' user data and the local stack. The
settings are a frozen pydantic model, so a bad value fails with the field's name before any file is
written. The output is version-aware: a setting is emitted only when the target PgBouncer knows it
(PgBouncer refuses to start on an unknown key), and every emitted setting carries a one-line reason
on the line above it (PgBouncer reads `;` as a comment only at the start of a line).

`userlist.txt` holds SCRAM verifiers only. The plaintext passwords stay with the application; with
the same verifier on the server (`ALTER ROLE ... PASSWORD '<verifier>'`), PgBouncer logs in to
PostgreSQL with the keys the client's own SCRAM exchange proved, so it never needs a password.
"""

import re
from collections.abc import Mapping
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dbctl.core.errors import DbctlError
from dbctl.core.names import (
    APP_ROLE,
    DATABASE_NAME,
    MONITOR_ROLE,
    PGBOUNCER_PORT,
    POSTGRES_PORT,
    READ_POOL_DATABASE,
    READONLY_ROLE,
    login_users,
)
from dbctl.core.scram import is_scram_verifier
from dbctl.schema.session_reset import RESET_QUERY

Version = tuple[int, int]

# The oldest PgBouncer we render for and test against: Debian bookworm's package.
MIN_VERSION: Final[Version] = (1, 18)
# Protocol-level named prepared statements in transaction mode arrived in 1.21.
PREPARED_STATEMENTS_SINCE: Final[Version] = (1, 21)
# Settings that exist only from a given version on; everything else we emit is in 1.18.
SETTING_SINCE: Final[Mapping[str, Version]] = {"max_prepared_statements": PREPARED_STATEMENTS_SINCE}
# A [databases] entry's `load_balance_hosts` (how a comma-separated host list is used) arrived in 1.24.0;
# the host list itself in 1.17, always round-robin before 1.24 (PgBouncer's NEWS.md and doc/config.md).
LOAD_BALANCE_HOSTS_SINCE: Final[Version] = (1, 24)
# Before 1.25.0, server_tls_sslmode=verify-full checks the certificate against the entry's whole `host`
# string ("a,b"), so every TLS handshake over a host list fails (pgbouncer#1300, fixed by #1303 in 1.25.0;
# seen here with 1.24.1: "name `127.0.0.1,127.0.0.2' not present in server certificate").
HOST_LIST_VERIFY_FULL_SINCE: Final[Version] = (1, 25)
# Several processes on one port (so_reuseport) need `peer_id` and `[peers]` (1.19.0, pgbouncer#666), or a
# cancel request that the kernel hands to another process than the one owning the query is lost.
PEERS_SINCE: Final[Version] = (1, 19)
# Written in per-process paths (pidfile, logfile, unix_socket_dir) where the process's peer id goes.
PEER_ID_PLACEHOLDER: Final = "{peer_id}"
# More than any Graviton instance type's vCPUs (64); PgBouncer allows peer ids up to 16383.
MAX_PROCESSES: Final = 128
# A Unix socket's path (dir + "/.s.PGSQL.<port>") must fit in sockaddr_un's 108 bytes, NUL included.
_SOCKET_PATH_MAX = 107
_SOCKET_DIR = re.compile(r"^/[A-Za-z0-9._/{}-]+$")

# The login roles that connect through PgBouncer; the migrator goes direct to the primary.
POOLED_ROLES: Final = (APP_ROLE, READONLY_ROLE, MONITOR_ROLE)

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
# client_tls_protocols / server_tls_protocols: a list of tlsv1.0..tlsv1.3, or `secure` (1.2 and 1.3) or `all`
# (PgBouncer's doc/config.md; the default is secure).
TlsProtocols = Annotated[str, Field(pattern=r"^(secure|all|tlsv1\.[0-3](,tlsv1\.[0-3])*)$")]
# An OpenSSL cipher list (client_tls_ciphers, TLS 1.2 and lower only) or a curve name (client_tls_ecdhcurve).
OpenSslName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9:+!_.-]*$", max_length=512)]
Port = Annotated[int, Field(ge=1, le=65535)]
# Host names, IP addresses, or a Unix-socket directory (an absolute path: PgBouncer's `host=/dir`, which the
# local tests' replicas use); no spaces, quotes, commas or `=` that could break a connection string.
Host = Annotated[str, Field(pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9.:_-]*|/[A-Za-z0-9._/-]+)$", max_length=253)]
RoleName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=63)]
StartupParameter = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")]
_ABSOLUTE_PATH = re.compile(r"^/[^\n\r;#]*$")
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?$")


class PgBouncerConfigError(DbctlError, ValueError):
    """Settings or verifiers the renderer refuses; the message names the problem and the fix."""


def host_list_tls_problem(version: Version) -> str:
    """Why PgBouncer `version` cannot spread the read pool over several replicas with verify-full."""
    v, fixed = f"{version[0]}.{version[1]}", HOST_LIST_VERIFY_FULL_SINCE
    return (
        f"PgBouncer {v} checks server_tls_sslmode=verify-full against the whole host list, so a read pool "
        f"over several replicas would fail every TLS handshake (fixed in {fixed[0]}.{fixed[1]}.0, "
        f"pgbouncer#1303); use PgBouncer >= {fixed[0]}.{fixed[1]} (pgbouncer.version), or one replica"
    )


def parse_version(text: str) -> Version:
    """`"1.24"`, `"1.18.0"` -> (major, minor)."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise PgBouncerConfigError(f"PgBouncer version {text!r} is not MAJOR.MINOR[.PATCH] (e.g. '1.24')")
    return int(match[1]), int(match[2])


def _absolute_path(value: str | None, field: str) -> str | None:
    if value is not None and not _ABSOLUTE_PATH.fullmatch(value):
        raise ValueError(f"{field} must be an absolute path without newlines, ';' or '#', got {value!r}")
    return value


class ServerTls(BaseModel):
    """TLS from PgBouncer to PostgreSQL. verify-full against the RDS CA bundle in AWS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sslmode: SslMode = "verify-full"
    ca_file: str | None = None
    # TLS 1.2 and 1.3: 1.3 is negotiated where both ends have it (PgBouncer on OpenSSL 3, PostgreSQL 15 here,
    # RDS per its user guide); pinning tlsv1.3 would gain nothing measurable and fail every server login on
    # a server without it. See docs/pgbouncer.md, "TLS on both legs".
    protocols: TlsProtocols = "secure"

    @field_validator("ca_file")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return _absolute_path(v, "server_tls.ca_file")

    @model_validator(mode="after")
    def _ca_needed(self) -> "ServerTls":
        if self.sslmode.startswith("verify") and self.ca_file is None:
            raise ValueError(
                f"server_tls.sslmode {self.sslmode} needs ca_file (the RDS CA bundle, or the local "
                "cluster's certificate)"
            )
        return self


class ClientTls(BaseModel):
    """TLS from clients to PgBouncer: off unless a key and certificate are given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sslmode: SslMode = "disable"
    key_file: str | None = None
    cert_file: str | None = None
    # TLS 1.2 and 1.3: 1.3 wherever the client has it; some clients still lack it (docs/pgbouncer.md).
    protocols: TlsProtocols = "secure"
    ciphers: OpenSslName = "default"
    ecdhcurve: OpenSslName = "auto"

    @field_validator("key_file", "cert_file")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return _absolute_path(v, "client_tls key_file/cert_file")

    @model_validator(mode="after")
    def _files_needed(self) -> "ClientTls":
        if self.sslmode != "disable" and (self.key_file is None or self.cert_file is None):
            raise ValueError(f"client_tls.sslmode {self.sslmode} needs key_file and cert_file (or 'disable')")
        if self.sslmode == "disable" and (self.key_file or self.cert_file):
            raise ValueError("client_tls key_file/cert_file are set but sslmode is 'disable'; pick a mode")
        return self


class PgBouncerConfig(BaseModel):
    """Everything pgbouncer.ini says. Defaults are the seed's settings plus this project's choices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Version
    primary_host: Host
    primary_port: Port = POSTGRES_PORT
    # The read replicas (one port for all: PgBouncer's `port` is per entry, not per host); none means the
    # read pool points at the primary.
    read_hosts: tuple[Host, ...] = ()
    read_port: Port | None = None
    # The database both pools open on the server; tests and the local stack may point it elsewhere.
    server_dbname: RoleName = DATABASE_NAME
    listen_addr: str = Field(default="127.0.0.1", pattern=r"^(\*|[A-Za-z0-9.:_-]+)(,[A-Za-z0-9.:_-]+)*$")
    listen_port: Port = PGBOUNCER_PORT
    auth_file: str
    logfile: str | None = None
    pidfile: str | None = None
    # Processes on this host, all on listen_port (so_reuseport = 1), one per vCPU: PgBouncer is single-
    # threaded. With more than one, each gets its own peer_id and pidfile, logfile and unix_socket_dir (each
    # path holds PEER_ID_PLACEHOLDER), and [peers] lists every process by its socket directory.
    processes: int = Field(default=1, ge=1, le=MAX_PROCESSES)
    # Empty: no Unix socket (TCP only), the single-process default.
    unix_socket_dir: str = ""

    pool_mode: Literal["session", "transaction", "statement"] = "transaction"
    max_client_conn: int = Field(default=1000, ge=1)
    default_pool_size: int = Field(default=20, ge=1)
    min_pool_size: int = Field(default=5, ge=0)
    reserve_pool_size: int = Field(default=5, ge=0)
    reserve_pool_timeout: int = Field(default=5, ge=0)
    server_lifetime: int = Field(default=3600, ge=0)
    server_idle_timeout: int = Field(default=600, ge=0)
    query_wait_timeout: int = Field(default=30, ge=0)
    server_connect_timeout: int = Field(default=5, ge=1)
    # After a failed server login, new clients get "server login has been failing" for this long (default 15).
    server_login_retry: int = Field(default=1, ge=0)
    # How long a resolved server address is used (default 15); RDS endpoints publish a 5 s TTL.
    dns_max_ttl: int = Field(default=5, ge=0)
    # Run server_reset_query after every transaction, not only in session pooling (see docs/pgbouncer.md).
    server_reset_query_always: bool = True
    # CALL spike_ops.reset_session() in a block that ends the session if the call fails (RESET_QUERY):
    # DISCARD ALL's resets in one round trip, without the command tag that makes PgBouncer forget the
    # server's prepared statements. One line of SQL: no newline, quote or comment can reach the ini file.
    server_reset_query: str = Field(default=RESET_QUERY, pattern=r"^[A-Za-z0-9_ ;*(),.$]+$")
    idle_transaction_timeout: int = Field(default=60, ge=0)
    listen_backlog: int = Field(default=1024, ge=1)
    # TCP_DEFER_ACCEPT (PgBouncer's default 1 on Linux): off costs PgBouncer less CPU per new client
    # (bench/pgbouncer.py --compare-settings; docs/benchmarks.md).
    tcp_defer_accept: bool = False
    max_prepared_statements: int = Field(default=200, ge=0)
    # Not `options`: listed, PgBouncer drops every `-c name=value` it does not track without a word (a
    # client's `-c statement_timeout=5s` ran with none). Unlisted, it applies the parameters it tracks and
    # refuses the connection naming any other (docs/connecting-the-app.md); `search_path` is Prisma 6's.
    ignore_startup_parameters: tuple[StartupParameter, ...] = ("extra_float_digits", "search_path")
    log_connections: bool = False
    log_disconnections: bool = False

    server_tls: ServerTls
    client_tls: ClientTls = ClientTls()
    stats_users: tuple[RoleName, ...] = login_users(MONITOR_ROLE)
    admin_users: tuple[RoleName, ...] = ()

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: object) -> object:
        return parse_version(v) if isinstance(v, str) else v

    @field_validator("auth_file", "logfile", "pidfile")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return _absolute_path(v, "auth_file/logfile/pidfile")

    @field_validator("unix_socket_dir")
    @classmethod
    def _socket_dir(cls, v: str) -> str:
        if v and not _SOCKET_DIR.fullmatch(v):
            raise ValueError(
                f"unix_socket_dir must be empty or an absolute path of letters, digits and ._-/, got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PgBouncerConfig":
        if self.version < MIN_VERSION:
            raise ValueError(
                f"PgBouncer {self.version[0]}.{self.version[1]} is older than the oldest supported "
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]}; install a newer pgbouncer"
            )
        if self.read_port is not None and not self.read_hosts:
            raise ValueError(
                "read_port is set without read_hosts; set both, or neither to read from the primary"
            )
        if len(set(self.read_hosts)) != len(self.read_hosts):
            raise ValueError(f"read_hosts lists a host twice ({', '.join(self.read_hosts)}); list each once")
        if (
            len(self.read_hosts) > 1
            and self.server_tls.sslmode == "verify-full"
            and self.version < HOST_LIST_VERIFY_FULL_SINCE
        ):
            raise ValueError(host_list_tls_problem(self.version))
        if self.min_pool_size > self.default_pool_size:
            raise ValueError(
                f"min_pool_size {self.min_pool_size} exceeds default_pool_size {self.default_pool_size}; "
                "lower min_pool_size"
            )
        self._check_processes()
        return self

    def _check_processes(self) -> None:
        paths = {"pidfile": self.pidfile, "logfile": self.logfile, "unix_socket_dir": self.unix_socket_dir}
        if self.processes == 1:
            templated = [name for name, path in paths.items() if path and PEER_ID_PLACEHOLDER in path]
            if templated:
                raise ValueError(
                    f"{', '.join(templated)} hold {PEER_ID_PLACEHOLDER} but processes is 1; "
                    "give plain paths, or set processes > 1"
                )
            return
        if self.version < PEERS_SINCE:
            raise ValueError(
                f"processes {self.processes} needs PgBouncer >= {PEERS_SINCE[0]}.{PEERS_SINCE[1]} "
                f"(peer_id and [peers], so a cancel request reaches the process that owns the query), "
                f"but it is {self.version[0]}.{self.version[1]}; use a newer pgbouncer, or processes 1"
            )
        missing = [
            name for name, path in paths.items() if path is not None and PEER_ID_PLACEHOLDER not in path
        ]
        if missing:
            raise ValueError(
                f"processes {self.processes} needs a path per process: put {PEER_ID_PLACEHOLDER} in "
                f"{', '.join(missing)} (unix_socket_dir is required: [peers] reaches each process there)"
            )
        longest = len(self.socket_dir(self.processes)) + len(f"/.s.PGSQL.{self.listen_port}")
        if longest > _SOCKET_PATH_MAX:
            raise ValueError(
                f"unix_socket_dir {self.unix_socket_dir} makes a socket path of {longest} bytes, over the "
                f"{_SOCKET_PATH_MAX} a Unix socket allows; pick a shorter directory"
            )

    @property
    def peer_ids(self) -> range:
        """The processes' peer ids, 1..processes (one process: just 1, rendered without peering)."""
        return range(1, self.processes + 1)

    def process_path(self, path: str, peer_id: int) -> str:
        """`path` for process `peer_id` (PEER_ID_PLACEHOLDER replaced)."""
        return path.replace(PEER_ID_PLACEHOLDER, str(peer_id))

    def socket_dir(self, peer_id: int) -> str:
        """Process `peer_id`'s unix_socket_dir: its admin console and where its peers forward cancels."""
        return self.process_path(self.unix_socket_dir, peer_id)

    @property
    def has_replica(self) -> bool:
        return bool(self.read_hosts)

    @property
    def read_target(self) -> tuple[str, int]:
        """(host, port) the read pool connects to: every replica as a comma-separated host list, or the
        primary when there is none."""
        if not self.read_hosts:
            return self.primary_host, self.primary_port
        return ",".join(self.read_hosts), self.read_port or POSTGRES_PORT

    @property
    def connections_per_pool(self) -> int:
        """Server connections one database pool can hold (max_db_connections caps it across users)."""
        return self.default_pool_size + self.reserve_pool_size

    @property
    def pools_on_primary(self) -> int:
        """How many capped database pools point at the primary: both when there is no replica."""
        return 1 if self.has_replica else 2

    def supports(self, setting: str) -> bool:
        """True when this PgBouncer version understands `setting`."""
        return self.version >= SETTING_SINCE.get(setting, MIN_VERSION)


_Entry = tuple[str, str, str]  # key, value, reason


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    return str(v)


def _database_line(config: PgBouncerConfig, host: str, port: int) -> str:
    cap = config.connections_per_pool
    return f"host={host} port={port} dbname={config.server_dbname} max_db_connections={cap}"


def _read_line(config: PgBouncerConfig) -> tuple[str, str]:
    """The read pool's entry and its reason. Several replicas: one host list, each new server connection to
    the next host (round-robin). `load_balance_hosts = disable` would keep every connection on the first
    replica until a connect fails (failover, no spreading), so 1.24+ gets round-robin written out."""
    read_host, read_port = config.read_target
    line = _database_line(config, read_host, read_port)
    if len(config.read_hosts) > 1:
        if config.version >= LOAD_BALANCE_HOSTS_SINCE:
            line += " load_balance_hosts=round-robin"
        return line, (
            f"reads: all {len(config.read_hosts)} replicas, new server connections round-robin over them; "
            "max_db_connections caps the pool across users and hosts"
        )
    if config.has_replica:
        return line, "reads: the read replica; max_db_connections caps the pool across users"
    return line, "reads: no replica in this stack, so the read pool also points at the primary"


def _databases(config: PgBouncerConfig) -> list[_Entry]:
    read_line, read_reason = _read_line(config)
    return [
        (
            DATABASE_NAME,
            _database_line(config, config.primary_host, config.primary_port),
            "the application's read-write pool: the primary; max_db_connections caps it across users",
        ),
        (READ_POOL_DATABASE, read_line, read_reason),
    ]


def _settings(config: PgBouncerConfig) -> list[_Entry]:
    c = config
    entries: list[tuple[str, object, str]] = [
        ("listen_addr", c.listen_addr, "where clients reach PgBouncer (default: Unix socket only)"),
        ("listen_port", c.listen_port, "the pooled endpoint's port, 6543, kept from the seed"),
        ("auth_type", "scram-sha-256", "SCRAM only: md5 and plaintext are refused"),
        ("auth_file", c.auth_file, "SCRAM verifiers of the pooled roles; never a plaintext password"),
    ]
    entries += [
        ("pool_mode", c.pool_mode, "a server connection is held for one transaction only"),
        (
            "max_client_conn",
            c.max_client_conn,
            "many app/serverless clients share the few server connections",
        ),
        (
            "default_pool_size",
            c.default_pool_size,
            "server connections per pool, within the connection budget",
        ),
        ("min_pool_size", c.min_pool_size, "keeps warm server connections for the next burst"),
        ("reserve_pool_size", c.reserve_pool_size, "extra server connections for a pool under pressure"),
        ("reserve_pool_timeout", c.reserve_pool_timeout, "seconds a client waits before the reserve opens"),
        (
            "server_lifetime",
            c.server_lifetime,
            "recycle server connections hourly (memory, DNS after failover)",
        ),
        ("server_idle_timeout", c.server_idle_timeout, "close server connections idle for 10 minutes"),
        (
            "query_wait_timeout",
            c.query_wait_timeout,
            "fail a client waiting for a pool fast instead of in 120 s",
        ),
        (
            "server_connect_timeout",
            c.server_connect_timeout,
            "a database in the same VPC answers in ms; a 15 s hang hides a failover",
        ),
        (
            "server_login_retry",
            c.server_login_retry,
            "retry a failed server login after 1 s, not 15: a restart is not a 15 s outage",
        ),
        (
            "dns_max_ttl",
            c.dns_max_ttl,
            "re-resolve the RDS endpoint as often as its 5 s TTL allows: a failover moves it",
        ),
        (
            "server_reset_query",
            c.server_reset_query,
            "what resets a server connection's session state"
            + (
                ": DISCARD ALL's resets in one call, PgBouncer's prepared statements kept"
                if c.server_reset_query == RESET_QUERY
                else ""
            ),
        ),
        (
            "server_reset_query_always",
            c.server_reset_query_always,
            "reset after every transaction: no SET, lock or temp table reaches the next client",
        ),
        (
            "idle_transaction_timeout",
            c.idle_transaction_timeout,
            "a client idle inside a transaction would hold a pooled connection forever",
        ),
        ("listen_backlog", c.listen_backlog, "a burst of connecting clients overflows the default 128"),
        (
            "tcp_defer_accept",
            c.tcp_defer_accept,
            "measured: accepting at once costs less CPU per connect-per-request client than deferring",
        ),
    ]
    if c.supports("max_prepared_statements"):
        entries.append(
            (
                "max_prepared_statements",
                c.max_prepared_statements,
                "protocol-level prepared statements in transaction mode (Prisma without pgbouncer=true)",
            )
        )
    entries += [
        (
            "ignore_startup_parameters",
            c.ignore_startup_parameters,
            "dropped: JDBC's extra_float_digits, Prisma 6's search_path (public anyway); others refused",
        ),
        (
            "server_tls_sslmode",
            c.server_tls.sslmode,
            "encrypt and verify the database's certificate and name",
        ),
    ]
    if c.server_tls.ca_file is not None:
        entries.append(("server_tls_ca_file", c.server_tls.ca_file, "the CA that signed the database cert"))
    if c.server_tls.sslmode != "disable":
        entries.append(
            (
                "server_tls_protocols",
                c.server_tls.protocols,
                "TLS 1.3 where the server has it (RDS, PostgreSQL 15 here), 1.2 otherwise; never older",
            )
        )
    if c.client_tls.sslmode != "disable":
        entries += [
            ("client_tls_sslmode", c.client_tls.sslmode, "clients reach PgBouncer over TLS"),
            ("client_tls_key_file", c.client_tls.key_file, "PgBouncer's TLS key for clients"),
            ("client_tls_cert_file", c.client_tls.cert_file, "PgBouncer's TLS certificate for clients"),
            (
                "client_tls_protocols",
                c.client_tls.protocols,
                "TLS 1.3 for every client that has it, 1.2 for the rest (docs/pgbouncer.md)",
            ),
            (
                "client_tls_ciphers",
                c.client_tls.ciphers,
                "TLS 1.2 only: OpenSSL's default list (TLS 1.3 suites have no setting before 1.25)",
            ),
            (
                "client_tls_ecdhcurve",
                c.client_tls.ecdhcurve,
                "auto: OpenSSL's group list, X25519 first, as clients offer; one named curve costs a retry",
            ),
        ]
    entries += [
        ("log_connections", c.log_connections, "a line per client connect drowns errors at 1000 clients"),
        ("log_disconnections", c.log_disconnections, "as log_connections; SHOW CLIENTS/STATS cover it"),
    ]
    if c.stats_users:
        entries.append(("stats_users", c.stats_users, "read-only SHOW POOLS/STATS for monitoring"))
    if c.admin_users:
        entries.append(("admin_users", c.admin_users, "may PAUSE/RELOAD/SHUTDOWN through the admin console"))
    return [(key, _value(value), reason) for key, value, reason in entries]


def _process_settings(config: PgBouncerConfig, peer_id: int) -> list[_Entry]:
    """The settings that differ per process: paths, and with several processes so_reuseport and peer_id."""
    c = config
    entries: list[_Entry]
    if c.processes == 1:
        reason = (
            "the admin console's Unix socket" if c.unix_socket_dir else "TCP only: no socket files in /tmp"
        )
        entries = [("unix_socket_dir", c.unix_socket_dir, reason)]
    else:
        entries = [
            (
                "so_reuseport",
                "1",
                f"one of {c.processes} single-threaded processes on this port; the kernel spreads clients",
            ),
            ("peer_id", str(peer_id), "this process in [peers]; its cancel keys carry it"),
            (
                "unix_socket_dir",
                c.socket_dir(peer_id),
                "this process's own socket: its admin console, and where peers forward its cancel requests",
            ),
        ]
    if c.logfile is not None:
        entries.append(
            (
                "logfile",
                c.process_path(c.logfile, peer_id),
                "a file the host rotates and ships (reopened on SIGHUP)",
            )
        )
    if c.pidfile is not None:
        entries.append(
            (
                "pidfile",
                c.process_path(c.pidfile, peer_id),
                "lets the service manager signal the right process",
            )
        )
    return entries


def _peers(config: PgBouncerConfig) -> list[_Entry]:
    """[peers]: every process by its socket directory (its own entry is allowed and ignored)."""
    return [
        (
            str(i),
            f"host={config.socket_dir(i)} port={config.listen_port}",
            f"process {i}: a cancel request for one of its clients is forwarded there",
        )
        for i in config.peer_ids
    ]


def _section(name: str, entries: list[_Entry]) -> list[str]:
    lines = [f"[{name}]"]
    for key, value, reason in entries:
        lines += [f";; {reason}", f"{key} = {value}" if value != "" else f"{key} ="]
    return [*lines, ""]


def render_ini(config: PgBouncerConfig, peer_id: int = 1) -> str:
    """pgbouncer.ini text for `config`'s process `peer_id` (1..processes): only settings its version knows,
    each with a reason above it. Several processes: one file each, the same but for the per-process lines."""
    if peer_id not in config.peer_ids:
        raise PgBouncerConfigError(
            f"peer_id {peer_id} is not one of this config's processes 1..{config.processes}"
        )
    header = [
        f";; Rendered by dbctl.pgbouncer for PgBouncer {config.version[0]}.{config.version[1]}; do not edit.",
        ";; Settings not listed here keep PgBouncer's defaults. Nothing here is secret.",
        "",
    ]
    if config.processes > 1:
        header.insert(1, f";; Process {peer_id} of {config.processes} on port {config.listen_port}.")
    body = _section("databases", _databases(config))
    if config.processes > 1:
        body += _section("peers", _peers(config))
    # The per-process lines first: a reload that fails on a later line applies only what it read before it,
    # and a logfile it did not reach would send the log to stderr.
    body += _section("pgbouncer", _process_settings(config, peer_id) + _settings(config))
    return "\n".join(header + body)


def render_userlist(verifiers: Mapping[str, str]) -> str:
    """userlist.txt: one `"user" "SCRAM-SHA-256$..."` line per login user of the pooled roles, from
    verifiers only: both users of a role (dbctl.names.login_users) while a rotation overlaps them, at least
    one (its active user) always.

    Refuses a plaintext password (anything that is not a SCRAM-SHA-256 verifier), a pooled role with no user
    and a user that does not connect through PgBouncer. Error messages never include the value.
    """
    users = [user for role in POOLED_ROLES for user in login_users(role)]
    unknown = sorted(set(verifiers) - set(users))
    if unknown:
        raise PgBouncerConfigError(
            f"userlist: {', '.join(unknown)} do not connect through PgBouncer; pass only {', '.join(users)}"
        )
    missing = [role for role in POOLED_ROLES if not any(u in verifiers for u in login_users(role))]
    if missing:
        raise PgBouncerConfigError(
            f"userlist: no verifier for {', '.join(missing)}; pass the scram_verifier from each role's secret"
        )
    for user in verifiers:
        if not is_scram_verifier(verifiers[user]):
            raise PgBouncerConfigError(
                f"userlist: the value for {user} is not a SCRAM-SHA-256 verifier (a plaintext password?); "
                "pass the secret's scram_verifier, never the password"
            )
    return "".join(f'"{user}" "{verifiers[user]}"\n' for user in users if user in verifiers)
