"""How the runner must apply a migration, decided by PostgreSQL's parser (dbctl/schema/statements.py)."""

from __future__ import annotations

import pytest

from dbctl.core.errors import DbctlError
from dbctl.schema import statements


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('CREATE INDEX CONCURRENTLY "i" ON "User"("name")', "CREATE INDEX CONCURRENTLY"),
        ('CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "i" ON "User"("name")', "CREATE INDEX CONCURRENTLY"),
        ('DROP INDEX CONCURRENTLY "i"', "DROP INDEX CONCURRENTLY"),
        ('REINDEX INDEX CONCURRENTLY "i"', "REINDEX CONCURRENTLY"),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", "DETACH PARTITION CONCURRENTLY"),
        ('VACUUM "User"', "VACUUM"),
        ("ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM"),
        ('CREATE INDEX "i" ON "User"("name")', None),
        ('ANALYZE "User"', None),
        ("ALTER TABLE p DETACH PARTITION c", None),
        ("ALTER TYPE \"Role\" ADD VALUE 'X'", None),  # allowed in a transaction since PostgreSQL 12
    ],
)
def test_what_cannot_run_in_a_transaction_block(text: str, what: str | None) -> None:
    (statement,) = statements.parse("t", text)
    assert statements.outside_transaction(statement.node) == what


def test_a_lone_statement_runs_alone_comments_and_all() -> None:
    text = '-- CreateIndex\nCREATE INDEX CONCURRENTLY "i" ON "User"("name");\n'
    assert statements.mode("migration m", text) == "alone"
    assert statements.mode("migration m", 'CREATE TABLE "T" (id int);\nCREATE INDEX "i" ON "T"(id);') == (
        "transaction"
    )
    assert statements.concurrent_indexes(text) == [("public", "i")]
    assert statements.concurrent_indexes("CREATE INDEX CONCURRENTLY x ON app.t(a); SELECT 1") == [
        ("app", "x")
    ]


def test_mixed_with_other_statements_is_refused_naming_the_line_and_the_fix() -> None:
    text = 'CREATE TABLE "T" (id int);\n\n-- CreateIndex\nCREATE INDEX CONCURRENTLY "i" ON "T"(id);\n'
    with pytest.raises(
        DbctlError, match=r"^migration m, line 4: CREATE INDEX CONCURRENTLY cannot run inside"
    ):
        statements.mode("migration m", text)


def test_begin_commit_are_blanked_keeping_lines_and_rollback_is_refused() -> None:
    text = "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n"
    assert statements.transaction_sql("m", text) == "     ;\nCREATE TABLE t (id int);\n      ;\n"
    with pytest.raises(DbctlError, match="line 2: 'ROLLBACK' cannot run inside"):
        statements.transaction_sql("m", "SELECT 1;\nROLLBACK;\n")
    with pytest.raises(DbctlError, match="parser rejects line 2"):
        statements.parse("m", "SELECT 1;\nSELEC 2;\n")


def test_a_history_row_without_logs_says_what_happened_not_no_log() -> None:
    import datetime as dt

    from dbctl.schema.migrate import _failure_line

    started = dt.datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt.UTC)
    assert _failure_line(None, started) == (
        "started 2026-12-01 10:00:00 UTC and never finished, with no error recorded: the run was killed or "
        "lost its connection (or, when no run holds the lock, is still running)"
    )
    assert _failure_line("relation x does not exist\nSQLSTATE 42P01", started) == "relation x does not exist"
