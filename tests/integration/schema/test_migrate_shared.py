"""dbctl migrate and Prisma Migrate on one database: objects created through DIRECT_URL belong to spike_owner,
migrations as Prisma writes them (BEGIN; … COMMIT;) apply whole or not at all, and `dbctl status` reports
what another tool left behind (history rows with no file, objects not owned by spike_owner)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from dbctl.core import names
from tests.integration.conftest import FreshDatabase, RunMigrate
from tests.integration.schema.test_migrate import INIT, add_migration, copy_migrations, history, table_exists

pytestmark = pytest.mark.integration


def connect_as(
    db: FreshDatabase, role: str, passwords: dict[str, str]
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(db.conninfo(role, passwords[role]), autocommit=True)


def test_tables_created_through_the_migrator_belong_to_spike_owner_and_serve_the_app_at_once(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, role_passwords: dict[str, str]
) -> None:
    """What `prisma migrate deploy` through DIRECT_URL does: plain DDL in the migrator's own session."""
    assert run_migrate("migrate").returncode == 0
    with connect_as(fresh_db, names.MIGRATOR_ROLE, role_passwords) as migrator:
        row = migrator.execute("SELECT session_user, current_user").fetchone()
        assert row == (names.MIGRATOR_ROLE, names.OWNER_ROLE)
        migrator.execute('CREATE TABLE "Tag" (id SERIAL PRIMARY KEY, label TEXT NOT NULL)')
        migrator.execute("CREATE TYPE \"TagKind\" AS ENUM ('A', 'B')")
        owners = migrator.execute(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relname IN ('Tag', 'Tag_id_seq') ORDER BY relname"
        ).fetchall()
    assert owners == [("Tag", names.OWNER_ROLE), ("Tag_id_seq", names.OWNER_ROLE)]
    with connect_as(fresh_db, names.APP_ROLE, role_passwords) as app:
        app.execute("INSERT INTO \"Tag\" (label) VALUES ('first')")  # the sequence too
        assert app.execute('SELECT label FROM "Tag"').fetchall() == [("first",)]
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute('DROP TABLE "Tag"')
    with connect_as(fresh_db, names.READONLY_ROLE, role_passwords) as reader:
        assert reader.execute('SELECT count(*) FROM "Tag"').fetchone() == (1,)
    status = run_migrate("status")
    assert status.returncode == 0, status.stdout + status.stderr  # nothing foreign-owned


def test_a_commit_inside_a_migration_does_not_keep_its_first_half(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    bad = "20261125080000_half_committed"
    add_migration(
        migrations,
        bad,
        '-- AlterEnum\nBEGIN;\nCREATE TABLE "Half" (id TEXT NOT NULL);\nCOMMIT;\n\n'
        'ALTER TABLE "NoSuchTable" ADD COLUMN "y" TEXT;\n',
    )
    failed = run_migrate("migrate", migrations_dir=migrations)
    assert failed.returncode != 0
    assert f"migration {bad} failed" in failed.stderr and "no change was kept" in failed.stderr
    assert "NoSuchTable" in failed.stderr
    assert not table_exists(fresh_db, "Half")
    assert history(fresh_db) == [(INIT, True, False, 1), (bad, False, False, 0)]


def test_a_migration_as_prisma_writes_it_with_begin_commit_applies_whole(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    """Prisma's enum recreation (BEGIN; … COMMIT;), and a PL/pgSQL body whose BEGIN/END must stay."""
    migrations = copy_migrations(tmp_path)
    name = "20261125090000_drop_app_status_deleted"
    add_migration(
        migrations,
        name,
        "-- AlterEnum\nBEGIN;\n"
        "CREATE TYPE \"AppStatus_new\" AS ENUM ('DRAFT', 'ACTIVE', 'ARCHIVED');\n"
        'ALTER TABLE "App" ALTER COLUMN "status" DROP DEFAULT;\n'
        'ALTER TABLE "App" ALTER COLUMN "status" TYPE "AppStatus_new"'
        ' USING ("status"::text::"AppStatus_new");\n'
        'ALTER TYPE "AppStatus" RENAME TO "AppStatus_old";\n'
        'ALTER TYPE "AppStatus_new" RENAME TO "AppStatus";\n'
        'DROP TYPE "AppStatus_old";\n'
        'ALTER TABLE "App" ALTER COLUMN "status" SET DEFAULT \'DRAFT\';\n'
        "COMMIT;\n\n"
        "-- CreateFunction\n"
        "CREATE FUNCTION app_count() RETURNS bigint LANGUAGE plpgsql AS $$\n"
        'BEGIN\n  RETURN (SELECT count(*) FROM "App");\nEND;\n$$;\n',
    )
    result = run_migrate("migrate", "--json", migrations_dir=migrations)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["applied"] == [INIT, name]
    with psycopg.connect(fresh_db.admin_conninfo) as conn:
        labels = conn.execute('SELECT enum_range(NULL::"AppStatus")::text').fetchone()
        assert labels == ("{DRAFT,ACTIVE,ARCHIVED}",)
        assert conn.execute("SELECT app_count()").fetchone() == (0,)
    assert history(fresh_db)[-1] == (name, True, False, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('CREATE TABLE "Early" (id int);\nROLLBACK;\n', "'ROLLBACK' cannot run inside the one transaction"),
        ("CREATE TABLE \"Early\" (id int);\nPREPARE TRANSACTION 'x';\n", "cannot run inside the one"),
        ('CREATE TABLE "Early" (id int);\nCREATE TABEL "Oops" (id int);\n', "parser rejects line 2"),
    ],
)
def test_what_cannot_apply_atomically_is_refused_before_anything_is_applied(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path, text: str, expected: str
) -> None:
    assert run_migrate("migrate").returncode == 0
    migrations = copy_migrations(tmp_path)
    add_migration(migrations, "20261125100000_fine", 'CREATE TABLE "Fine" (id int);\n')
    add_migration(migrations, "20261125110000_refused", text)
    refused = run_migrate("migrate", migrations_dir=migrations)
    assert refused.returncode != 0
    assert "migration 20261125110000_refused" in refused.stderr and expected in refused.stderr
    assert "nothing was applied" in refused.stderr
    assert not table_exists(fresh_db, "Fine") and not table_exists(fresh_db, "Early")
    assert history(fresh_db) == [(INIT, True, False, 1)]
    dry = run_migrate("migrate", "--dry-run", migrations_dir=migrations)
    assert dry.returncode != 0 and expected in dry.stderr


def test_status_reports_history_without_a_file_and_objects_not_owned_by_spike_owner(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    extra = "20261125120000_added_by_prisma"
    add_migration(migrations, extra, 'CREATE TABLE "Extra" (id int);\n')
    assert run_migrate("migrate", migrations_dir=migrations).returncode == 0
    assert run_migrate("status", migrations_dir=migrations).returncode == 0
    # The migration ran (say, by `prisma migrate deploy` on another branch) but its file is not here.
    status = run_migrate("status")
    assert status.returncode == 1
    assert f"drift     migration {extra} is in _prisma_migrations but has no directory" in status.stdout
    # A table made by the admin by hand belongs to the admin: the app's default privileges miss it.
    with psycopg.connect(fresh_db.admin_conninfo, autocommit=True) as admin:
        admin.execute('CREATE TABLE "ByHand" (id SERIAL)')
        admin.execute("CREATE TYPE \"HandKind\" AS ENUM ('x')")
    status = run_migrate("status", "--json", migrations_dir=migrations)
    assert status.returncode == 1
    drift = json.loads(status.stdout)["drift"]
    owner = fresh_db.cluster.admin_user
    assert [line.split(":")[0] for line in drift] == [
        f'table public."ByHand" is owned by {owner}, not {names.OWNER_ROLE}',
        f'sequence public."ByHand_id_seq" is owned by {owner}, not {names.OWNER_ROLE}',
        f'type public."HandKind" is owned by {owner}, not {names.OWNER_ROLE}',
    ]
