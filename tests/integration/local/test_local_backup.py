"""`dbctl local backup` and `restore-test` against a real local stack (the CLI as a separate process), and the
pre-migration dump `up` takes before it applies pending migrations.

Tests run in file order on one stack: the restore test without a backup, a backup and a matching restore
test, a DELETE that the restore test reports, then a new migration with its pre-migration dump.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbctl.local import backup as local_backup
from dbctl.local import retention as local_retention
from dbctl.local.migrations import apply_migrations
from dbctl.local.stack import existing_stack
from dbctl.schema import migrate
from tests.integration.local.test_local import LocalStack, dbctl_local, running_stack


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack() as s:
        yield s


def seed_rows(s: LocalStack, users: int, apps_per_user: int) -> None:
    """Rows in "User", "App" and "Requirement" (one per app), through the app's pooled URL."""
    with s.connect("DATABASE_URL") as conn:
        for _ in range(users):
            user = f"u_{uuid.uuid4().hex}"
            conn.execute(
                'INSERT INTO "User" (id, email, "updatedAt") VALUES (%s, %s, now())', (user, f"{user}@x.test")
            )
            for _ in range(apps_per_user):
                app = f"a_{uuid.uuid4().hex}"
                conn.execute(
                    'INSERT INTO "App" (id, name, "userId", "updatedAt") VALUES (%s, %s, %s, now())',
                    (app, "app", user),
                )
                conn.execute(
                    'INSERT INTO "Requirement" (id, "appId", description, "updatedAt") '
                    "VALUES (%s, %s, 'r', now())",
                    (f"r_{uuid.uuid4().hex}", app),
                )


def live_counts(s: LocalStack) -> dict[str, int | None]:
    with s.connect("DIRECT_URL") as conn:
        return local_backup.read_facts(conn).counts


def scratch_databases(s: LocalStack) -> list[str]:
    with s.connect("DIRECT_URL") as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%restore_test%'").fetchall()
    return [str(r[0]) for r in rows]


@pytest.mark.integration
def test_restore_test_without_a_backup_is_one_clear_line(stack: LocalStack) -> None:
    result = dbctl_local(stack.root, "restore-test")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "no backup in" in result.stderr and "dbctl local backup" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.integration
def test_backup_then_restore_test_reports_matching_counts(stack: LocalStack) -> None:
    seed_rows(stack, users=3, apps_per_user=2)
    result = dbctl_local(stack.root, "backup")
    assert result.returncode == 0, result.stderr
    backups = local_retention.list_backups(stack.paths.backup_dir)
    assert len(backups) == 1 and not backups[0].pre_migration
    path = stack.paths.backup_dir / backups[0].name
    assert f"backup  {path}" in result.stdout
    assert f"kept    {backups[0].name}  (daily, weekly, monthly)" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(stack.paths.backup_dir.stat().st_mode) == 0o700
    # A real custom-format archive that holds the tables' data.
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, text=True, check=True)
    assert "TABLE DATA public App " in listing.stdout

    result = dbctl_local(stack.root, "restore-test", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["backup"] == backups[0].name
    assert report["counts"] == {
        "User": {"backup": 3, "live": 3, "match": True},
        "App": {"backup": 6, "live": 6, "match": True},
        "Requirement": {"backup": 6, "live": 6, "match": True},
    }
    latest = migrate.load_migrations()[-1].name
    assert report["migrations"] == {"backup": latest, "live": latest, "match": True}
    assert scratch_databases(stack) == []


@pytest.mark.integration
def test_restore_test_reports_rows_deleted_since_the_backup(stack: LocalStack) -> None:
    before = live_counts(stack)
    assert before["App"], "the previous test's rows are the backup's"
    with stack.connect("DATABASE_URL") as conn:
        conn.execute('DELETE FROM "App"')  # cascades to "Requirement"
    result = dbctl_local(stack.root, "restore-test", "--json")
    assert result.returncode == 1, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["counts"]["App"] == {"backup": before["App"], "live": 0, "match": False}
    assert report["counts"]["Requirement"] == {"backup": before["Requirement"], "live": 0, "match": False}
    assert report["counts"]["User"]["match"] is True
    assert f'"App": backup has {before["App"]} rows, live has 0' in report["mismatches"]
    assert scratch_databases(stack) == []
    # The text form says the same, on stdout, and fails too.
    text = dbctl_local(stack.root, "restore-test")
    assert text.returncode == 1
    assert f"App         backup {before['App']}, live 0: MISMATCH" in text.stdout
    assert "restore test FAILED" in text.stdout


@pytest.mark.integration
def test_pg_dump_and_pg_restore_get_the_password_only_in_their_environment(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def recording_run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        env = kwargs.get("env")
        calls.append((list(args), dict(env) if isinstance(env, dict) else {}))
        return real_run(args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(subprocess, "run", recording_run)
    s = existing_stack(stack.paths)
    backup_dir = Path(stack.paths.state_dir / "backups-env-test")
    local_backup.take_backup(s.cluster, backup_dir, dt.datetime.now(dt.UTC))
    local_backup.restore_test(s.cluster, backup_dir)
    clients = [
        (a, e) for a, e in calls if Path(a[0]).name in ("pg_dump", "pg_restore") and "--version" not in a
    ]
    assert {Path(a[0]).name for a, _ in clients} == {"pg_dump", "pg_restore"}
    password = s.cluster.admin_password
    for args, env in clients:
        assert not any(password in arg for arg in args), args
        if "--list" not in args:
            assert env["PGPASSWORD"] == password and env["PGSSLMODE"] == "verify-full"
    shutil.rmtree(backup_dir)


@pytest.mark.integration
def test_two_backups_in_one_second_both_land_and_neither_is_overwritten(stack: LocalStack) -> None:
    """`up` again right after a failed migration took its pre-migration dump in the same second as the first
    attempt, and the name was taken: the whole `up` failed with "two backups in one second" (seen in CI).
    The second one is named for the next second instead."""
    s = existing_stack(stack.paths)
    backup_dir = Path(stack.paths.state_dir / "backups-same-second")
    now = dt.datetime.now(dt.UTC)
    first = local_backup.take_backup(s.cluster, backup_dir, now, "20991231000009_broken")
    first_bytes = first.read_bytes()
    second = local_backup.take_backup(s.cluster, backup_dir, now, "20991231000009_broken")
    assert first != second and first.exists() and first.read_bytes() == first_bytes
    taken = [b.taken_at for b in local_retention.list_backups(backup_dir, dt.datetime.now(dt.UTC))]
    assert len(taken) == 2 and taken[1] - taken[0] >= dt.timedelta(seconds=1)  # neither dated ahead
    shutil.rmtree(backup_dir)


@pytest.mark.integration
def test_pending_migrations_get_a_pre_migration_dump_of_the_database_before_them(
    stack: LocalStack, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, migrations)
    new = migrations / "20991231000000_add_backup_probe"
    new.mkdir()
    (new / "migration.sql").write_text('CREATE TABLE "BackupProbe" ("id" TEXT PRIMARY KEY);\n')
    lines: list[str] = []
    s = existing_stack(stack.paths)
    apply_migrations(s, lines.append, migrations_dir=migrations)

    dumps = [b for b in local_retention.list_backups(stack.paths.backup_dir) if b.pre_migration]
    assert [b.migration for b in dumps] == [new.name]
    assert any(f"pre-migration dump: {stack.paths.backup_dir / dumps[0].name}" in line for line in lines)
    listing = subprocess.run(
        ["pg_restore", "--list", str(stack.paths.backup_dir / dumps[0].name)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "TABLE public App " in listing and "BackupProbe" not in listing
    with stack.connect("DIRECT_URL") as conn:
        assert conn.execute("SELECT to_regclass('public.\"BackupProbe\"')").fetchone() != (None,)

    # Nothing pending now: no second dump. A later `backup` keeps the pre-migration dump.
    apply_migrations(s, lines.append, migrations_dir=migrations)
    assert len([b for b in local_retention.list_backups(stack.paths.backup_dir) if b.pre_migration]) == 1
    result = dbctl_local(stack.root, "backup")
    assert result.returncode == 0, result.stderr
    assert f"kept    {dumps[0].name}  (pre-migration)" in result.stdout


@pytest.mark.integration
def test_a_failed_pre_migration_dump_applies_nothing(stack: LocalStack, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, migrations)
    new = migrations / "20991231000001_never_applied"
    new.mkdir()
    (new / "migration.sql").write_text('CREATE TABLE "NeverApplied" ("id" TEXT PRIMARY KEY);\n')
    moved = stack.paths.backup_dir.rename(stack.paths.state_dir / "backups-aside")
    stack.paths.backup_dir.write_text("a file where the backup directory should be\n")
    try:
        with pytest.raises(local_backup.BackupError, match="make it a writable directory"):
            apply_migrations(existing_stack(stack.paths), lambda _: None, migrations_dir=migrations)
    finally:
        stack.paths.backup_dir.unlink()
        moved.rename(stack.paths.backup_dir)
    with stack.connect("DIRECT_URL") as conn:
        assert conn.execute("SELECT to_regclass('public.\"NeverApplied\"')").fetchone() == (None,)
        applied = conn.execute(
            "SELECT count(*) FROM _prisma_migrations WHERE migration_name = %s", (new.name,)
        )
        assert applied.fetchone() == (0,)


@pytest.mark.integration
def test_backup_of_a_stopped_stack_says_to_start_it(stack: LocalStack) -> None:
    assert dbctl_local(stack.root, "down").returncode == 0
    try:
        result = dbctl_local(stack.root, "backup")
        assert result.returncode == 2
        assert "not running" in result.stderr and "dbctl local up" in result.stderr
    finally:
        assert dbctl_local(stack.root, "up").returncode == 0
