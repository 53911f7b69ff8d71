"""The schema migration runner, compatible with Prisma Migrate's layout and history table.

- ``load_migrations(directory)``: ``<name>/migration.sql`` in name order; ``checksum`` is the sha256 hex of
  the file's bytes, as Prisma computes it.
- ``advisory_lock(conn, timeout)``: Prisma's advisory lock (dbctl/schema/migrate_lock.py).
- ``plan(conn, migrations) -> Plan``: applied, pending and failed migrations. Raises ``DbctlError`` (changing
  nothing) on a failed migration that is not resolved, or on a checksum mismatch.
- ``apply_one(conn, migration)``: one migration, as ``spike_owner``, with ``lock_timeout``; in a transaction
  together with its history row, unless the file's first line is ``-- dbctl:no-transaction`` or its only
  statement cannot run in a transaction (a lone ``CREATE INDEX CONCURRENTLY``, as Prisma's docs write it:
  sent as one simple query, as ``prisma migrate deploy`` does). On failure the transaction rolls back, a
  history row records the error in ``logs`` (finished_at NULL, as Prisma does) and ``MigrationFailed`` is
  raised.
- ``transaction_sql(migration)``: the SQL that runs in that transaction (dbctl/schema/statements.py: the
  ``BEGIN;`` / ``COMMIT;`` Prisma writes around some steps blanked out, so the whole file stays one
  transaction); ROLLBACK, PREPARE TRANSACTION and the like, SQL the parser rejects, and a statement that
  cannot run in a transaction mixed with others are refused by ``plan`` before anything is applied.
- ``invalid_indexes(conn)``: INVALID indexes in schema public (a ``CREATE INDEX CONCURRENTLY`` that failed or
  was killed leaves one), for ``dbctl status``.
- ``resolve_rolled_back(conn, name, migrations)``: ``prisma migrate resolve --rolled-back`` (sets
  rolled_back_at); first drops the INVALID indexes that migration's ``CREATE INDEX CONCURRENTLY`` left, so the
  next run can build them again.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.schema import statements
from dbctl.schema.escape import escaped_owner
from dbctl.schema.migrate_lock import LOCK_KEY as LOCK_KEY
from dbctl.schema.migrate_lock import NOT_MIGRATORS as NOT_MIGRATORS
from dbctl.schema.migrate_lock import advisory_lock as advisory_lock
from dbctl.schema.statements import NO_TRANSACTION_MARKER as NO_TRANSACTION_MARKER

HISTORY_TABLE = "_prisma_migrations"
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
        """The file's first line is the marker: each `;`-terminated line runs on its own."""
        first = self.sql_text.lstrip().splitlines()[:1]
        return bool(first) and first[0].strip() == NO_TRANSACTION_MARKER

    def runs_alone(self) -> bool:
        """Its only statement cannot run in a transaction: sent alone, as `prisma migrate deploy` sends it.
        Raises DbctlError when such a statement is mixed with others (statements.mode)."""
        return statements.mode(f"migration {self.name}", self.sql_text) == "alone"


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
    """A migration that failed; `reason` is the failure without the advice to resolve it (a rehearsal's copy
    is dropped, so there is nothing to resolve)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


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
            "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at IS NOT NULL, logs,"
            ' started_at FROM "_prisma_migrations" ORDER BY started_at'
        ).fetchall()
    by_name = {m.name: m for m in migrations}
    applied: list[str] = []
    failed: list[tuple[str, str]] = []
    problems: list[str] = []
    for name, checksum, finished, rolled_back, logs, started in rows:
        name = str(name)
        if rolled_back:
            continue
        if not finished:
            failed.append((name, _failure_line(logs, started)))
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


def _failure_line(logs: object, started: object) -> str:
    """The first line of a failed migration's logs; for a row with none, what that means."""
    lines = str(logs or "").strip().splitlines()
    if lines:
        return lines[0]
    when = f"{started:%Y-%m-%d %H:%M:%S %Z}" if isinstance(started, datetime) else "at an unknown time"
    return (
        f"started {when.strip()} and never finished, with no error recorded: the run was killed or lost its "
        "connection (or, when no run holds the lock, is still running)"
    )


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
        # Refuses, before anything is applied, what cannot run atomically or alone.
        if not migration.no_transaction and not migration.runs_alone():
            transaction_sql(migration)
    return result


def transaction_sql(migration: Migration) -> str:
    """The migration's SQL to run in one transaction with its history row (statements.transaction_sql)."""
    return statements.transaction_sql(f"migration {migration.name}", migration.sql_text)


def apply_one(
    conn: Conn,
    migration: Migration,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    before_commit: Callable[[Conn], None] | None = None,
) -> None:
    """Apply one migration and record it. Raises MigrationFailed (after recording the error) on failure.
    before_commit runs in a transactional migration's transaction, its locks still held (the rehearsal)."""
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
    alone = not migration.no_transaction and migration.runs_alone()
    try:
        if migration.no_transaction or alone:
            with conn.transaction():
                conn.execute(set_role)
                conn.execute(insert.format(*values))
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout)))
            # Alone: the whole file as one simple query, as prisma migrate deploy sends it (comments and all).
            parts = [migration.sql_text] if alone else statements.split(migration.sql_text)
            try:
                for statement in parts:
                    conn.execute(statement.encode())
                    escape = escaped_owner(conn, in_transaction=False)
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
                escape = escaped_owner(conn, in_transaction=True)
                if escape:
                    raise DbctlError(f"migration {migration.name} {escape}; nothing was kept or recorded")
                if before_commit is not None:
                    before_commit(conn)
                conn.execute(finish.format(sql.Literal(row_id)))
    except psycopg.Error as exc:
        message = _error_text(exc)
        _record_failure(conn, migration, row_id, message)
        where = (
            "statements before it were kept"
            if migration.no_transaction
            else "it ran outside a transaction: an INVALID index it left is listed by `dbctl status` and "
            "dropped by resolve"
            if alone
            else "no change was kept"
        )
        reason = f"migration {migration.name} failed: {message.splitlines()[0]} ({where})"
        raise MigrationFailed(
            f"{reason}. Fix it, then run: dbctl migrate resolve --rolled-back {migration.name}", reason
        ) from None


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


def invalid_indexes(conn: Conn) -> list[tuple[str, str]]:
    """(schema, index) of each INVALID index outside the system schemas: a failed or killed
    CREATE INDEX CONCURRENTLY leaves one, which writes keep up to date and no query uses."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT x.indisvalid"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
        " ORDER BY 1, 2"
    ).fetchall()
    return [(str(schema), str(name)) for schema, name in rows]


def resolve_rolled_back(conn: Conn, name: str, migrations: list[Migration] | None = None) -> list[str]:
    """Mark a failed migration as rolled back, so the next run applies it again. Drops first (CONCURRENTLY,
    as spike_owner) each INVALID index that migration's CREATE INDEX CONCURRENTLY left; returns one line per
    index dropped."""
    if not _history_exists(conn):
        raise DbctlError(f"no migration history in this database; there is no failed migration {name}")
    row = conn.execute(
        'SELECT count(*) FROM "_prisma_migrations"'
        " WHERE migration_name = %s AND finished_at IS NULL AND rolled_back_at IS NULL",
        (name,),
    ).fetchone()
    if not row or not row[0]:
        raise DbctlError(
            f"migration {name} has no failed, unresolved entry in _prisma_migrations; "
            "`resolve --rolled-back` applies only to a failed migration"
        )
    dropped = []
    migration = next((m for m in migrations or [] if m.name == name), None)
    if migration is not None:
        invalid = set(invalid_indexes(conn))
        for schema, index in statements.concurrent_indexes(migration.sql_text):
            if (schema, index) in invalid:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
                try:
                    drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}")
                    conn.execute(drop.format(sql.Identifier(schema, index)))
                finally:
                    conn.execute("RESET ROLE")
                dropped.append(f'dropped INVALID index "{schema}"."{index}" that {name} left')
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
        conn.execute(
            sql.SQL(
                'UPDATE "_prisma_migrations" SET rolled_back_at = now()'
                " WHERE migration_name = {} AND finished_at IS NULL AND rolled_back_at IS NULL"
            ).format(sql.Literal(name))
        )
    return dropped
