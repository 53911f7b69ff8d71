"""The session reset (issue 24) through the real PgBouncer and PostgreSQL: what leaks, what stays cached.

Pools of one server connection (default_pool_size = 1), so client B provably gets client A's backend
(pg_backend_pid()). Three resets: the rendered one (CALL spike_ops.reset_session()), DISCARD ALL, and none.
The leak matrix must come out closed for the first two and open for none (which proves each row's setup really
leaves the state behind); PgBouncer's prepared statements must stay on the server for the rendered reset and
none, and are gone after DISCARD ALL (PgBouncer forgets them on that command tag). Then PgBouncer's own
counters: a Prisma-shaped transaction parses nothing on the server after warm-up, and application_name is
not SET again before every transaction. The assertions count things; none measures time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from dbctl.core import names
from dbctl.local.lifecycle import throwaway_stack
from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.postgres.osproc import HOST
from dbctl.schema import deploy, maintenance, session_reset
from tests.integration.conftest import scratch_database
from tests.integration.pgbouncer.test_pgbouncer import Bouncer, _cleanup, _start

pytestmark = pytest.mark.integration

# name: PgBouncerConfig overrides (the rendered default is the new reset)
RESETS: dict[str, dict[str, object]] = {
    "reset_session": {},
    "discard_all": {"server_reset_query": "DISCARD ALL"},
    "none": {"server_reset_query_always": False},
}
ONE_CONNECTION = {"default_pool_size": 1, "min_pool_size": 0, "reserve_pool_size": 0}
KEPT = "PgBouncer's prepared statements kept"


@dataclass(frozen=True)
class Pool:
    role: str
    database: str
    switch_to: str  # a role the login user may SET ROLE to
    timeout: str  # the role's statement_timeout (dbctl.core.roles)
    read_only: str  # the role's default_transaction_read_only
    lock: int  # an advisory lock key of its own: without a reset the other pool's lock stays held


POOLS = {
    "app": Pool(names.APP_ROLE, names.DATABASE_NAME, names.READWRITE_ROLE, "30s", "off", 2424),
    "read": Pool(
        names.READONLY_ROLE, names.READ_POOL_DATABASE, names.READONLY_GROUP_ROLE, "5min", "on", 2425
    ),
}

Cur = psycopg.Connection[tuple[object, ...]]


def _value(conn: Cur, query: str) -> object:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _rows(pool: Pool) -> dict[str, tuple[str, Callable[[Cur], bool]]]:
    """Each state: (what client A runs, whether client B still sees it)."""
    flipped = "on" if pool.read_only == "off" else "off"
    return {
        "statement_timeout": (
            "SET statement_timeout = 0",
            lambda b: _value(b, "SHOW statement_timeout") != pool.timeout,
        ),
        "set_config": (
            "SELECT set_config('app.x', 'leaked', false)",
            lambda b: _value(b, "SELECT current_setting('app.x', true)") == "leaked",
        ),
        "search_path": (
            "SET search_path = pg_catalog",
            lambda b: _value(b, "SHOW search_path") != '"$user", public',
        ),
        "isolation": (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            lambda b: _value(b, "SHOW default_transaction_isolation") != "read committed",
        ),
        "read_only": (
            f"SET default_transaction_read_only = {flipped}",
            lambda b: _value(b, "SHOW default_transaction_read_only") != pool.read_only,
        ),
        "advisory_lock": (
            f"SELECT pg_advisory_lock({pool.lock})",
            lambda b: bool(
                _value(
                    b, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                )
            ),
        ),
        "listen": (
            "LISTEN left_behind",
            lambda b: bool(_value(b, "SELECT count(*) FROM pg_listening_channels()")),
        ),
        "sql_prepare": (
            "PREPARE left_behind AS SELECT 1",
            lambda b: bool(_value(b, "SELECT count(*) FROM pg_prepared_statements WHERE from_sql")),
        ),
        "with_hold_cursor": (
            "DECLARE left_behind CURSOR WITH HOLD FOR SELECT 1",
            lambda b: bool(_value(b, "SELECT count(*) FROM pg_cursors")),
        ),
        "application_name": (
            "SET application_name = 'client-a'",
            lambda b: _value(b, "SHOW application_name") != "client-b",
        ),
        # Last: everything above runs as the pool's role.
        "set_role": (f"SET ROLE {pool.switch_to}", lambda b: _value(b, "SELECT current_user") != pool.role),
    }


@pytest.fixture(scope="module")
def database(pg_cluster: Cluster, verifiers: dict[str, str]) -> Iterator[str]:
    with scratch_database(pg_cluster, "reset_") as name:
        report = deploy.run_migrate(pg_cluster.admin_url(name), verifiers)
        assert any("reset_session" in change for change in report.maintenance)  # the step created it
        yield name


@pytest.fixture(scope="module", params=list(RESETS))
def bouncer(
    request: pytest.FixtureRequest, pg_cluster: Cluster, database: str, verifiers: dict[str, str]
) -> Iterator[tuple[str, Bouncer]]:
    started = _start(pg_cluster, database, verifiers, **ONE_CONNECTION, **RESETS[request.param])
    yield request.param, started
    _cleanup(started)


def _connect(bouncer: Bouncer, pool: Pool, password: str, application_name: str) -> Cur:
    conninfo = bouncer.conninfo(pool.role, password, pool.database) + f" application_name={application_name}"
    return psycopg.connect(conninfo, autocommit=True)


@pytest.mark.parametrize("pool_name", list(POOLS))
def test_the_leak_matrix_through_a_one_connection_pool(
    bouncer: tuple[str, Bouncer], pool_name: str, role_passwords: dict[str, str]
) -> None:
    reset, pgbouncer = bouncer
    pool = POOLS[pool_name]
    rows = _rows(pool)
    password = role_passwords[pool.role]
    with _connect(pgbouncer, pool, password, "client-a") as a, a.transaction():
        for setup, _ in rows.values():
            a.execute(setup)
        # A protocol-level named statement (what Prisma's node-postgres and pgbench -M prepared send):
        # PgBouncer prepares it on the server under its own name.
        assert a.execute("SELECT %s::int", (1,), prepare=True).fetchone() == (1,)
        backend = _value(a, "SELECT pg_backend_pid()")
    with _connect(pgbouncer, pool, password, "client-b") as b:
        assert _value(b, "SELECT pg_backend_pid()") == backend  # B got A's server connection
        seen = {name: leaked(b) for name, (_, leaked) in rows.items()}
        seen[KEPT] = bool(_value(b, "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql"))
        assert _value(b, "SELECT pg_backend_pid()") == backend
    # PgBouncer sets each client's own application_name, with or without a reset.
    leaks = reset == "none"
    expected = {name: leaks and name != "application_name" for name in rows}
    expected[KEPT] = reset != "discard_all"
    assert seen == expected


def _stats(bouncer: Bouncer, password: str, database: str) -> dict[str, int]:
    console = bouncer.conninfo(names.MONITOR_ROLE, password, "pgbouncer")
    with psycopg.connect(console, autocommit=True) as conn:
        cur = conn.execute("SHOW STATS")
        columns = [c.name for c in cur.description or []]
        for row in cur.fetchall():
            if row[columns.index("database")] == database:
                return {c: int(str(v)) for c, v in zip(columns, row, strict=True) if c.startswith("total_")}
    raise AssertionError(f"SHOW STATS has no row for {database}")


@pytest.fixture(scope="module")
def logged_cluster(verifiers: dict[str, str]) -> Iterator[Cluster]:
    """A cluster of its own that logs every statement: the log shows what PgBouncer sends the server."""
    with throwaway_cluster(
        "dbctl-test-reset-", log_statement="all", pgstattuple_schema=maintenance.SCHEMA
    ) as cluster:
        deploy.run_migrate(cluster.admin_url(names.DATABASE_NAME), verifiers)
        yield cluster


PRISMA_SHAPED = ('SELECT id, email FROM "User" WHERE id = %s', 'SELECT id, name FROM "User" WHERE id = %s')


@pytest.mark.parametrize("reset", ["reset_session", "discard_all"])
def test_a_prisma_shaped_transaction_parses_nothing_on_the_server_after_warm_up(
    logged_cluster: Cluster, verifiers: dict[str, str], role_passwords: dict[str, str], reset: str
) -> None:
    """BEGIN, three reads by primary key with named statements, COMMIT; two clients alternate on one server
    connection. With DISCARD ALL every statement was parsed again in every transaction."""
    pgbouncer = _start(logged_cluster, names.DATABASE_NAME, verifiers, **ONE_CONNECTION, **RESETS[reset])
    pool = POOLS["app"]
    password = role_passwords[pool.role]
    statements = (*PRISMA_SHAPED, 'SELECT count(*) FROM "User" WHERE id = %s')
    transactions = 20
    try:
        with (
            _connect(pgbouncer, pool, password, "app-1") as one,
            _connect(pgbouncer, pool, password, "app-1") as two,
        ):

            def run(rounds: int) -> None:
                for _ in range(rounds):
                    for client in (one, two):
                        with client.transaction():
                            for text in statements:
                                client.execute(text, ("nobody",), prepare=True)

            run(2)  # warm-up: each client's statements prepared once on the server
            log_before = logged_cluster.log_file.read_text(errors="replace")
            before = _stats(pgbouncer, role_passwords[names.MONITOR_ROLE], pool.database)
            run(transactions // 2)
            after = _stats(pgbouncer, role_passwords[names.MONITOR_ROLE], pool.database)
            log = logged_cluster.log_file.read_text(errors="replace")[len(log_before) :]
    finally:
        _cleanup(pgbouncer)
    delta = {k: after[k] - before[k] for k in after}
    assert delta["total_xact_count"] >= transactions  # the transactions ran (PgBouncer may count the resets)
    assert delta["total_bind_count"] == transactions * len(statements)
    assert delta["total_client_parse_count"] == 0  # the clients had prepared them during the warm-up
    sets = log.count("SET application_name")
    resets = log.count(session_reset.RESET_QUERY if reset == "reset_session" else "DISCARD ALL")
    assert resets >= transactions
    if reset == "reset_session":
        assert delta["total_server_parse_count"] == 0
        assert sets == 0  # application_name survived the reset: no SET before each transaction
    else:
        assert delta["total_server_parse_count"] == transactions * len(statements)
        assert sets >= transactions


def test_the_post_deploy_step_reports_a_changed_reset_function_as_drift_and_repairs_it(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str]
) -> None:
    url = pg_cluster.admin_url(database)
    assert not any("reset_session" in c for c in deploy.status(url, verifiers).maintenance)
    with psycopg.connect(pg_cluster.admin_conninfo(database), autocommit=True) as conn:
        conn.execute("CREATE OR REPLACE PROCEDURE spike_ops.reset_session() LANGUAGE sql AS 'SELECT 1'")
        conn.execute("REVOKE EXECUTE ON PROCEDURE spike_ops.reset_session() FROM PUBLIC")
    drift = [c for c in deploy.status(url, verifiers).maintenance if "reset_session" in c]
    assert len(drift) == 2, drift  # the body and the grant
    deploy.run_migrate(url, verifiers)
    assert not any("reset_session" in c for c in deploy.status(url, verifiers).maintenance)
    with psycopg.connect(pg_cluster.admin_conninfo(database), autocommit=True) as conn:
        assert conn.execute(
            "SELECT prosrc = %s, NOT prosecdef, prokind FROM pg_proc WHERE oid = %s::regprocedure",
            (session_reset.BODY, "spike_ops.reset_session()"),
        ).fetchone() == (True, True, "p")


BROKEN = {
    "missing": "DROP PROCEDURE spike_ops.reset_session()",
    "failing": "CREATE OR REPLACE PROCEDURE spike_ops.reset_session() LANGUAGE plpgsql"
    " AS $$BEGIN RAISE EXCEPTION 'reset broken'; END$$",
    "not granted": "REVOKE EXECUTE ON PROCEDURE spike_ops.reset_session() FROM PUBLIC",
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_reset_that_fails_ends_the_server_session_so_nothing_passes_on(
    pg_cluster: Cluster, verifiers: dict[str, str], role_passwords: dict[str, str], broken: str
) -> None:
    """PgBouncer 1.24.1 ignores an error from server_reset_query and hands the same server connection to
    the next client. A missing procedure (an upgraded stack between `pulumi up` and `dbctl migrate`), a
    failing one, or one the pooled role may not run must not pass client A's session state to client B:
    the rendered reset ends that server session instead, and no client sees an error. The next migrate
    repairs the procedure and one server connection serves everyone again."""
    pool = POOLS["app"]
    password = role_passwords[pool.role]
    with scratch_database(pg_cluster, "reset_broken_", verifiers) as name:
        url = pg_cluster.admin_url(name)
        with psycopg.connect(pg_cluster.admin_conninfo(name), autocommit=True) as conn:
            conn.execute(BROKEN[broken])
        pgbouncer = _start(pg_cluster, name, verifiers, **ONE_CONNECTION)

        def clients() -> tuple[list[object], list[object]]:
            pids, timeouts = [], []
            for client in ("client-a", "client-b", "client-c"):
                with _connect(pgbouncer, pool, password, client) as conn:
                    pids.append(_value(conn, "SELECT pg_backend_pid()"))
                    timeouts.append(_value(conn, "SHOW statement_timeout"))
                    assert _value(conn, 'SELECT count(*) FROM "User"') == 0
                    with conn.transaction():
                        conn.execute("SET statement_timeout = 0")  # the leak the reset must close
            return pids, timeouts

        try:
            pids, timeouts = clients()
            assert timeouts == [pool.timeout] * 3  # nothing passed on
            assert len(set(pids)) == 3  # each failed reset ended its server session
            assert any("reset_session" in c for c in deploy.status(url, verifiers).maintenance)  # drift said
            deploy.run_migrate(url, verifiers)
            pids, timeouts = clients()
            assert timeouts == [pool.timeout] * 3
            assert len(set(pids)) == 1  # the reset works again: one server connection serves all three
        finally:
            _cleanup(pgbouncer)


def test_options_apply_what_pgbouncer_tracks_and_refuse_the_rest_by_name(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    """`options` was in ignore_startup_parameters: `-c statement_timeout=5s` connected and ran with none."""
    pgbouncer = _start(pg_cluster, database, verifiers)
    pool = POOLS["app"]
    conninfo = pgbouncer.conninfo(pool.role, role_passwords[pool.role], pool.database)
    try:
        with pytest.raises(
            psycopg.OperationalError, match="unsupported startup parameter in options: statement_timeout"
        ):
            psycopg.connect(conninfo, options="-c statement_timeout=5s")
        # Malformed values (no flag, no '=', a trailing backslash, longer than PgBouncer's 400-byte buffer)
        # are refused too, and PgBouncer 1.24.1 keeps serving (checked below: a hang would time out).
        for malformed in ("not-a-flag", "-c", "-c a", "-c a=b\\", "-c application_name=" + "x" * 500 + " y"):
            with pytest.raises(psycopg.OperationalError, match=r"unsupported (options )?startup parameter"):
                psycopg.connect(conninfo, options=malformed)
        # Tracked parameters are applied per client; Prisma 6's search_path is dropped (public: the default).
        with psycopg.connect(
            conninfo, options="-c TimeZone=Asia/Tokyo -c search_path=public -c extra_float_digits=2"
        ) as conn:
            assert _value(conn, "SHOW TimeZone") == "Asia/Tokyo"
            assert _value(conn, "SHOW search_path") == '"$user", public'
        # The refusals cost PgBouncer nothing: it still serves.
        with psycopg.connect(conninfo) as conn:
            assert _value(conn, "SELECT current_user") == pool.role
    finally:
        _cleanup(pgbouncer)


def test_the_reset_runs_on_a_hot_standby_behind_the_read_pool() -> None:
    """The read pool's server is a replica in recovery: CALL, RESET, UNLISTEN, DEALLOCATE must run there."""
    with throwaway_stack("dbctl-test-reset-replica-", replica=True) as stack:
        reader = stack.creds[names.READONLY_ROLE]
        conninfo = make_conninfo(
            host=HOST,
            port=str(stack.state.pgbouncer_port),
            dbname=names.READ_POOL_DATABASE,
            user=reader.username,
            password=reader.password,
            sslmode="verify-full",
            sslrootcert=str(stack.authority.cert_file),
        )
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert _value(conn, "SELECT pg_is_in_recovery()") is True
            with conn.transaction():
                conn.execute("SET statement_timeout = 0")
                conn.execute("PREPARE left_behind AS SELECT 1")
                backend = _value(conn, "SELECT pg_backend_pid()")
            with conn.transaction():  # the next transaction, after the reset
                assert _value(conn, "SELECT pg_backend_pid()") == backend  # min_pool_size: still warm
                assert _value(conn, "SHOW statement_timeout") == POOLS["read"].timeout
                assert _value(conn, "SELECT count(*) FROM pg_prepared_statements") == 0
