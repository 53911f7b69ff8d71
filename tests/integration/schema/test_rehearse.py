"""`dbctl migrate rehearse` on a real local stack with some thousands of rows: the locks of a NOT NULL column
add and of a plain index are reported, the concurrent index blocks nothing, the primary is untouched, the
scratch copy is dropped; bad input is one line each."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbctl.cli.targets import ROOT_ENV_VAR
from dbctl.schema.migrate import MIGRATIONS_DIR
from tests.integration.conftest import REPO_ROOT
from tests.integration.local.test_local import LocalStack, dbctl_local, running_stack

pytestmark = pytest.mark.integration
USERS = 5000
CHANGES = {
    "20261201000000_user_plan": 'ALTER TABLE "User" ADD COLUMN "plan" TEXT NOT NULL DEFAULT \'free\';\n',
    "20261201000001_user_plan_index": 'CREATE INDEX "User_plan_idx" ON "User"("plan");\n',
    "20261201000002_user_name_index": (
        '-- CreateIndex\nCREATE INDEX CONCURRENTLY "User_name_idx" ON "User"("name");\n'
    ),
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack("--no-replica") as s:
        with s.connect("DIRECT_URL") as conn:
            conn.execute(
                'INSERT INTO "User" (id, email, name, "updatedAt")'
                " SELECT 'u' || i, 'u' || i || '@x.test', 'name ' || i, now() FROM generate_series(1, %s) i",
                (USERS,),
            )
        yield s


@pytest.fixture(scope="module")
def migrations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("rehearse") / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    for name, text in CHANGES.items():
        (target / name).mkdir()
        (target / name / "migration.sql").write_text(text)
    return target


def rehearse(
    stack: LocalStack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(
        [sys.executable, "-m", "dbctl", "migrate", "rehearse", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
        env={**base, **(env or {}), ROOT_ENV_VAR: str(stack.root), "PYTHONPATH": str(REPO_ROOT)},
    )


def primary_fingerprint(stack: LocalStack) -> tuple[object, ...]:
    """The primary's data and schema as the rehearsal could change them: rows, history, columns, indexes."""
    with stack.connect("DIRECT_URL") as conn:
        rows = conn.execute("SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM \"User\" u").fetchone()
        history = conn.execute(
            "SELECT migration_name, checksum FROM _prisma_migrations ORDER BY 1"
        ).fetchall()
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'User'"
        ).fetchone()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'User' ORDER BY 1"
        ).fetchall()
        databases = conn.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall()
    return rows, tuple(history), columns, tuple(indexes), tuple(databases)


def test_without_a_backup_it_is_one_line(stack: LocalStack, migrations: Path) -> None:
    result = rehearse(stack, "--migrations-dir", str(migrations))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: no backup in {stack.paths.backup_dir} to rehearse on; take one with `dbctl local backup`"
    )


def test_the_rehearsal_reports_each_migrations_locks_and_leaves_the_primary_alone(
    stack: LocalStack, migrations: Path
) -> None:
    assert dbctl_local(stack.root, "backup").returncode == 0
    before = primary_fingerprint(stack)
    result = rehearse(stack, "--migrations-dir", str(migrations), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {m["name"]: m for m in report["migrations"]}
    assert list(by_name) == list(CHANGES)
    plan, plain, concurrent = (by_name[name] for name in CHANGES)
    assert (plan["strongest_lock"], plan["relation"]) == ("AccessExclusiveLock", "public.User")
    assert plan["blocks"] == "reads and writes" and plan["held_seconds"] > 0
    assert "fires when an app transaction holds public.User for more than 10s" in plan["lock_timeout"]
    assert (plain["strongest_lock"], plain["relation"], plain["blocks"]) == (
        "ShareLock",
        "public.User",
        "writes",
    )
    assert concurrent["ok"] and concurrent["blocks"] == "nothing the app does"
    assert concurrent["strongest_lock"] in (
        "",
        "ShareUpdateExclusiveLock",
        "AccessShareLock",
        "RowExclusiveLock",
    )
    assert "cannot fire against the app's queries" in concurrent["lock_timeout"]
    assert all(m["seconds"] > 0 for m in report["migrations"])
    assert primary_fingerprint(stack) == before  # no row, history, column, index or database changed or left


def test_with_load_it_reports_the_longest_app_wait(stack: LocalStack, migrations: Path) -> None:
    result = rehearse(stack, "--migrations-dir", str(migrations), "--load")
    assert result.returncode == 0, result.stderr
    print(result.stdout)  # pytest -s shows the report and its figures
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("20261201000001_user_plan_index: ")
        and "ShareLock on public.User" in line
        and "longest app query under load" in line
        for line in lines
    ), result.stdout
    assert lines[-1].startswith("load: ") and int(lines[-1].split()[1]) > 0, lines[-1]
    assert "dropped spike_land_rehearse_" in result.stdout


def test_a_url_that_reaches_the_primary_is_refused_before_anything_runs(
    stack: LocalStack, migrations: Path
) -> None:
    before = primary_fingerprint(stack)
    primary = stack.env()["DIRECT_URL"]
    result = rehearse(stack, "--migrations-dir", str(migrations), env={"REHEARSE_DATABASE_URL": primary})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the rehearsal URL reaches the primary's own server (same postmaster start time); nothing was "
        "run. Give the URL of a copy: a PITR clone (docs/migrations.md) or `dbctl migrate rehearse` "
        "without a URL for the latest local backup"
    ]
    assert primary_fingerprint(stack) == before
    digest = hashlib.sha256(result.stderr.encode()).hexdigest()
    assert digest  # the message names no password
    assert stack.env()["DIRECT_URL"].split(":")[2].split("@")[0] not in result.stderr


def test_a_migration_that_fails_on_the_copy_says_why_and_nothing_to_resolve(
    stack: LocalStack, tmp_path: Path
) -> None:
    """Prisma's required column without a default, on a table with rows: it fails on the copy. The copy is
    dropped, so the line gives the cause, not the advice to resolve a failure that only the copy had."""
    failing = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, failing)
    (failing / "20261201000000_user_plan").mkdir()
    (failing / "20261201000000_user_plan" / "migration.sql").write_text(
        'ALTER TABLE "User" ADD COLUMN "plan" TEXT NOT NULL;\n'
    )
    assert dbctl_local(stack.root, "backup").returncode == 0
    before = primary_fingerprint(stack)
    result = rehearse(stack, "--migrations-dir", str(failing))
    assert result.returncode == 1, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("20261201000000_user_plan: "))
    assert "FAILED after" in line and 'column "plan" of relation "User" contains null values' in line, line
    assert "resolve" not in line, line
    assert "dropped spike_land_rehearse_" in result.stdout
    assert primary_fingerprint(stack) == before
