"""A lone CREATE INDEX CONCURRENTLY, as Prisma's docs write it (no dbctl marker): applied outside a
transaction by dbctl migrate and by `prisma migrate deploy` with the same history; a mixed file refused; a
killed build reported (INVALID index, no `(no log)`) and recovered by resolve."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from dbctl.core import names
from tests.integration.app.test_app_toolchain import E2E, install_e2e_packages
from tests.integration.conftest import FreshDatabase, RunMigrate, login_user, migrate_command, migrate_env
from tests.integration.helpers import node_tool
from tests.integration.schema.test_migrate import INIT, add_migration, copy_migrations

pytestmark = pytest.mark.integration
INDEX = "20261201000000_user_name_index"
LONE = '-- CreateIndex\nCREATE INDEX CONCURRENTLY "User_name_idx" ON "User"("name");\n'


def full_history(db: FreshDatabase) -> list[tuple[object, ...]]:
    with psycopg.connect(db.admin_conninfo) as conn:
        return conn.execute(
            "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at IS NOT NULL, logs,"
            " applied_steps_count FROM _prisma_migrations ORDER BY started_at"
        ).fetchall()


def index_state(db: FreshDatabase, name: str = "User_name_idx") -> tuple[object, ...] | None:
    with psycopg.connect(db.admin_conninfo) as conn:
        return conn.execute(
            "SELECT pg_get_userbyid(c.relowner), x.indisvalid FROM pg_class c"
            " JOIN pg_index x ON x.indexrelid = c.oid WHERE c.relname = %s",
            (name,),
        ).fetchone()


def test_a_lone_create_index_concurrently_applies_outside_a_transaction(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    add_migration(migrations, INDEX, LONE)
    result = run_migrate("migrate", migrations_dir=migrations)
    assert result.returncode == 0, result.stderr
    assert f"apply     {INDEX} (outside a transaction)" in result.stdout
    assert index_state(fresh_db) == (names.OWNER_ROLE, True)
    checksum = hashlib.sha256(LONE.encode()).hexdigest()
    assert full_history(fresh_db)[-1] == (INDEX, checksum, True, False, None, 1)
    assert run_migrate("status", migrations_dir=migrations).returncode == 0


def test_mixing_it_with_other_statements_is_refused_before_anything_is_applied(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    add_migration(migrations, INDEX, LONE + 'ALTER TABLE "User" ADD COLUMN "nick" TEXT;\n')
    result = run_migrate("migrate", migrations_dir=migrations)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: migration {INDEX}, line 2: CREATE INDEX CONCURRENTLY cannot run inside a transaction, and "
        "this migration has 2 statements; nothing was applied. Move it into a migration of its own "
        "(`prisma migrate dev --create-only`, then edit), which dbctl and `prisma migrate deploy` run "
        "outside a transaction"
    )
    with psycopg.connect(fresh_db.admin_conninfo) as conn:  # not even the init migration before it
        assert conn.execute("SELECT to_regclass('public._prisma_migrations')").fetchone() == (None,)


def prisma_deploy(migrations: Path, direct_url: str) -> subprocess.CompletedProcess[str]:
    """`prisma migrate deploy` with Prisma 6.19's JavaScript engine over @prisma/adapter-pg (the e2e suite's
    prisma6.config.ts: Prisma's native engines come from a CDN this machine cannot reach)."""
    node = node_tool("node")
    assert node, "node not found: ./dev test installs it"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "NODE_", "PRISMA_"))},
        "DATABASE_URL": direct_url,
        "DIRECT_URL": direct_url,
        "SHADOW_DATABASE_URL": direct_url,
        "E2E_MIGRATIONS_DIR": str(migrations),
        "PRISMA_SCHEMA_ENGINE_BINARY": node,
        "PRISMA_QUERY_ENGINE_LIBRARY": node,
        "CHECKPOINT_DISABLE": "1",
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
    }
    argv = [node, "node_modules/prisma6/build/index.js", "migrate", "deploy", "--config", "prisma6.config.ts"]
    return subprocess.run(argv, cwd=E2E, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.timeout(900)  # npm ci on a cold cache
def test_prisma_migrate_deploy_writes_the_same_history(
    fresh_db: FreshDatabase,
    run_migrate: RunMigrate,
    role_passwords: dict[str, str],
    tmp_path: Path,
) -> None:
    install_e2e_packages()
    # dbctl sets up the roles and applies init; Prisma then applies the lone index as the migrator.
    only_init = copy_migrations(tmp_path)
    assert run_migrate("migrate", migrations_dir=only_init).returncode == 0
    by_prisma = tmp_path / "by-prisma"
    by_prisma.mkdir()
    add_migration(by_prisma, INDEX, LONE)
    (by_prisma / INIT).symlink_to(only_init / INIT)
    migrator = names.MIGRATOR_ROLE
    url = fresh_db.cluster.url(login_user(migrator), role_passwords[migrator], fresh_db.name)
    deployed = prisma_deploy(by_prisma, url)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "All migrations have been successfully applied" in deployed.stdout
    prisma_rows = full_history(fresh_db)
    assert index_state(fresh_db) == (names.OWNER_ROLE, True)

    # dbctl on the same files: nothing left to apply, and its own run on a copy writes the same row.
    assert run_migrate("status", migrations_dir=by_prisma).returncode == 0
    with psycopg.connect(fresh_db.admin_conninfo, autocommit=True) as conn:
        conn.execute('DROP INDEX "User_name_idx"')
        conn.execute("DELETE FROM _prisma_migrations WHERE migration_name = %s", (INDEX,))
    assert run_migrate("migrate", migrations_dir=by_prisma).returncode == 0
    dbctl_rows = full_history(fresh_db)
    assert dbctl_rows == prisma_rows  # name, checksum, finished, not rolled back, no logs, 1 step


def wait_for(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_a_killed_build_is_reported_and_recovered(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, credentials_file: Path, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    assert run_migrate("migrate", migrations_dir=migrations).returncode == 0
    add_migration(migrations, INDEX, LONE)
    admin = fresh_db.admin_conninfo
    with psycopg.connect(admin) as writer, psycopg.connect(admin, autocommit=True) as watch:
        # A writer in an open transaction: CREATE INDEX CONCURRENTLY has made its (INVALID) index and waits.
        writer.execute("INSERT INTO \"User\" (id, email, \"updatedAt\") VALUES ('u1', 'a@b.c', now())")
        run = subprocess.Popen(
            migrate_command(
                "migrate", "--credentials", str(credentials_file), "--migrations-dir", str(migrations)
            ),
            env=migrate_env(fresh_db),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        where = (
            " FROM pg_stat_activity WHERE query LIKE '%CREATE INDEX CONCURRENTLY%'"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        building = "SELECT pid" + where
        wait_for(lambda: watch.execute(building).fetchone() is not None, "the index build to wait")
        # The run dies and its connection with it (kill -9 of the client; the server ends the backend).
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        watch.execute("SELECT pg_terminate_backend(pid)" + where)
        writer.rollback()
    assert index_state(fresh_db) == (names.OWNER_ROLE, False)

    again = run_migrate("migrate", migrations_dir=migrations)
    assert again.returncode == 2
    assert "(no log)" not in again.stderr
    assert f"migration {INDEX} failed earlier (started " in again.stderr
    assert "never finished, with no error recorded: the run was killed or lost its connection" in again.stderr
    assert f"dbctl migrate resolve --rolled-back {INDEX}" in again.stderr

    status = run_migrate("status", migrations_dir=migrations)
    assert status.returncode == 1
    assert f"failed    {INDEX}: started " in status.stdout
    assert 'drift     index "public"."User_name_idx" is INVALID' in status.stdout

    resolved = run_migrate("migrate", "resolve", "--rolled-back", INDEX, "--migrations-dir", str(migrations))
    assert resolved.returncode == 0, resolved.stderr
    assert f'dropped INVALID index "public"."User_name_idx" that {INDEX} left' in resolved.stdout
    assert index_state(fresh_db) is None

    final = run_migrate("migrate", migrations_dir=migrations)
    assert final.returncode == 0, final.stderr
    assert index_state(fresh_db) == (names.OWNER_ROLE, True)
    assert run_migrate("status", migrations_dir=migrations).returncode == 0
