"""The schema migration runner, compatible with Prisma Migrate's layout and history table.

- ``load_migrations(directory)``: ``<name>/migration.sql`` in name order; ``checksum`` is the sha256 hex of
  the file's bytes, as Prisma computes it.
- ``advisory_lock(conn, timeout)``: the session advisory lock 72707369 that ``prisma migrate deploy`` takes
  too, polled with pg_try_advisory_lock until the timeout. An idle session of a pooled role (which never runs
  migrations) holding it is ended with pg_terminate_backend, and said so.
- ``plan(conn, migrations) -> Plan``: applied, pending and failed migrations. Raises ``DbctlError`` (changing
  nothing) on a failed migration that is not resolved, or on a checksum mismatch.
- ``apply_one(conn, migration)``: one migration, as ``spike_owner``, with ``lock_timeout``; in a transaction
  together with its history row unless the file's first line is ``-- dbctl:no-transaction``. On failure the
  transaction rolls back, a history row records the error in ``logs`` (finished_at NULL, as Prisma does) and
  ``MigrationFailed`` is raised.
- ``transaction_sql(migration)``: the SQL that runs in that transaction. PostgreSQL's own parser (pglast)
  finds top-level transaction control: the ``BEGIN;`` / ``COMMIT;`` that Prisma writes around some steps
  (e.g. recreating an enum) are blanked out, so the whole file stays one transaction (a ``COMMIT`` would
  otherwise keep the statements before it when a later one fails); ROLLBACK, PREPARE TRANSACTION and the
  like, and SQL the parser rejects, are refused by ``plan`` before anything is applied.
- ``resolve_rolled_back(conn, name)``: ``prisma migrate resolve --rolled-back`` (sets rolled_back_at).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pglast import ast, parser
from pglast.enums.parsenodes import TransactionStmtKind
from psycopg import sql

from dbctl.core import names
from dbctl.core.errors import DbctlError

LOCK_KEY = 72707369  # Prisma Migrate's advisory lock key
HISTORY_TABLE = "_prisma_migrations"
NO_TRANSACTION_MARKER = "-- dbctl:no-transaction"
DEFAULT_LOCK_TIMEOUT = "10s"
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "sql" / "migrations"
_NAME = re.compile(r"^[0-9]{14}_[A-Za-z0-9_]+$")

# Prisma Migrate's own DDL for its history table, verbatim.
HISTORY_DDL = sql.SQL(
    """CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)"""
)

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Migration:
    name: str
    path: Path
    sql_text: str = field(repr=False)
    checksum: str

    @property
    def no_transaction(self) -> bool:
        first = self.sql_text.lstrip().splitlines()[:1]
        return bool(first) and first[0].strip() == NO_TRANSACTION_MARKER


@dataclass(frozen=True)
class Plan:
    applied: list[str]
    pending: list[Migration]
    # (name, first line of logs) of failed migrations not yet resolved; plan() raises when there are any,
    # status() reports them.
    failed: list[tuple[str, str]]
    # Applied migrations that have no directory here (another tool's, or a deleted file): status reports
    # them as drift; migrate goes on, as `prisma migrate deploy` does.
    unknown: list[str] = field(default_factory=list)


class MigrationFailed(DbctlError):
    pass


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    if not directory.is_dir():
        raise DbctlError(f"migrations directory {directory} does not exist")
    migrations = []
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        file = sub / "migration.sql"
        if not file.is_file():
            raise DbctlError(
                f"{sub} has no migration.sql; each migration is <timestamp>_<name>/migration.sql"
            )
        if not _NAME.fullmatch(sub.name):
            raise DbctlError(f"migration directory {sub.name!r} must be named <14-digit timestamp>_<name>")
        data = file.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DbctlError(
                f"{file} is not UTF-8 (byte {exc.start}); save it as UTF-8 (Prisma writes UTF-8)"
            ) from None
        if not _has_sql(text):
            raise DbctlError(
                f"{file} has no SQL (empty, or only comments); once recorded it could never be filled in. "
                "Write the migration, or delete its directory"
            )
        migrations.append(Migration(sub.name, file, text, hashlib.sha256(data).hexdigest()))
    return migrations


def _has_sql(text: str) -> bool:
    """True when text holds more than whitespace, semicolons, `--` and `/* */` comments."""
    without_comments = re.sub(r"--[^\n]*", " ", re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL))
    return bool(without_comments.replace(";", " ").strip())


# The roles that connect through PgBouncer (dbctl.pgbouncer.POOLED_ROLES): none of them ever runs migrations,
# so a lock 72707369 one of them holds is a stray (e.g. `SELECT pg_advisory_lock(72707369)` through a pool,
# which outlives its client on the pooled server connection), not another run.
NOT_MIGRATORS = tuple(user for role in names.ALTERNATING_ROLES for user in (role, *names.login_users(role)))


def _lock_holders(conn: Conn) -> list[tuple[object, ...]]:
    """(pid, user, application_name, backend_start, state) of each session holding the lock here."""
    return conn.execute(
        "SELECT a.pid, a.usename, a.application_name, a.backend_start, a.state"
        " FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (LOCK_KEY,),
    ).fetchall()


def _end_stray_holders(conn: Conn, holders: list[tuple[object, ...]]) -> list[str]:
    """Terminate idle sessions of NOT_MIGRATORS that hold the lock; one line per session ended.

    Only idle ones: their transaction is over and only the pool keeps the session (and the lock) alive. A
    holder inside a transaction is waited for (statement and idle-in-transaction timeouts bound it).
    """
    ended = []
    for pid, user, _app, _since, state in holders:
        if user in NOT_MIGRATORS and state == "idle":
            row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
            if row and row[0]:
                ended.append(
                    f"ended session {pid} of {user}, which held lock {LOCK_KEY} without running a migration"
                )
    return ended


@contextmanager
def advisory_lock(conn: Conn, timeout: float = 60.0, poll: float = 0.1) -> Iterator[list[str]]:
    """Hold Prisma's session advisory lock; wait up to timeout seconds for it.

    Yields the sessions it ended to get it: idle pooled-role sessions holding the key (_end_stray_holders).
    """
    deadline = time.monotonic() + timeout
    ended: list[str] = []
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if row and row[0]:
            break
        holders = _lock_holders(conn)
        try:
            ended += _end_stray_holders(conn, holders)
        except psycopg.errors.InsufficientPrivilege:
            raise DbctlError(
                f"a {'/'.join(NOT_MIGRATORS)} session holds advisory lock {LOCK_KEY} and this admin may not "
                "end it; grant it pg_signal_backend (RDS's master has it), or end that session by hand"
            ) from None
        if time.monotonic() >= deadline:
            who = ""
            if holders:
                pid, user, app, since, _ = holders[0]
                who = f" (pid {pid}, {user}, {app or 'unnamed'}, since {since})"
            raise DbctlError(
                f"another migration run holds advisory lock {LOCK_KEY}{who}; waited {timeout:.0f} s. "
                "Wait for it to finish (or stop it), then run again"
            )
        time.sleep(poll)
    try:
        yield ended
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _history_exists(conn: Conn) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'public."{HISTORY_TABLE}"',)).fetchone()
    return bool(row and row[0])


def ensure_history_table(conn: Conn) -> bool:
    """Create _prisma_migrations as spike_owner if missing; True when it was created.

    spike_owner's default privileges would give the new table to spike_rw and spike_ro; every grant the
    table got is revoked in the same transaction, so no other role can write (or read) it at any moment,
    even when the run fails before its grants step.
    """
    if _history_exists(conn):
        return False
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
        conn.execute(HISTORY_DDL)
        grantees = conn.execute(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"
            " FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s::regclass AND a.grantee <> c.relowner",
            (f'public."{HISTORY_TABLE}"',),
        ).fetchall()
        for (grantee,) in grantees:
            who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(str(grantee))
            conn.execute(
                sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.Identifier("public", HISTORY_TABLE), who)
            )
    return True


def read_plan(conn: Conn, migrations: list[Migration]) -> tuple[Plan, list[str]]:
    """The plan, plus problems (checksum mismatches, unknown applied migrations are fine as Prisma allows)."""
    rows: list[tuple[object, ...]] = []
    if _history_exists(conn):
        rows = conn.execute(
            "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at IS NOT NULL, logs"
            ' FROM "_prisma_migrations" ORDER BY started_at'
        ).fetchall()
    by_name = {m.name: m for m in migrations}
    applied: list[str] = []
    failed: list[tuple[str, str]] = []
    problems: list[str] = []
    for name, checksum, finished, rolled_back, logs in rows:
        name = str(name)
        if rolled_back:
            continue
        if not finished:
            failed.append((name, (str(logs or "").strip().splitlines() or ["(no log)"])[0]))
            continue
        applied.append(name)
        local = by_name.get(name)
        if local is not None and local.checksum != checksum:
            problems.append(
                f"migration {name} was changed after it was applied (checksum {str(checksum)[:12]}… in the "
                f"database, {local.checksum[:12]}… in {local.path}); restore the file, and put changes in a "
                "new migration"
            )
    failed = [(name, log) for name, log in failed if name not in applied]
    pending = [m for m in migrations if m.name not in applied]
    unknown = [name for name in applied if name not in by_name]
    return Plan(applied, pending, failed, unknown), problems


def plan(conn: Conn, migrations: list[Migration]) -> Plan:
    """What would be applied. Raises, changing nothing, on an unresolved failure or a changed file."""
    result, problems = read_plan(conn, migrations)
    if result.failed:
        name, log = result.failed[0]
        raise DbctlError(
            f"migration {name} failed earlier ({log}) and is not resolved; nothing was applied. Fix the "
            f"database or the migration, then run: dbctl migrate resolve --rolled-back {name}"
        )
    if problems:
        raise DbctlError(problems[0])
    for migration in result.pending:
        if not migration.no_transaction:
            transaction_sql(migration)  # refuses, before anything is applied, what cannot run atomically
    return result


# BEGIN / START TRANSACTION / COMMIT (END) around a migration's steps are redundant inside dbctl's own
# transaction; anything else that ends or splits a transaction cannot be made atomic.
_REDUNDANT = frozenset({TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START})
_REDUNDANT |= {TransactionStmtKind.TRANS_STMT_COMMIT}


def transaction_sql(migration: Migration) -> str:
    """The migration's SQL to run in one transaction with its history row: top-level BEGIN/COMMIT blanked
    out (same lines, so server errors keep their line numbers). Raises DbctlError for transaction control
    that cannot be made atomic, or SQL that PostgreSQL's parser rejects."""
    text = migration.sql_text
    try:
        slices = list(parser.split(text, with_parser=True, only_slices=True))
        statements = parser.parse_sql(text)
    except parser.ParseError as exc:
        message, at = (*exc.args, 0)[:2]  # (message, byte offset)
        line = text.encode()[: int(at)].count(b"\n") + 1
        raise DbctlError(
            f"migration {migration.name}: PostgreSQL's parser rejects line {line} ({message}); nothing "
            f"was applied. Fix {migration.path}"
        ) from None
    out = list(text)
    for part, raw in zip(slices, statements, strict=True):
        stmt = raw.stmt
        if not isinstance(stmt, ast.TransactionStmt):
            continue
        kind = stmt.kind
        line = text.count("\n", 0, part.start) + 1
        if kind not in _REDUNDANT:
            raise DbctlError(
                f"migration {migration.name}, line {line}: {text[part].strip()!r} cannot run inside the one "
                "transaction dbctl applies a migration in; nothing was applied. Remove it, or split the "
                f"migration (or mark it `{NO_TRANSACTION_MARKER}`)"
            )
        for i in range(part.start, part.stop):
            if out[i] != "\n":
                out[i] = " "
    return "".join(out)


def _statements(text: str) -> list[str]:
    """Split a no-transaction migration into statements: each ends with ';' at the end of a line."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("--") and not current:
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip())
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def apply_one(conn: Conn, migration: Migration, lock_timeout: str = DEFAULT_LOCK_TIMEOUT) -> None:
    """Apply one migration and record it. Raises MigrationFailed (after recording the error) on failure."""
    set_role = sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(names.OWNER_ROLE))
    set_lock_timeout = sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout))
    insert = sql.SQL(
        'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at)'
        " VALUES ({}, {}, {}, now())"
    )
    finish = sql.SQL(
        'UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = {}'
    )
    row_id = str(uuid.uuid4())
    values = (sql.Literal(row_id), sql.Literal(migration.checksum), sql.Literal(migration.name))
    try:
        if migration.no_transaction:
            with conn.transaction():
                conn.execute(set_role)
                conn.execute(insert.format(*values))
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout)))
            try:
                for statement in _statements(migration.sql_text):
                    conn.execute(statement.encode())
                    escape = _escape(conn, in_transaction=False)
                    if escape:
                        _record_failure(conn, migration, row_id, escape)
                        raise MigrationFailed(
                            f"migration {migration.name} {escape} (statements before it were kept); fix it, "
                            f"then run: dbctl migrate resolve --rolled-back {migration.name}"
                        )
            finally:
                conn.execute("RESET lock_timeout")
                conn.execute("RESET ROLE")
            with conn.transaction():
                conn.execute(set_role)
                conn.execute(finish.format(sql.Literal(row_id)))
        else:
            with conn.transaction():
                conn.execute(set_role)
                conn.execute(set_lock_timeout)
                conn.execute(insert.format(*values))
                conn.execute(transaction_sql(migration).encode())
                escape = _escape(conn, in_transaction=True)
                if escape:
                    raise DbctlError(f"migration {migration.name} {escape}; nothing was kept or recorded")
                conn.execute(finish.format(sql.Literal(row_id)))
    except psycopg.Error as exc:
        message = _error_text(exc)
        _record_failure(conn, migration, row_id, message)
        where = "no change was kept" if not migration.no_transaction else "statements before it were kept"
        raise MigrationFailed(
            f"migration {migration.name} failed: {message.splitlines()[0]} ({where}). Fix it, then run: "
            f"dbctl migrate resolve --rolled-back {migration.name}"
        ) from None


def _escape(conn: Conn, *, in_transaction: bool) -> str | None:
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


def _error_text(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [str(diag.message_primary or exc).strip()]
    if diag.sqlstate:
        parts.append(f"SQLSTATE {diag.sqlstate}")
    if diag.message_detail:
        parts.append(f"DETAIL: {diag.message_detail}")
    return "\n".join(parts)


def _record_failure(conn: Conn, migration: Migration, row_id: str, message: str) -> None:
    """Record the failure as Prisma does: a history row with logs and no finished_at."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
        conn.execute(
            sql.SQL(
                'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, logs, started_at)'
                " VALUES ({}, {}, {}, {}, now())"
                " ON CONFLICT (id) DO UPDATE SET logs = EXCLUDED.logs"
            ).format(
                sql.Literal(row_id),
                sql.Literal(migration.checksum),
                sql.Literal(migration.name),
                sql.Literal(message),
            )
        )


def resolve_rolled_back(conn: Conn, name: str) -> None:
    """Mark a failed migration as rolled back, so the next run applies it again."""
    if not _history_exists(conn):
        raise DbctlError(f"no migration history in this database; there is no failed migration {name}")
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
        cur = conn.execute(
            sql.SQL(
                'UPDATE "_prisma_migrations" SET rolled_back_at = now()'
                " WHERE migration_name = {} AND finished_at IS NULL AND rolled_back_at IS NULL"
            ).format(sql.Literal(name))
        )
        if cur.rowcount == 0:
            raise DbctlError(
                f"migration {name} has no failed, unresolved entry in _prisma_migrations; "
                "`resolve --rolled-back` applies only to a failed migration"
            )
