"""TLS through the real PgBouncer: what protocol each leg negotiates with the renderer's settings.

Client leg (app -> PgBouncer): libpq's own view of the connection (PQsslAttribute "protocol", called through
ctypes on the libpq this process loaded, since psycopg does not wrap it). Server leg (PgBouncer ->
PostgreSQL): pg_stat_ssl of PgBouncer's server connections. Each check also runs with the setting pinned
lower, so it fails when the setting does not reach the binary.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from dbctl.core import names
from dbctl.pgbouncer.config import POOLED_ROLES, ClientTls, ServerTls
from dbctl.pgbouncer.process import PgBouncerServer
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.osproc import free_port
from tests.integration.conftest import login_user, scratch_database

pytestmark = pytest.mark.integration

# start(client_protocols=None, server_protocols=None) -> the port of a PgBouncer started for the test
Start = Callable[..., int]


def loaded_libpq() -> ctypes.CDLL:
    """The libpq psycopg uses in this process (its wheel's copy, or the system's), from /proc/self/maps."""
    paths = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libpq" in line}
    assert len(paths) == 1, f"expected one libpq loaded, found {sorted(paths)}"
    lib = ctypes.CDLL(paths.pop())
    lib.PQsslAttribute.restype = ctypes.c_char_p
    lib.PQsslAttribute.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


def client_protocol(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    # Both psycopg implementations have pgconn_ptr (the PGconn* address); its typing stub does not say so.
    pointer: int = conn.pgconn.pgconn_ptr  # type: ignore[attr-defined]
    value = loaded_libpq().PQsslAttribute(pointer, b"protocol")
    assert value is not None, "the connection is not using TLS"
    return str(value.decode())


@pytest.fixture(scope="module")
def setup(pg_cluster: Cluster, verifiers: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """A database prepared by the post-deploy step, and the pooled roles' verifiers."""
    with scratch_database(pg_cluster, "pgbtls_", verifiers) as name:
        yield name, {login_user(role): verifiers[login_user(role)] for role in POOLED_ROLES}


@pytest.fixture
def start(pg_cluster: Cluster, setup: tuple[str, dict[str, str]]) -> Iterator[Start]:
    """start(client_protocols=None, server_protocols=None) -> port: PgBouncer with the renderer's TLS
    settings, or with one leg's protocols pinned."""
    database, verifiers = setup
    servers: list[PgBouncerServer] = []

    def _start(client_protocols: str | None = None, server_protocols: str | None = None) -> int:
        # Not pytest's tmp_path: as root it sits under a 0700 dir the postgres user cannot enter.
        server = PgBouncerServer(Path(tempfile.mkdtemp(prefix="dbctl-test-pgbouncer-tls-")))
        servers.append(server)
        client = ClientTls(
            sslmode="require", key_file=str(pg_cluster.key_file), cert_file=str(pg_cluster.cert_file)
        )
        backend = ServerTls(sslmode="verify-full", ca_file=str(pg_cluster.ca_file))
        port = free_port()
        config = server.config(
            primary_host=pg_cluster.host,
            primary_port=pg_cluster.port,
            server_dbname=database,
            listen_port=port,
            client_tls=client.model_copy(update={"protocols": client_protocols})
            if client_protocols
            else client,
            server_tls=backend.model_copy(update={"protocols": server_protocols})
            if server_protocols
            else backend,
        )
        server.start(config, verifiers)
        return port

    yield _start
    for server in servers:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def connect(
    cluster: Cluster, port: int, password: str, **extra: str
) -> psycopg.Connection[tuple[object, ...]]:
    conninfo = make_conninfo(
        host="127.0.0.1",
        port=str(port),
        user=login_user(names.APP_ROLE),
        password=password,
        dbname=names.DATABASE_NAME,
        sslmode="verify-full",
        sslrootcert=str(cluster.ca_file),
        connect_timeout="30",
        **extra,
    )
    return psycopg.connect(conninfo, autocommit=True)


def server_leg_versions(cluster: Cluster, database: str) -> set[str]:
    """TLS versions of the pooled role's server connections, which only PgBouncer opens."""
    with psycopg.connect(cluster.admin_conninfo(database)) as conn:
        rows = conn.execute(
            "SELECT s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.usename = %s AND a.datname = current_database()",
            (login_user(names.APP_ROLE),),
        ).fetchall()
    return {str(version) for (version,) in rows}


def test_a_client_gets_tls_1_3_and_pgbouncer_reaches_postgresql_over_tls_1_3(
    start: Start, pg_cluster: Cluster, setup: tuple[str, dict[str, str]], role_passwords: dict[str, str]
) -> None:
    port = start()
    with connect(pg_cluster, port, role_passwords[names.APP_ROLE]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert client_protocol(conn) == "TLSv1.3"
        assert server_leg_versions(pg_cluster, setup[0]) == {"TLSv1.3"}


def test_a_client_without_tls_1_3_still_connects_over_tls_1_2(
    start: Start, pg_cluster: Cluster, role_passwords: dict[str, str]
) -> None:
    """client_tls_protocols = secure: 1.3 where the client has it, 1.2 for one that stops there."""
    port = start()
    with connect(
        pg_cluster, port, role_passwords[names.APP_ROLE], ssl_max_protocol_version="TLSv1.2"
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert client_protocol(conn) == "TLSv1.2"


def test_the_protocol_settings_reach_the_binary(
    start: Start, pg_cluster: Cluster, setup: tuple[str, dict[str, str]], role_passwords: dict[str, str]
) -> None:
    """Pinned to 1.2 on both legs, both legs speak 1.2: the checks above see the settings, not defaults."""
    port = start(client_protocols="tlsv1.2", server_protocols="tlsv1.2")
    with connect(pg_cluster, port, role_passwords[names.APP_ROLE]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert client_protocol(conn) == "TLSv1.2"
        assert "TLSv1.2" in server_leg_versions(pg_cluster, setup[0])
