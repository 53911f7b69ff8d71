"""Whether a migration left spike_owner: the runner checks it before finishing the history row."""

from __future__ import annotations

import psycopg

from dbctl.core import names

Conn = psycopg.Connection[tuple[object, ...]]


def escaped_owner(conn: Conn, *, in_transaction: bool) -> str | None:
    """Why the migration left spike_owner (RESET ROLE / SET ROLE), or None.

    Checked after a transactional migration's SQL, before its history row is finished: the session must still
    be spike_owner, and nothing this transaction created or changed may belong to another role (a
    `RESET ROLE; CREATE …; SET ROLE spike_owner` round trip). A no-transaction migration is checked after each
    statement (current role only). Objects of an extension are left out: a trusted extension's belong to the
    bootstrap superuser by design.
    """
    row = conn.execute("SELECT current_user").fetchone()
    user = str(row[0]) if row else ""
    if user != names.OWNER_ROLE:
        return (
            f"left role {names.OWNER_ROLE} (it runs as {user} now: RESET ROLE or SET ROLE in the file); "
            f"objects it creates would not belong to {names.OWNER_ROLE}. Remove that statement"
        )
    if not in_transaction:
        return None
    owner = names.OWNER_ROLE
    foreign = conn.execute(
        "SELECT kind || ' ' || name || ' (owner ' || owner || ')' FROM ("
        " SELECT 'relation' AS kind, c.oid, c.oid::regclass::text AS name,"
        "  pg_get_userbyid(c.relowner) AS owner"
        "  FROM pg_class c WHERE c.xmin = pg_current_xact_id()::xid AND c.relowner <> %(owner)s::regrole"
        " UNION ALL SELECT 'type', t.oid, t.oid::regtype::text, pg_get_userbyid(t.typowner)"
        "  FROM pg_type t WHERE t.xmin = pg_current_xact_id()::xid AND t.typowner <> %(owner)s::regrole"
        " UNION ALL SELECT 'function', p.oid, p.oid::regprocedure::text, pg_get_userbyid(p.proowner)"
        "  FROM pg_proc p WHERE p.xmin = pg_current_xact_id()::xid AND p.proowner <> %(owner)s::regrole"
        " UNION ALL SELECT 'schema', n.oid, n.nspname::text, pg_get_userbyid(n.nspowner)"
        "  FROM pg_namespace n WHERE n.xmin = pg_current_xact_id()::xid AND n.nspowner <> %(owner)s::regrole"
        ") f WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = f.oid AND d.deptype = 'e')"
        " ORDER BY 1 LIMIT 3",
        {"owner": owner},
    ).fetchall()
    if foreign:
        return (
            f"escaped role {owner} (RESET ROLE or SET ROLE in the file): it made "
            f"{', '.join(str(r[0]) for r in foreign)}, which would not belong to {owner}. "
            "Remove that statement"
        )
    return None
