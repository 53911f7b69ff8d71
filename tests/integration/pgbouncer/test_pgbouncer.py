"""The rendered pgbouncer.ini and userlist.txt, served by the real pgbouncer in front of a real PostgreSQL.

PgBouncer runs with client TLS (the cluster's self-signed cert) and verify-full TLS to the server, SCRAM on
both legs. The assertions count things (connections, rows, backend pids); none measures time.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import resource
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dbctl.core import names
from dbctl.pgbouncer.config import (
    POOLED_ROLES,
    PREPARED_STATEMENTS_SINCE,
    ClientTls,
    PgBouncerConfig,
    ServerTls,
    parse_version,
)
from dbctl.pgbouncer.process import PgBouncerServer, PgBouncerServerError, detect_version, find_pgbouncer
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.osproc import free_port
from dbctl.stackconfig.settings import PgBouncerSettings
from tests.integration.conftest import login_user, scratch_database

pytestmark = pytest.mark.integration

TABLE = "User"  # from the init migration
CLIENTS = 1000
CROWD = "pgbouncer-crowd"


@pytest.fixture(scope="module")
def database(pg_cluster: Cluster, verifiers: dict[str, str]) -> Iterator[str]:
    """A database of its own (the pools point at it), prepared by the post-deploy step: schema and roles."""
    with scratch_database(pg_cluster, "pgb_", verifiers) as name:
        yield name


def pooled(verifiers: dict[str, str]) -> dict[str, str]:
    """userlist.txt holds the pooled roles only; the migrator never goes through PgBouncer."""
    return {login_user(role): verifiers[login_user(role)] for role in POOLED_ROLES}


def base_settings(cluster: Cluster, database: str, port: int) -> dict[str, object]:
    return {
        "primary_host": cluster.host,
        "primary_port": cluster.port,
        "server_dbname": database,
        "listen_port": port,
        "server_tls": ServerTls(sslmode="verify-full", ca_file=str(cluster.ca_file)),
        "client_tls": ClientTls(
            sslmode="require", key_file=str(cluster.key_file), cert_file=str(cluster.cert_file)
        ),
    }


class Bouncer:
    """A started PgBouncerServer plus what the tests need to connect to it."""

    def __init__(self, server: PgBouncerServer, config: PgBouncerConfig, cluster: Cluster) -> None:
        self.server = server
        self.config = config
        self.cluster = cluster

    def conninfo(self, user: str, password: str, dbname: str = names.DATABASE_NAME) -> str:
        return make_conninfo(
            host="127.0.0.1",
            port=str(self.config.listen_port),
            user=login_user(user),
            password=password,
            dbname=dbname,
            sslmode="verify-full",
            sslrootcert=str(self.cluster.ca_file),
            connect_timeout="30",
        )


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def _start(cluster: Cluster, database: str, verifiers: dict[str, str], **settings: object) -> Bouncer:
    # Not pytest's tmp_path: as root it sits under a 0700 dir the postgres user cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="dbctl-test-pgbouncer-"))
    server = PgBouncerServer(directory)
    config = server.config(**{**base_settings(cluster, database, free_port()), **settings})
    server.start(config, pooled(verifiers))
    return Bouncer(server, config, cluster)


def _cleanup(bouncer: Bouncer) -> None:
    bouncer.server.stop()
    shutil.rmtree(bouncer.server.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(pg_cluster: Cluster, database: str, verifiers: dict[str, str]) -> Iterator[Bouncer]:
    started = _start(pg_cluster, database, verifiers)
    yield started
    _cleanup(started)


def test_binary_is_1_18_or_newer_and_the_auth_file_is_private(bouncer: Bouncer) -> None:
    assert bouncer.server.version >= (1, 18)
    mode = bouncer.server.userlist_path.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    text = bouncer.server.userlist_path.read_text()
    assert text.count("SCRAM-SHA-256$") == len(POOLED_ROLES)


def test_app_reads_and_writes_through_pgbouncer_over_scram_and_tls(
    bouncer: Bouncer, role_passwords: dict[str, str]
) -> None:
    with psycopg.connect(bouncer.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE])) as conn:
        note = f"written-{uuid.uuid4().hex}"
        conn.execute(
            sql.SQL('INSERT INTO {} (id, name, "updatedAt") VALUES (%s, %s, now())').format(
                sql.Identifier(TABLE)
            ),
            (uuid.uuid4().hex, note),
        )
        conn.commit()
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE name = %s").format(sql.Identifier(TABLE)), (note,)
        ).fetchone()
        assert row == (1,)
        assert conn.execute("SELECT current_user").fetchone() == (names.APP_ROLE,)
        # The session acts as spike_app (role=), which may not read its login user's pg_stat_ssl row: look
        # as the login user (SET LOCAL: this transaction only, on the pooled server connection).
        conn.execute("SET LOCAL ROLE NONE")
        user, server_tls = conn.execute(
            "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone() or (None, None)
        assert user == login_user(names.APP_ROLE)
        assert server_tls is True  # PgBouncer -> PostgreSQL leg is TLS (verify-full)
        assert conn.pgconn.ssl_in_use  # client -> PgBouncer leg is TLS too


def test_readonly_uses_the_read_pool_and_cannot_write(
    bouncer: Bouncer, role_passwords: dict[str, str]
) -> None:
    conninfo = bouncer.conninfo(
        names.READONLY_ROLE, role_passwords[names.READONLY_ROLE], names.READ_POOL_DATABASE
    )
    insert = sql.SQL("INSERT INTO {} (id, \"updatedAt\") VALUES ('nope', now())").format(
        sql.Identifier(TABLE)
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) >= 0 FROM {}").format(sql.Identifier(TABLE))).fetchone()
        assert row == (True,)
        # The role's sessions are read-only by default, and even a read-write transaction lacks the privilege.
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(insert)
        with conn.transaction():
            conn.execute("SET TRANSACTION READ WRITE")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(insert)
    console = bouncer.conninfo(names.MONITOR_ROLE, role_passwords[names.MONITOR_ROLE], "pgbouncer")
    with psycopg.connect(console, autocommit=True) as conn:
        cur = conn.execute("SHOW POOLS")
        columns = [c.name for c in cur.description or []]
        pools = {(r[columns.index("database")], r[columns.index("user")]) for r in cur.fetchall()}
    assert (names.READ_POOL_DATABASE, login_user(names.READONLY_ROLE)) in pools


def test_wrong_password_and_unknown_user_are_refused(
    bouncer: Bouncer, role_passwords: dict[str, str]
) -> None:
    # PgBouncer checks the client's SCRAM proof against the verifier in userlist.txt.
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
        psycopg.connect(bouncer.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE] + "x"))
    # The migrator is not in userlist.txt: it goes straight to the primary, never through PgBouncer.
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(bouncer.conninfo(names.MIGRATOR_ROLE, role_passwords[names.MIGRATOR_ROLE]))


def test_monitor_sees_pools_but_cannot_administer(bouncer: Bouncer, role_passwords: dict[str, str]) -> None:
    console = bouncer.conninfo(names.MONITOR_ROLE, role_passwords[names.MONITOR_ROLE], "pgbouncer")
    with psycopg.connect(console, autocommit=True) as conn:
        databases = {row[0] for row in conn.execute("SHOW POOLS").fetchall()}
        assert "pgbouncer" in databases
        with pytest.raises(psycopg.Error, match="admin access needed"):
            conn.execute("RELOAD")


async def _client(
    conninfo: str, all_connected: asyncio.Event, connected: list[int], pids: set[int], target: int
) -> int:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        connected.append(1)
        if len(connected) == target:
            all_connected.set()
        await all_connected.wait()
        done = 0
        for _ in range(3):
            cur = await conn.execute("SELECT pg_backend_pid(), pg_sleep(0.005)")
            row = await cur.fetchone()
            assert row is not None
            pids.add(row[0])
            done += 1
        return done


def _pool_counts(conninfo: str) -> tuple[int, int]:
    """(clients, server connections) of the app's primary pool, from SHOW POOLS."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute("SHOW POOLS")
        columns = [c.name for c in cur.description or []]
        for values in cur.fetchall():
            row = dict(zip(columns, values, strict=True))
            if row["database"] == names.DATABASE_NAME and row["user"] == login_user(names.APP_ROLE):
                clients = int(row["cl_active"]) + int(row["cl_waiting"])
                servers = sum(
                    int(row[k]) for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
                )
                return clients, servers
    return 0, 0


def test_a_thousand_concurrent_clients_share_at_most_the_pool_size(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    _raise_fd_limit(CLIENTS + 512)
    pool_size = 20
    # No reserve pool, so the cap is exactly default_pool_size; a few client slots for the monitor.
    started = _start(
        pg_cluster,
        database,
        verifiers,
        default_pool_size=pool_size,
        reserve_pool_size=0,
        max_client_conn=CLIENTS + 10,
    )
    try:
        # The application_name tells this crowd's server backends from other tests' leftover ones.
        conninfo = make_conninfo(
            started.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE]), application_name=CROWD
        )
        console = started.conninfo(names.MONITOR_ROLE, role_passwords[names.MONITOR_ROLE], "pgbouncer")
        pids: set[int] = set()
        peak: dict[str, int] = {"clients": 0, "servers": 0, "backends": 0}

        async def run() -> list[int | BaseException]:
            all_connected = asyncio.Event()
            connected: list[int] = []
            tasks = [
                asyncio.create_task(_client(conninfo, all_connected, connected, pids, CLIENTS))
                for _ in range(CLIENTS)
            ]
            await asyncio.wait_for(all_connected.wait(), timeout=300)
            clients, servers = await asyncio.to_thread(_pool_counts, console)
            peak["clients"], peak["servers"] = clients, servers
            peak["backends"] = await asyncio.to_thread(_backends, pg_cluster, database)
            return await asyncio.gather(*tasks, return_exceptions=True)

        results = asyncio.run(run())
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == [], f"{len(failures)} clients failed, first: {failures[:1]!r}"
        assert sum(r for r in results if isinstance(r, int)) == CLIENTS * 3
        assert peak["clients"] == CLIENTS  # all of them connected to PgBouncer at the same time
        assert 1 <= peak["servers"] <= pool_size
        assert 1 <= peak["backends"] <= pool_size
        assert 1 <= len(pids) <= pool_size  # every query ran on one of at most pool_size server backends
        # pgbouncer itself reports the descriptor limit it got; it must cover every client.
        limit = re.search(r"kernel file descriptor limit: (\d+)", started.server.log_path.read_text())
        assert limit is not None and int(limit[1]) > CLIENTS
        print(
            f"\n{CLIENTS} clients, {CLIENTS * 3} queries, 0 failures; server backends used: {len(pids)}, "
            f"SHOW POOLS servers at peak: {peak['servers']}, pg_stat_activity backends: {peak['backends']}"
        )
    finally:
        _cleanup(started)


def _backends(cluster: Cluster, database: str) -> int:
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND usename = %s AND application_name = %s",
            (database, login_user(names.APP_ROLE), CROWD),
        ).fetchone()
        return int(row[0]) if row else 0


def test_online_reload_keeps_connected_clients(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    started = _start(pg_cluster, database, verifiers)
    try:
        app = started.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE])
        console = started.conninfo(names.MONITOR_ROLE, role_passwords[names.MONITOR_ROLE], "pgbouncer")
        table = sql.Identifier(TABLE)
        note = f"across-reload-{uuid.uuid4().hex}"
        with psycopg.connect(app) as idle_client, psycopg.connect(app) as in_transaction:
            idle_client.execute("SELECT 1")
            idle_client.commit()
            in_transaction.execute(
                sql.SQL('INSERT INTO {} (id, name, "updatedAt") VALUES (%s, %s, now())').format(table),
                (uuid.uuid4().hex, note),
            )

            changed = started.config.model_copy(update={"query_wait_timeout": 45, "default_pool_size": 15})
            started.server.reload(changed, pooled(verifiers))

            in_transaction.commit()  # the transaction begun before the reload completes after it
            assert idle_client.execute("SELECT 2").fetchone() == (2,)
            with psycopg.connect(console, autocommit=True) as conn:
                config = {row[0]: row[1] for row in conn.execute("SHOW CONFIG").fetchall()}
            assert config["query_wait_timeout"] == "45"
            assert config["default_pool_size"] == "15"
            count = idle_client.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE name = %s").format(table), (note,)
            ).fetchone()
            assert count == (1,)
    finally:
        _cleanup(started)


def test_a_config_the_binary_rejects_fails_to_start_with_its_own_error(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str]
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="dbctl-test-pgbouncer-"))
    server = PgBouncerServer(directory)
    try:
        # Valid to the renderer (an absolute path), but the file does not exist: pgbouncer refuses to start.
        missing = ClientTls(
            sslmode="require", key_file=f"{directory}/missing.key", cert_file=f"{directory}/missing.crt"
        )
        broken = server.config(**{**base_settings(pg_cluster, database, free_port()), "client_tls": missing})
        with pytest.raises(PgBouncerServerError, match="exited with code") as caught:
            server.start(broken, pooled(verifiers))
        assert "TLS setup failed" in str(caught.value)  # pgbouncer's own words
        assert not server.is_running()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_config_rendered_for_a_newer_version_is_caught_by_the_binary(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="dbctl-test-pgbouncer-"))
    server = PgBouncerServer(directory)
    try:
        for_121 = server.config(**base_settings(pg_cluster, database, free_port()), version=(1, 21))
        if server.version < (1, 21):
            # max_prepared_statements is unknown to this binary: it refuses the file, with its own message.
            with pytest.raises(
                PgBouncerServerError, match="unknown parameter: pgbouncer/max_prepared_statements"
            ):
                server.start(for_121, pooled(verifiers))
            assert not server.is_running()
        else:
            server.start(for_121, pooled(verifiers))
            console = make_conninfo(
                host="127.0.0.1",
                port=str(for_121.listen_port),
                user=login_user(names.MONITOR_ROLE),
                password=role_passwords[names.MONITOR_ROLE],
                dbname="pgbouncer",
                sslmode="require",
            )
            with psycopg.connect(console, autocommit=True) as conn:
                config = {row[0]: row[1] for row in conn.execute("SHOW CONFIG").fetchall()}
            assert config["max_prepared_statements"] == "200"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_rejected_reload_is_reported_and_the_previous_config_restored(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    started = _start(pg_cluster, database, verifiers)
    try:
        # model_copy skips validation: a value the renderer would refuse, so only the binary can catch it.
        bogus = started.config.model_copy(update={"pool_mode": "sometimes"})
        with pytest.raises(
            PgBouncerServerError, match='invalid value "sometimes" for parameter pool_mode'
        ) as caught:
            started.server.reload(bogus, pooled(verifiers))
        assert "restored the previous config" in str(caught.value)
        assert started.server.is_running()
        with psycopg.connect(started.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE])) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        _cleanup(started)


def test_the_binary_is_production_s_version() -> None:
    """./dev builds production's PgBouncer when the system's is older, and dbctl prefers that build."""
    binary = find_pgbouncer()
    assert detect_version(binary) >= parse_version(PgBouncerSettings().version), binary


def test_prepared_statements_survive_the_transaction_pool_across_server_connections(
    bouncer: Bouncer, role_passwords: dict[str, str]
) -> None:
    """PgBouncer >= 1.21 with max_prepared_statements (Prisma without pgbouncer=true): a statement the client
    prepared on one server connection runs on another one in a later transaction."""
    if bouncer.server.version < PREPARED_STATEMENTS_SINCE:
        pytest.fail(f"PgBouncer {bouncer.server.version} predates prepared statements in transaction mode")
    app = bouncer.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE])
    text = sql.SQL("SELECT pg_backend_pid(), count(*) FROM {} WHERE email = %s")
    query = text.format(sql.Identifier(TABLE))
    with psycopg.connect(app, prepare_threshold=0) as client, psycopg.connect(app) as other:
        with client.transaction():
            first = client.execute(query, ("nobody@x",)).fetchone()
        assert first is not None
        with other.transaction():
            # Take the server connection the client just released, so its next transaction gets another.
            taken = other.execute("SELECT pg_backend_pid()").fetchone()
            assert taken is not None
            with client.transaction():
                second = client.execute(query, ("nobody@x",)).fetchone()
                prepared = client.execute(
                    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                    ("%WHERE email = $1",),
                ).fetchone()
    assert second is not None
    assert second[0] != first[0]  # a different server connection ...
    assert second[1] == first[1] == 0  # ... ran the same prepared statement
    assert prepared == (1,)  # PgBouncer prepared it there for us


def test_a_binary_the_service_user_cannot_reach_runs_from_a_copy(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    """A checkout under a 0700 directory (mktemp -d, /root): as root, pgbouncer runs from a staged copy."""
    hidden = Path(tempfile.mkdtemp(prefix="dbctl-test-0700-"))  # mkdtemp makes it 0700
    (hidden / "bin").mkdir()
    binary = hidden / "bin" / "pgbouncer"
    shutil.copy2(find_pgbouncer(), binary)
    directory = Path(tempfile.mkdtemp(prefix="dbctl-test-pgbouncer-"))
    server = PgBouncerServer(directory, binary=binary)
    config = server.config(**base_settings(pg_cluster, database, free_port()))
    try:
        server.start(config, pooled(verifiers))
        assert server.process is not None
        running = Path(f"/proc/{server.process.pid}/exe").resolve()
        assert (running != binary) is (os.geteuid() == 0)
        assert running.read_bytes() == binary.read_bytes()
        app = Bouncer(server, config, pg_cluster).conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE])
        with psycopg.connect(app) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (names.APP_ROLE,)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(hidden, ignore_errors=True)
        if os.geteuid() == 0:
            for staged in (Path(pwd.getpwnam("postgres").pw_dir) / "dbctl-bin").glob(f"{hidden.name}-*"):
                shutil.rmtree(staged, ignore_errors=True)
