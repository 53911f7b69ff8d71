"""PgBouncer's server_reset_query as one procedure call: reset what leaks, keep what PgBouncer caches.

``CALL spike_ops.reset_session()``, wrapped to fail closed (``RESET_QUERY``), runs after every pooled
transaction (``server_reset_query = RESET_QUERY``, ``server_reset_query_always = 1``; dbctl.pgbouncer.config
renders it for the AWS hosts and the local stack).
It is ``DISCARD ALL`` without the two parts that cost the app its statement cache:

- ``DISCARD ALL`` cannot run inside a function (PostgreSQL 15 and 18: "DISCARD ALL cannot be executed from
  a function"), and PgBouncer >= 1.21 forgets a server's protocol-level prepared statements whenever it sees
  the command tag ``DISCARD ALL`` or ``DEALLOCATE ALL`` (src/server.c), so every transaction parsed again;
- so the procedure (a function would do; CALL costs less than SELECT) closes cursors (``CLOSE ALL``,
  through EXECUTE: PL/pgSQL has no static form of it), resets the role (``RESET ROLE``: back to the login
  user's ``role`` setting) and every setting to the login user's defaults (``RESET ALL``), ``UNLISTEN *``,
  releases session advisory locks, deallocates only the SQL-level ``PREPARE``d statements
  (``pg_prepared_statements.from_sql``: PgBouncer's own are protocol-level and stay), and drops temp tables
  and sequence state (``DISCARD TEMP``, ``DISCARD SEQUENCES``). It skips ``DISCARD PLANS``: the cached plans
  are what the kept statements are for, and PostgreSQL replans a plan whose search_path or objects changed;
- ``application_name`` is set back to its value before ``RESET ALL`` in the same transaction, so the server
  sends no ParameterStatus and PgBouncer does not send a ``SET application_name`` before the next
  transaction. That is not a leak: PgBouncer tracks application_name per client and sets the server's to
  the next client's own before its transaction whenever they differ.

SECURITY INVOKER and no SET clause (a routine's SET clause would be restored on exit, undoing the reset):
every name in the body is schema-qualified, so a client's ``SET search_path`` cannot redirect a call. The
procedure runs as whatever role the previous client left current (``SET ROLE spike_rw``, or a predefined role
a monitor user may SET), so PUBLIC gets USAGE on the schema and EXECUTE on the procedure; it can only reset
the caller's own session. Should the call fail anyway, ``RESET_QUERY`` ends that server session (PgBouncer
itself would keep it: it ignores a failing reset): state never passes on, the next client pays a new server
login.

``plan(conn)`` returns the ``roles.Change``s that create or repair it (dbctl.roles' shape: plan, print,
apply); ``dbctl status`` reports a non-empty plan as drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import psycopg
from psycopg import sql

from dbctl.core import roles
from dbctl.schema import maintenance

SCHEMA: Final = maintenance.SCHEMA
FUNCTION: Final = "reset_session"
# CALL, not SELECT: a utility statement, no plan and no result row; 20 of the call's ~80 µs here.
CALL: Final = f"CALL {SCHEMA}.{FUNCTION}()"
# Fail closed. PgBouncer 1.24.1 ignores an error from server_reset_query and keeps the server connection
# (src/server.c: the ErrorResponse is only logged; ReadyForQuery then releases the server to the pool), so a
# missing procedure (a stack whose hosts have the new setting before `dbctl migrate` created it), one the
# caller may not run, or a statement_timeout a client left that cancels it, would pass every leak on. On any
# such failure the block ends the server's own session instead, and PgBouncer opens a fresh one for the
# next client. SET ROLE NONE first: only the login user itself may signal its backend, and RESET ROLE would
# return to the login user's `role` setting (its group role), which may not. The anonymous block costs
# ~45 µs more than the bare CALL, measured direct here (docs/benchmarks.md).
RESET_QUERY: Final = (
    f"DO $$BEGIN {CALL}; EXCEPTION WHEN OTHERS OR query_canceled THEN SET ROLE NONE; "
    "PERFORM pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid()); END$$"
)

BODY: Final = """
DECLARE
    app text := pg_catalog.current_setting('application_name');
    statement text;
BEGIN
    EXECUTE 'CLOSE ALL';
    RESET ROLE;
    RESET ALL;
    PERFORM pg_catalog.set_config('application_name', app, false), pg_catalog.pg_advisory_unlock_all();
    UNLISTEN *;
    FOR statement IN SELECT s.name FROM pg_catalog.pg_prepared_statements s WHERE s.from_sql LOOP
        EXECUTE pg_catalog.format('DEALLOCATE %I', statement);
    END LOOP;
    DISCARD TEMP;
    DISCARD SEQUENCES;
END
"""

Conn = psycopg.Connection[tuple[object, ...]]


def _one(conn: Conn, query: str, *params: object) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def plan(conn: Conn) -> list[roles.Change]:
    """What brings the schema, the procedure and its grants to the state above (empty: no drift)."""
    changes: list[roles.Change] = []
    schema = sql.Identifier(SCHEMA)
    routine = sql.Identifier(SCHEMA, FUNCTION)
    schema_exists = _one(conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", SCHEMA)
    if not schema_exists:
        changes.append(
            roles.Change(f"create schema {SCHEMA}", sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        )
    if not schema_exists or not _one(conn, "SELECT has_schema_privilege('public', %s, 'USAGE')", SCHEMA):
        changes.append(
            roles.Change(
                f"grant usage on schema {SCHEMA} to PUBLIC (whatever role a pooled session left current)",
                sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(schema),
            )
        )
    found = (
        conn.execute(
            "SELECT p.prosrc, p.prosecdef, p.proconfig IS NULL, l.lanname, p.prokind FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang"
            " WHERE n.nspname = %s AND p.proname = %s AND p.pronargs = 0",
            (SCHEMA, FUNCTION),
        ).fetchone()
        if schema_exists
        else None
    )
    if found is not None and found[4] != "p":
        # CREATE OR REPLACE cannot turn a function into a procedure.
        changes.append(
            roles.Change(
                f"drop function {SCHEMA}.{FUNCTION}() (a procedure replaces it)",
                sql.SQL("DROP FUNCTION {}()").format(routine),
            )
        )
        found = None
    if found is None or tuple(found) != (BODY, False, True, "plpgsql", "p"):
        changes.append(
            roles.Change(
                f"create procedure {SCHEMA}.{FUNCTION}() (PgBouncer's server_reset_query)",
                sql.SQL("CREATE OR REPLACE PROCEDURE {}() LANGUAGE plpgsql SECURITY INVOKER AS {}").format(
                    routine, sql.Literal(BODY)
                ),
            )
        )
    if found is None or not _one(
        conn, "SELECT has_function_privilege('public', %s, 'EXECUTE')", f"{SCHEMA}.{FUNCTION}()"
    ):
        changes.append(
            roles.Change(
                f"grant execute on {SCHEMA}.{FUNCTION}() to PUBLIC",
                sql.SQL("GRANT EXECUTE ON PROCEDURE {}() TO PUBLIC").format(routine),
            )
        )
    return changes


def apply(conn: Conn, changes: Iterable[roles.Change]) -> None:
    """Run the changes in one transaction (roles.apply's)."""
    roles.apply(conn, changes)
