"""A cluster's configuration: postgresql.conf, pg_hba.conf, durability.conf and its TLS certificate.

API (each takes the ``ClusterSpec``; ``Cluster`` has the public ones as methods)
---
- ``write_config(cluster, log_statement)``: the RDS-like settings after initdb's: 127.0.0.1 only (no unix
  socket), scram-sha-256, ssl=on with the server certificate (ssl=off on an install without TLS),
  ``preload_libraries(install)`` (with pg_cron's and auto_explain's settings when preloaded: see
  ``optional_library_settings``), ``MAX_CONNECTIONS``; pg_hba `hostssl` only, so non-TLS is refused as on RDS
  with ``rds.force_ssl=1`` (a ``host`` line on an install without TLS).
- ``append_settings(cluster, heading, settings)``: more lines at the end of postgresql.conf.
- ``allow_replication(cluster, role) -> bool``: a pg_hba line that lets role stream WAL; reloads.
- ``write_durability(cluster, durable)``, ``is_durable(cluster)``, ``set_durability(cluster, durable) ->
  bool``: fsync, synchronous_commit and full_page_writes on (durable) or off, in ``data/durability.conf``;
  ``set_durability`` reloads a running server.
- ``set_parameter(cluster, name, value)``: ALTER SYSTEM + reload, as the superuser (e.g. ``log_statement``).
- ``make_tls(cluster)``: a server key and certificate signed by the cluster's CA; ``ensure_tls(cluster) ->
  bool`` reissues it when it is not the CA's (a stack from before the CA) or expires within 30 days;
  PostgreSQL re-reads it on reload.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import psycopg
from psycopg import sql

from dbctl.core import names
from dbctl.postgres import postmaster
from dbctl.postgres.errors import ClusterError
from dbctl.postgres.install import PostgresInstall, preload_libraries
from dbctl.postgres.osproc import chown_tree, service_owner
from dbctl.postgres.spec import ClusterSpec

# All three on unless a user asks for an unsafe stack: with them off a crash lost acknowledged commits.
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")
# Every local cluster's max_connections (a hot standby copies its primary's: it may not have fewer).
MAX_CONNECTIONS = 200
# auto_explain's threshold: the slow-query alarm's (components/alarm_rules.py SLOW_QUERY_THRESHOLD_MS).
AUTO_EXPLAIN_MIN_DURATION_MS = 1000
_DURABILITY_FILE = "durability.conf"


def optional_library_settings(install: PostgresInstall | None = None) -> dict[str, str]:
    """The settings of the optional libraries `install`'s server preloads (None: the system's)."""
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


def append_settings(cluster: ClusterSpec, heading: str, settings: Mapping[str, str]) -> None:
    """Append `key = value` lines (values already quoted for postgresql.conf) under a `# ---` heading."""
    with (cluster.data_dir / "postgresql.conf").open("a") as f:
        f.write(f"\n# --- dbctl.cluster: {heading} ---\n")
        f.writelines(f"{key} = {value}\n" for key, value in settings.items())


def write_config(cluster: ClusterSpec, log_statement: str) -> None:
    install = cluster.install
    append_settings(
        cluster,
        "RDS-like local settings",
        {
            "listen_addresses": f"'{cluster.host}'",
            "port": str(cluster.port),
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
                if install.tls
                else {"ssl": "off"}  # built without OpenSSL: ssl=on would stop the server from starting
            ),
            "shared_preload_libraries": f"'{','.join(preload_libraries(install))}'",
            "log_statement": f"'{log_statement}'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "max_connections": str(MAX_CONNECTIONS),
            **optional_library_settings(install),
        },
    )
    (cluster.data_dir / "pg_hba.conf").write_text(
        "# dbctl.cluster: TCP on 127.0.0.1 only, TLS and SCRAM only, as on RDS with rds.force_ssl=1\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        if install.tls
        # Built without OpenSSL (the wheel's PostgreSQL 18): no TLS to insist on, SCRAM still.
        else "# dbctl.cluster: TCP on 127.0.0.1 only, SCRAM only (this PostgreSQL has no TLS)\n"
        "host    all all 127.0.0.1/32 scram-sha-256\n"
    )


def allow_replication(cluster: ClusterSpec, role: str) -> bool:
    """Let role stream WAL from this cluster (`all` in pg_hba.conf does not match `replication`):
    TLS (on an install that has it) and SCRAM, 127.0.0.1 only, like every other line. Reloads; True when
    the line was added."""
    hba = cluster.data_dir / "pg_hba.conf"
    kind = "hostssl" if cluster.install.tls else "host"
    line = f"{kind} replication {role} {cluster.host}/32 scram-sha-256\n"
    text = hba.read_text()
    if line in text:
        return False
    hba.write_text(text if text.endswith("\n") else text + "\n")
    with hba.open("a") as f:
        f.write(line)
    postmaster.reload(cluster)
    return True


def write_durability(cluster: ClusterSpec, durable: bool) -> None:
    value = "on" if durable else "off"
    why = "durable: a crash loses no acknowledged commit" if durable else "UNSAFE: a crash can lose data"
    (cluster.data_dir / _DURABILITY_FILE).write_text(
        f"# dbctl.cluster: {why}\n" + "".join(f"{name} = {value}\n" for name in DURABILITY_SETTINGS)
    )
    conf = cluster.data_dir / "postgresql.conf"
    include = f"include_if_exists = '{_DURABILITY_FILE}'\n"
    if include not in conf.read_text():
        # Last in the file, so it overrides the `fsync = off` lines older versions of this module wrote.
        with conf.open("a") as f:
            f.write(include)


def is_durable(cluster: ClusterSpec) -> bool:
    try:
        text = (cluster.data_dir / _DURABILITY_FILE).read_text()
    except OSError:
        return False  # clusters from before durability.conf ran with fsync off
    return all(f"{name} = on" in text for name in DURABILITY_SETTINGS)


def set_durability(cluster: ClusterSpec, durable: bool) -> bool:
    """fsync, synchronous_commit and full_page_writes all on (durable) or off; reloads a running server.
    True when it changed anything."""
    if is_durable(cluster) == durable and (cluster.data_dir / _DURABILITY_FILE).exists():
        return False
    write_durability(cluster, durable)
    chown_tree(cluster.data_dir)
    if postmaster.is_running(cluster):
        postmaster.reload(cluster)
    return True


def set_parameter(cluster: ClusterSpec, name: str, value: str) -> None:
    """ALTER SYSTEM SET name = value and reload, as the bootstrap superuser."""
    with psycopg.connect(cluster.superuser_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
        # pg_reload_conf only signals; wait until this backend sees the new value.
        for _ in range(100):
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            if row is not None and row[0] == value:
                return
            time.sleep(0.05)
    raise ClusterError(f"{name} did not become {value!r} after a reload")


def make_tls(cluster: ClusterSpec) -> None:
    """A server key and certificate signed by the cluster's CA (made first if missing)."""
    cluster.authority.ensure()
    cluster.authority.issue(cluster.cert_file, cluster.key_file, service_owner())


def ensure_tls(cluster: ClusterSpec) -> bool:
    """Reissue the server certificate when it is not the current CA's, or expires soon; True if it did.

    A running server keeps the old certificate until reload(). Always False on an install without TLS,
    whose server has no certificate."""
    if not cluster.install.tls:
        return False
    cluster.authority.ensure()
    if cluster.authority.signed(cluster.cert_file):
        return False
    make_tls(cluster)
    return True
