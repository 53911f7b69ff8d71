"""The runner as a user meets it: `python -m dbctl migrate` against a real PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from dbctl.core.errors import DbctlError
from dbctl.schema import deploy, migrate
from dbctl.schema.credentials import verifiers_from_mapping
from tests.integration.conftest import (
    FreshDatabase,
    RunMigrate,
    migrate_command,
    migrate_env,
    secret_shaped,
)

pytestmark = [pytest.mark.integration, pytest.mark.all_majors]
INIT = "20261125060000_init"


def copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, target)
    return target


def add_migration(directory: Path, name: str, text: str) -> None:
    (directory / name).mkdir()
    (directory / name / "migration.sql").write_text(text)


def history(db: FreshDatabase) -> list[tuple[object, ...]]:
    with psycopg.connect(db.admin_conninfo) as conn:
        return conn.execute(
            "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL, applied_steps_count"
            " FROM _prisma_migrations ORDER BY started_at"
        ).fetchall()


def table_exists(db: FreshDatabase, name: str) -> bool:
    with psycopg.connect(db.admin_conninfo) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'public."{name}"',)).fetchone()
    return bool(row and row[0])


def test_second_run_reports_no_changes(fresh_db: FreshDatabase, run_migrate: RunMigrate) -> None:
    first = run_migrate("migrate")
    assert first.returncode == 0, first.stderr
    assert f"apply     {INIT}" in first.stdout
    second = run_migrate("migrate")
    assert second.returncode == 0, second.stderr
    assert "no changes" in second.stdout
    assert "apply" not in second.stdout
    as_json = json.loads(run_migrate("migrate", "--json").stdout)
    assert as_json["changed"] is False and as_json["applied"] == [] and as_json["role_changes"] == []
    status = run_migrate("status")
    assert status.returncode == 0 and "up to date" in status.stdout


def test_dry_run_changes_nothing(fresh_db: FreshDatabase, run_migrate: RunMigrate) -> None:
    result = run_migrate("migrate", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pending"] == [INIT] and report["changed"] is True
    assert not table_exists(fresh_db, "_prisma_migrations")
    assert run_migrate("status").returncode == 1


def test_five_concurrent_runners_apply_each_migration_once(
    fresh_db: FreshDatabase, credentials_file: Path, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    add_migration(
        migrations,
        "20261125070000_add_app_slug",
        'ALTER TABLE "App" ADD COLUMN "slug" TEXT;\nSELECT pg_sleep(0.3);\n',
    )
    argv = migrate_command(
        "migrate", "--credentials", str(credentials_file), "--migrations-dir", str(migrations), "--json"
    )
    runners = [
        subprocess.Popen(
            argv, env=migrate_env(fresh_db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(5)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in runners]
    for code, _, stderr in results:
        assert code == 0, stderr
    applied = [json.loads(out)["applied"] for _, out, _ in results]
    assert sorted(name for run in applied for name in run) == [INIT, "20261125070000_add_app_slug"]
    assert sum(1 for run in applied if run) == 1  # one runner did the work, four found nothing to do
    assert history(fresh_db) == [(INIT, True, False, 1), ("20261125070000_add_app_slug", True, False, 1)]


def test_failed_migration_leaves_nothing_and_blocks_until_resolved(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    bad = "20261125080000_broken"
    add_migration(
        migrations,
        bad,
        'CREATE TABLE "Half" (id TEXT NOT NULL);\nALTER TABLE "App" ADD COLUMN "x" TEXT;\n'
        'ALTER TABLE "NoSuchTable" ADD COLUMN "y" TEXT;\n',
    )
    failed = run_migrate("migrate", migrations_dir=migrations)
    assert failed.returncode != 0
    assert f"migration {bad} failed" in failed.stderr and "NoSuchTable" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not table_exists(fresh_db, "Half")
    with psycopg.connect(fresh_db.admin_conninfo) as conn:
        column = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'App' AND column_name = 'x'"
        ).fetchone()
        logs = conn.execute(
            "SELECT logs FROM _prisma_migrations WHERE migration_name = %s", (bad,)
        ).fetchone()
    assert column == (0,)
    assert logs is not None and "NoSuchTable" in str(logs[0])
    assert history(fresh_db) == [(INIT, True, False, 1), (bad, False, False, 0)]

    refused = run_migrate("migrate", migrations_dir=migrations)
    assert refused.returncode != 0
    assert f"dbctl migrate resolve --rolled-back {bad}" in refused.stderr
    assert run_migrate("status", migrations_dir=migrations).returncode == 1

    (migrations / bad / "migration.sql").write_text('CREATE TABLE "Half" (id TEXT NOT NULL);\n')
    resolved = run_migrate("migrate", "resolve", "--rolled-back", bad)
    assert resolved.returncode == 0, resolved.stderr
    again = run_migrate("migrate", migrations_dir=migrations)
    assert again.returncode == 0, again.stderr
    assert table_exists(fresh_db, "Half")
    assert history(fresh_db)[-2:] == [(bad, False, True, 0), (bad, True, False, 1)]
    assert run_migrate("status", migrations_dir=migrations).returncode == 0


def test_resolve_of_a_migration_that_did_not_fail_is_refused(
    fresh_db: FreshDatabase, run_migrate: RunMigrate
) -> None:
    assert run_migrate("migrate").returncode == 0
    result = run_migrate("migrate", "resolve", "--rolled-back", INIT)
    assert result.returncode != 0 and "no failed, unresolved entry" in result.stderr


def test_changed_migration_file_is_refused_and_nothing_changes(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    assert run_migrate("migrate", migrations_dir=migrations).returncode == 0
    add_migration(migrations, "20261125090000_next", 'CREATE TABLE "Next" (id TEXT);\n')
    init_sql = migrations / INIT / "migration.sql"
    init_sql.write_text(init_sql.read_text() + "\n-- a harmless-looking edit\n")
    result = run_migrate("migrate", migrations_dir=migrations)
    assert result.returncode != 0
    assert f"migration {INIT} was changed after it was applied" in result.stderr
    assert not table_exists(fresh_db, "Next")
    assert run_migrate("status", migrations_dir=migrations).returncode == 1


def test_no_transaction_marker_runs_create_index_concurrently(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    migrations = copy_migrations(tmp_path)
    add_migration(
        migrations,
        "20261125100000_concurrent_index",
        f"{migrate.NO_TRANSACTION_MARKER}\n"
        '-- CreateIndex\nCREATE INDEX CONCURRENTLY "User_name_idx" ON "User"("name");\n',
    )
    result = run_migrate("migrate", migrations_dir=migrations)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(fresh_db.admin_conninfo) as conn:
        index = conn.execute(
            "SELECT pg_get_userbyid(c.relowner), x.indisvalid FROM pg_class c"
            " JOIN pg_index x ON x.indexrelid = c.oid WHERE c.relname = 'User_name_idx'"
        ).fetchone()
    assert index == ("spike_owner", True)


def test_connection_failure_is_one_clear_line(
    fresh_db: FreshDatabase, credentials_file: Path, tmp_path: Path
) -> None:
    env = migrate_env(fresh_db)
    cases = {
        "postgresql://spike_admin:s3cret-pw@127.0.0.1:1/spike_land": (
            "cannot connect to spike_admin@127.0.0.1:1"
        ),
        fresh_db.admin_url.replace(
            fresh_db.cluster.admin_password, "wrong-s3cret"
        ): "password authentication",
        "postgresql://spike_admin:s3cret-pw@[bad": "database URL is malformed",
        "": "no database",
    }
    for url, expected in cases.items():
        result = subprocess.run(
            migrate_command("migrate", "--credentials", str(credentials_file)),
            env={**env, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "s3cret" not in result.stderr and fresh_db.cluster.admin_password not in result.stderr


def test_bad_credentials_file_is_a_clear_error(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    cases = {
        '{"spike_app": "x"}': "no credentials for spike_migrator, spike_readonly, spike_monitor",
        "[1, 2]": "expected a JSON object",
        "{not json": "not valid JSON",
    }
    for text, expected in cases.items():
        path = tmp_path / "bad.json"
        path.write_text(text)
        result = run_migrate("migrate", credentials=path)
        assert result.returncode == 2
        assert expected in result.stderr
    assert not table_exists(fresh_db, "_prisma_migrations")


def test_before_apply_hook_runs_first_and_only_with_pending_migrations(
    fresh_db: FreshDatabase, role_passwords: dict[str, str]
) -> None:
    """The --stack flow's pre-migration snapshot hangs here: before any change, only when there is work."""
    calls: list[list[str]] = []

    def refuse(pending: list[migrate.Migration]) -> None:
        calls.append([m.name for m in pending])
        raise DbctlError("snapshot failed")

    verifiers = verifiers_from_mapping(secret_shaped(role_passwords), "test")
    with pytest.raises(DbctlError, match="snapshot failed"):
        deploy.run_migrate(fresh_db.admin_conninfo, verifiers, before_apply=refuse)
    assert calls == [[INIT]]
    assert not table_exists(fresh_db, "_prisma_migrations")

    deploy.run_migrate(fresh_db.admin_conninfo, verifiers, before_apply=lambda pending: calls.append([]))
    assert calls == [[INIT], []]
    deploy.run_migrate(
        fresh_db.admin_conninfo, verifiers, before_apply=lambda pending: calls.append(["again"])
    )
    assert calls == [[INIT], []]


def test_a_held_lock_makes_the_runner_wait_then_say_who_holds_it(
    fresh_db: FreshDatabase, run_migrate: RunMigrate
) -> None:
    with psycopg.connect(
        fresh_db.admin_conninfo, autocommit=True, application_name="prisma-migrate"
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        result = run_migrate("migrate", "--lock-wait", "1")
    assert result.returncode == 2
    assert "another migration run holds advisory lock 72707369" in result.stderr
    assert "prisma-migrate" in result.stderr
    assert not table_exists(fresh_db, "_prisma_migrations")
    assert run_migrate("migrate").returncode == 0  # released with the session


def test_credentials_problems_are_lines_and_json_errors_are_json(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path, credentials_file: Path
) -> None:
    """Non-UTF-8 and control characters were tracebacks; now one line each, or one JSON object."""
    good = json.loads(credentials_file.read_text())
    bad_utf8 = tmp_path / "latin1.json"
    bad_utf8.write_bytes(json.dumps(good).encode()[:-1] + b', "note": "caf\xe9"}')
    control = tmp_path / "control.json"
    control.write_text(json.dumps({**good, "spike_app": {**good["spike_app"], "password": "a\x07b"}}))
    for path, expected in ((bad_utf8, "is not UTF-8"), (control, "spike_app.password holds control")):
        text = run_migrate("migrate", credentials=path)
        assert text.returncode == 2
        assert text.stderr.startswith("error: ") and expected in text.stderr
        assert len(text.stderr.strip().splitlines()) == 1 and "Traceback" not in text.stderr
        machine = run_migrate("migrate", "--json", credentials=path)
        assert machine.returncode == 2 and machine.stderr == ""
        report = json.loads(machine.stdout)
        assert report["ok"] is False and expected in report["error"] and len(report["errors"]) == 1
    several = tmp_path / "several.json"
    several.write_text(json.dumps({**good, "spike_app": "md5" + "0" * 32, "spike_monitor": "plain"}))
    result = run_migrate("migrate", credentials=several)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "spike_app is an md5 hash" in lines[0] and "spike_monitor is a plaintext password" in lines[1]
    assert not table_exists(fresh_db, "_prisma_migrations")


def test_the_history_table_is_never_writable_by_the_app_even_after_a_failed_first_run(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path, role_passwords: dict[str, str]
) -> None:
    """Today a first run failing before its grants step left _prisma_migrations writable by spike_app."""
    migrations = copy_migrations(tmp_path)
    add_migration(migrations, "20261125090000_broken", "SELECT * FROM no_such_table;\n")
    result = run_migrate("migrate", migrations_dir=migrations)
    assert result.returncode == 2 and "20261125090000_broken failed" in result.stderr
    with psycopg.connect(fresh_db.admin_conninfo, autocommit=True) as admin:
        privileges = admin.execute(
            "SELECT r, p, has_table_privilege(r, '_prisma_migrations', p) FROM"
            " unnest(ARRAY['spike_app', 'spike_readonly', 'spike_monitor']) r,"
            " unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p"
        ).fetchall()
    assert [row for row in privileges if row[2]] == []
    app_login = fresh_db.conninfo("spike_app", role_passwords["spike_app"])
    with psycopg.connect(app_login) as app, pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute("UPDATE _prisma_migrations SET finished_at = now(), logs = NULL")


@pytest.mark.parametrize(
    "escape",
    [
        "RESET ROLE;\nCREATE TABLE escaped (id int);\n",
        "RESET ROLE;\nCREATE TABLE escaped (id int);\nSET ROLE spike_owner;\n",
    ],
)
def test_a_migration_that_escapes_spike_owner_is_refused_and_not_recorded(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path, escape: str
) -> None:
    migrations = copy_migrations(tmp_path)
    assert run_migrate("migrate", migrations_dir=migrations).returncode == 0
    add_migration(migrations, "20261125090000_escape", escape)
    result = run_migrate("migrate", migrations_dir=migrations)
    assert result.returncode == 2
    assert "migration 20261125090000_escape" in result.stderr and "spike_owner" in result.stderr
    assert "RESET ROLE or SET ROLE" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not table_exists(fresh_db, "escaped")
    assert [row[0] for row in history(fresh_db)] == [INIT]
    status = run_migrate("status", migrations_dir=migrations)
    assert status.returncode == 1 and "pending   20261125090000_escape" in status.stdout
