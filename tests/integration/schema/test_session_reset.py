"""spike_ops.reset_session() on each PostgreSQL major here (15 and the wheel's 18), without PgBouncer.

What PostgreSQL allows inside a routine decides what the reset can do: every statement in its body must run
there and its effect must outlast the call. Here one session leaves every state of issue 24's list behind
(as the admin, after a SET ROLE), calls the procedure as PgBouncer does (a simple-protocol CALL), and finds
each gone, while a protocol-level prepared statement (PgBouncer's kind) and application_name stay.
"""

from __future__ import annotations

import psycopg
import pytest

from dbctl.schema import session_reset
from tests.integration.conftest import FreshDatabase

pytestmark = [pytest.mark.integration, pytest.mark.all_majors]

STATE = """
SELECT current_user::text, pg_catalog.current_setting('statement_timeout'),
       pg_catalog.current_setting('search_path'), pg_catalog.current_setting('default_transaction_isolation'),
       pg_catalog.current_setting('app.x', true), pg_catalog.current_setting('application_name'),
       (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql),
       (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql),
       (SELECT count(*) FROM pg_catalog.pg_cursors),
       (SELECT count(*) FROM pg_catalog.pg_listening_channels()),
       (SELECT count(*) FROM pg_catalog.pg_locks
        WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()),
       pg_catalog.to_regclass('pg_temp.left_behind') IS NOT NULL
"""


def test_the_reset_closes_every_state_and_keeps_protocol_statements(fresh_db: FreshDatabase) -> None:
    with psycopg.connect(fresh_db.admin_conninfo, autocommit=True) as conn:
        changes = session_reset.plan(conn)
        assert changes
        session_reset.apply(conn, changes)
        assert session_reset.plan(conn) == []  # converged: no drift
        admin, initial_timeout = conn.execute(
            "SELECT current_user::text, current_setting('statement_timeout')"
        ).fetchone() or ("", "")
        other_role = conn.execute(
            "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
            " WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) LIMIT 1"
        ).fetchone()
        assert other_role is not None  # the admin is a member of rds_superuser
        conn.execute("SET application_name = 'kept'")
        for statement in (
            "SET statement_timeout = 4242",
            "SET search_path = pg_catalog",
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SELECT set_config('app.x', 'leaked', false)",
            "PREPARE left_behind AS SELECT 1",
            "LISTEN left_behind",
            "SELECT pg_advisory_lock(77)",
            "CREATE TEMP TABLE left_behind (x int)",
        ):
            conn.execute(statement)
        with conn.transaction():
            conn.execute("DECLARE left_behind CURSOR WITH HOLD FOR SELECT 1")
        conn.pgconn.prepare(b"PGBOUNCER_1", b"SELECT 1")  # protocol-level, as PgBouncer prepares
        conn.execute(f'SET ROLE "{other_role[0]}"')
        before = conn.execute(STATE).fetchone()
        assert before == (
            other_role[0],
            "4242ms",
            "pg_catalog",
            "serializable",
            "leaked",
            "kept",
            1,
            1,
            1,
            1,
            1,
            True,
        )
        result = conn.pgconn.exec_(session_reset.RESET_QUERY.encode())
        assert result.status == psycopg.pq.ExecStatus.COMMAND_OK, result.error_message
        after = conn.execute(STATE).fetchone()
    assert after == (
        admin,
        initial_timeout,
        '"$user", public',
        "read committed",
        "",
        "kept",
        0,
        1,
        0,
        0,
        0,
        False,
    )
