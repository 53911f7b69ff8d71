"""A migration's SQL as PostgreSQL's own parser (pglast) sees it: how the runner must apply it.

- ``parse(label, text) -> list[Statement]``: the top-level statements with their source text and line;
  SQL the parser rejects raises ``DbctlError`` naming the line.
- ``outside_transaction(node)``: what PostgreSQL refuses in a transaction block (PreventInTransactionBlock:
  ``CREATE INDEX CONCURRENTLY``, ``DROP INDEX CONCURRENTLY``, ``REINDEX … CONCURRENTLY``, ``DETACH PARTITION …
  CONCURRENTLY``, ``VACUUM``, ``CREATE/DROP DATABASE``, ``… TABLESPACE``, ``ALTER SYSTEM``, subscriptions).
- ``mode(label, text) -> "transaction" | "alone"``: a file whose only statement is one of those runs alone,
  outside a transaction, as one simple query, exactly as ``prisma migrate deploy`` sends a migration's script
  (prisma-engines' PostgreSQL flavour: ``simple_query(script)``; one statement is then in no transaction
  block, several share an implicit one). One of those mixed with other statements is refused: no runner can
  apply it atomically.
- ``transaction_sql(label, text)``: the SQL to run in the runner's one transaction, with top-level
  ``BEGIN``/``COMMIT`` blanked out (same lines); other transaction control is refused.
- ``split(text)``: the statements of a ``-- dbctl:no-transaction`` file, one per ``;``-terminated line.
- ``concurrent_indexes(text)``: the (schema, name) of each ``CREATE INDEX CONCURRENTLY`` in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pglast import ast, parser
from pglast.enums.parsenodes import AlterTableType, TransactionStmtKind

from dbctl.core.errors import DbctlError

NO_TRANSACTION_MARKER = "-- dbctl:no-transaction"

# BEGIN / START TRANSACTION / COMMIT (END) around a migration's steps are redundant inside the runner's own
# transaction; anything else that ends or splits a transaction cannot be made atomic.
_REDUNDANT = frozenset(
    {
        TransactionStmtKind.TRANS_STMT_BEGIN,
        TransactionStmtKind.TRANS_STMT_START,
        TransactionStmtKind.TRANS_STMT_COMMIT,
    }
)
_NEVER_IN_TRANSACTION: dict[type[ast.Node], str] = {
    ast.CreatedbStmt: "CREATE DATABASE",
    ast.DropdbStmt: "DROP DATABASE",
    ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
    ast.DropTableSpaceStmt: "DROP TABLESPACE",
    ast.AlterSystemStmt: "ALTER SYSTEM",
    ast.CreateSubscriptionStmt: "CREATE SUBSCRIPTION",
    ast.DropSubscriptionStmt: "DROP SUBSCRIPTION",
}


@dataclass(frozen=True)
class Statement:
    text: str
    line: int
    node: ast.Node
    span: slice


def parse(label: str, text: str) -> list[Statement]:
    """The top-level statements of text. Raises DbctlError naming label and the line the parser rejects."""
    try:
        slices = list(parser.split(text, with_parser=True, only_slices=True))
        raws = parser.parse_sql(text)
    except parser.ParseError as exc:
        message, at = (*exc.args, 0)[:2]  # (message, byte offset)
        line = text.encode()[: int(at)].count(b"\n") + 1
        raise DbctlError(
            f"{label}: PostgreSQL's parser rejects line {line} ({message}); nothing was applied. Fix it"
        ) from None
    return [
        Statement(text[part], text.count("\n", 0, part.start) + 1, raw.stmt, part)
        for part, raw in zip(slices, raws, strict=True)
        if raw.stmt is not None
    ]


def outside_transaction(node: ast.Node) -> str | None:
    """What makes node one PostgreSQL refuses inside a transaction block, or None."""
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and any(
        isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
    ):
        return "REINDEX CONCURRENTLY"
    if isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if (
                isinstance(cmd, ast.AlterTableCmd)
                and cmd.subtype == AlterTableType.AT_DetachPartition
                and isinstance(cmd.def_, ast.PartitionCmd)
                and cmd.def_.concurrent
            ):
                return "DETACH PARTITION CONCURRENTLY"
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd:
        return "VACUUM"
    return _NEVER_IN_TRANSACTION.get(type(node))


def mode(label: str, text: str) -> Literal["transaction", "alone"]:
    """How a migration without the no-transaction marker runs. Raises DbctlError, naming the line and the
    fix, when a statement that cannot run in a transaction shares the file with others."""
    statements = parse(label, text)
    lone = [(s, what) for s in statements if (what := outside_transaction(s.node))]
    if not lone:
        return "transaction"
    if len(statements) == 1:
        return "alone"
    first, what = lone[0]
    raise DbctlError(
        f"{label}, line {first.line}: {what} cannot run inside a transaction, and this migration has "
        f"{len(statements)} statements; nothing was applied. Move it into a migration of its own "
        "(`prisma migrate dev --create-only`, then edit), which dbctl and `prisma migrate deploy` run "
        "outside a transaction"
    )


def transaction_sql(label: str, text: str) -> str:
    """text to run in one transaction: top-level BEGIN/COMMIT blanked out (same lines, so server errors keep
    their line numbers). Raises DbctlError for transaction control that cannot be made atomic."""
    out = list(text)
    for statement in parse(label, text):
        node = statement.node
        if not isinstance(node, ast.TransactionStmt):
            continue
        if node.kind not in _REDUNDANT:
            raise DbctlError(
                f"{label}, line {statement.line}: {statement.text.strip()!r} cannot run inside the one "
                "transaction dbctl applies a migration in; nothing was applied. Remove it, or split the "
                f"migration (or mark it `{NO_TRANSACTION_MARKER}`)"
            )
        for i in range(statement.span.start, statement.span.stop):
            if out[i] != "\n":
                out[i] = " "
    return "".join(out)


def split(text: str) -> list[str]:
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


def concurrent_indexes(text: str) -> list[tuple[str, str]]:
    """(schema, index) of each named CREATE INDEX CONCURRENTLY in text (schema of its table, else public)."""
    try:
        raws = parser.parse_sql(text)
    except parser.ParseError:
        return []
    found = []
    for raw in raws:
        node = raw.stmt
        if isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname:
            schema = node.relation.schemaname if node.relation is not None else None
            found.append((schema or "public", node.idxname))
    return found
