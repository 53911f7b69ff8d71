"""spike_ops.reset_session()'s text: what it must never do, and that the renderer takes its call."""

import re

from dbctl.pgbouncer.config import PgBouncerConfig
from dbctl.schema import maintenance, session_reset


def test_the_body_never_drops_pgbouncer_s_statements_or_plans() -> None:
    body = session_reset.BODY.upper()
    # DEALLOCATE ALL would drop PgBouncer's protocol-level statements behind its back; DISCARD ALL is refused
    # inside a function; DISCARD PLANS would throw away the plans the kept statements are for.
    for forbidden in ("DEALLOCATE ALL", "DISCARD ALL", "DISCARD PLANS"):
        assert forbidden not in body
    assert "WHERE S.FROM_SQL" in body  # only SQL-level PREPAREs are deallocated


def test_every_function_the_body_calls_is_schema_qualified() -> None:
    """A client's `SET search_path = evil, pg_catalog` must not redirect a call made during the reset."""
    calls = re.findall(r"([A-Za-z_.]+)\(", session_reset.BODY)
    assert calls and all(call.startswith("pg_catalog.") for call in calls), calls
    assert "pg_catalog.pg_prepared_statements" in session_reset.BODY


def test_the_reset_query_lives_in_the_maintenance_schema_and_the_renderer_accepts_it() -> None:
    assert f"CALL {maintenance.SCHEMA}.reset_session()" == session_reset.CALL
    # The call, and on any failure the end of the server's session (PgBouncer ignores a failing reset).
    assert session_reset.RESET_QUERY.startswith(f"DO $$BEGIN {session_reset.CALL}; EXCEPTION WHEN OTHERS")
    assert "pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid())" in session_reset.RESET_QUERY
    field = PgBouncerConfig.model_fields["server_reset_query"]
    assert field.default == session_reset.RESET_QUERY
