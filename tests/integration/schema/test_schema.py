"""The init migration builds exactly schema.prisma's tables, as Prisma Migrate would: checked in the catalogs.

Real Prisma (`prisma migrate diff`) cannot run here: its schema engine is downloaded from binaries.prisma.sh,
which is unreachable. So the reference below is schema.prisma transcribed by Prisma's mapping rules.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.conftest import FreshDatabase
from tests.integration.helpers import migrate_in_process

pytestmark = [pytest.mark.integration, pytest.mark.all_majors]

TS = "timestamp(3) without time zone"
NOW = "CURRENT_TIMESTAMP"
# table -> [(column, type, not null, default)] in declaration order
COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "User": [
        ("id", "text", True, None),
        ("name", "text", False, None),
        ("email", "text", False, None),
        ("emailVerified", TS, False, None),
        ("image", "text", False, None),
        ("createdAt", TS, True, NOW),
        ("updatedAt", TS, True, None),
    ],
    "Account": [
        ("id", "text", True, None),
        ("userId", "text", True, None),
        ("type", "text", True, None),
        ("provider", "text", True, None),
        ("providerAccountId", "text", True, None),
        ("refresh_token", "text", False, None),
        ("access_token", "text", False, None),
        ("expires_at", "integer", False, None),
        ("token_type", "text", False, None),
        ("scope", "text", False, None),
        ("id_token", "text", False, None),
        ("session_state", "text", False, None),
    ],
    "Session": [
        ("id", "text", True, None),
        ("sessionToken", "text", True, None),
        ("userId", "text", True, None),
        ("expires", TS, True, None),
    ],
    "VerificationToken": [
        ("identifier", "text", True, None),
        ("token", "text", True, None),
        ("expires", TS, True, None),
    ],
    "App": [
        ("id", "text", True, None),
        ("name", "text", True, None),
        ("description", "text", False, None),
        ("userId", "text", True, None),
        ("forkedFrom", "text", False, None),
        ("status", '"AppStatus"', True, "'DRAFT'::\"AppStatus\""),
        ("domain", "text", False, None),
        ("createdAt", TS, True, NOW),
        ("updatedAt", TS, True, None),
    ],
    "Requirement": [
        ("id", "text", True, None),
        ("appId", "text", True, None),
        ("description", "text", True, None),
        ("priority", '"RequirementPriority"', True, "'MEDIUM'::\"RequirementPriority\""),
        ("status", '"RequirementStatus"', True, "'PENDING'::\"RequirementStatus\""),
        ("version", "integer", True, "1"),
        ("createdAt", TS, True, NOW),
        ("updatedAt", TS, True, None),
    ],
    "MonetizationModel": [
        ("id", "text", True, None),
        ("appId", "text", True, None),
        ("type", '"MonetizationType"', True, "'FREE'::\"MonetizationType\""),
        ("price", "numeric(10,2)", False, None),
        ("subscriptionInterval", '"SubscriptionInterval"', False, None),
        ("features", "text[]", False, None),
        ("createdAt", TS, True, NOW),
        ("updatedAt", TS, True, None),
    ],
}
ENUMS = {
    "AppStatus": ["DRAFT", "ACTIVE", "ARCHIVED", "DELETED"],
    "RequirementPriority": ["LOW", "MEDIUM", "HIGH", "CRITICAL"],
    "RequirementStatus": ["PENDING", "IN_PROGRESS", "COMPLETED", "REJECTED"],
    "MonetizationType": ["FREE", "ONE_TIME", "SUBSCRIPTION", "FREEMIUM", "USAGE_BASED"],
    "SubscriptionInterval": ["MONTHLY", "QUARTERLY", "YEARLY"],
}
# index name -> (table, unique, columns); primary keys are "<Table>_pkey" on ("id")
INDEXES = {
    **{f"{t}_pkey": (t, True, ["id"]) for t in COLUMNS if t != "VerificationToken"},
    "User_email_key": ("User", True, ["email"]),
    "Account_userId_idx": ("Account", False, ["userId"]),
    "Account_provider_providerAccountId_key": ("Account", True, ["provider", "providerAccountId"]),
    "Session_sessionToken_key": ("Session", True, ["sessionToken"]),
    "Session_userId_idx": ("Session", False, ["userId"]),
    "VerificationToken_token_key": ("VerificationToken", True, ["token"]),
    "VerificationToken_identifier_token_key": ("VerificationToken", True, ["identifier", "token"]),
    "App_domain_key": ("App", True, ["domain"]),
    "App_userId_idx": ("App", False, ["userId"]),
    "App_forkedFrom_idx": ("App", False, ["forkedFrom"]),
    "App_status_idx": ("App", False, ["status"]),
    "Requirement_appId_idx": ("Requirement", False, ["appId"]),
    "Requirement_status_idx": ("Requirement", False, ["status"]),
    "Requirement_priority_idx": ("Requirement", False, ["priority"]),
    "MonetizationModel_appId_idx": ("MonetizationModel", False, ["appId"]),
}
# constraint -> (table, column, referenced table, on delete, on update)
# pg codes: c cascade, r restrict, n set null
FOREIGN_KEYS = {
    "Account_userId_fkey": ("Account", "userId", "User", "c", "c"),
    "Session_userId_fkey": ("Session", "userId", "User", "c", "c"),
    "App_userId_fkey": ("App", "userId", "User", "r", "c"),
    "App_forkedFrom_fkey": ("App", "forkedFrom", "App", "n", "c"),
    "Requirement_appId_fkey": ("Requirement", "appId", "App", "c", "c"),
    "MonetizationModel_appId_fkey": ("MonetizationModel", "appId", "App", "c", "c"),
}


@pytest.fixture
def schema_conn(
    fresh_db: FreshDatabase, role_passwords: dict[str, str]
) -> psycopg.Connection[tuple[object, ...]]:
    migrate_in_process(fresh_db, role_passwords)
    return psycopg.connect(fresh_db.admin_conninfo)


def test_tables_and_columns(schema_conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with schema_conn:
        rows = schema_conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum"
            " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> '_prisma_migrations'"
            " ORDER BY c.relname, a.attnum"
        ).fetchall()
    actual: dict[str, list[tuple[object, ...]]] = {}
    for table, *column in rows:
        actual.setdefault(str(table), []).append(tuple(column))
    assert actual == {t: [tuple(c) for c in cols] for t, cols in COLUMNS.items()}


def test_enums(schema_conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with schema_conn:
        rows = schema_conn.execute(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_type t"
            " JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"
        ).fetchall()
    assert {str(r[0]): r[1] for r in rows} == ENUMS


def test_indexes(schema_conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with schema_conn:
        rows = schema_conn.execute(
            "SELECT i.relname, t.relname, x.indisunique,"
            " array(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(n, o)"
            "   JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o),"
            " am.amname"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am am ON am.oid = i.relam"
            " WHERE n.nspname = 'public' AND t.relname <> '_prisma_migrations'"
        ).fetchall()
    assert {str(r[0]): (r[1], r[2], r[3]) for r in rows} == INDEXES
    assert {r[4] for r in rows} == {"btree"}


def test_foreign_keys(schema_conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with schema_conn:
        rows = schema_conn.execute(
            "SELECT c.conname, t.relname, a.attname, r.relname, c.confdeltype, c.confupdtype"
            " FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid"
            " JOIN pg_class r ON r.oid = c.confrelid"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
            " WHERE c.contype = 'f'"
        ).fetchall()
        other = schema_conn.execute(
            "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            # 'n': PostgreSQL 18 catalogues NOT NULL as constraints too; test_tables_and_columns checks them.
            " WHERE n.nspname = 'public' AND c.contype NOT IN ('f', 'p', 'u', 'n')"
        ).fetchone()
    assert {str(r[0]): tuple(r[1:]) for r in rows} == FOREIGN_KEYS
    assert other == (0,)  # no CHECK or EXCLUDE constraints Prisma would not create


def test_objects_belong_to_the_owner_role(schema_conn: psycopg.Connection[tuple[object, ...]]) -> None:
    with schema_conn:
        owners = schema_conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " AND c.relkind IN ('r', 'i', 'S') AND c.relname NOT LIKE 'pg_stat_statements%'"
        ).fetchall()
        type_owners = schema_conn.execute(
            "SELECT DISTINCT pg_get_userbyid(t.typowner) FROM pg_type t WHERE t.typtype = 'e'"
        ).fetchall()
        history = schema_conn.execute(
            "SELECT migration_name, length(checksum), finished_at IS NOT NULL, rolled_back_at,"
            " applied_steps_count, logs FROM _prisma_migrations"
        ).fetchall()
    assert owners == [("spike_owner",)]
    assert type_owners == [("spike_owner",)]
    assert history == [("20261125060000_init", 64, True, None, 1, None)]
