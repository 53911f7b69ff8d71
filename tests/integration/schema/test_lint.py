"""`dbctl migrate lint` with the real, locked squawk (tools/squawk) on migrations as Prisma writes them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dbctl.core.errors import DbctlError
from dbctl.schema import lint
from dbctl.schema.migrate import MIGRATIONS_DIR
from tests.integration.conftest import REPO_ROOT, migrate_command
from tests.integration.helpers import node_tool

pytestmark = pytest.mark.integration
INIT = "20261125060000_init"
STAMP = lint.SQUAWK_DIR / "node_modules" / ".installed-from-lock.sha256"


@pytest.fixture(scope="module", autouse=True)
def squawk_installed() -> None:
    """`npm ci --ignore-scripts` in tools/squawk unless node_modules came from this lock (as ./dev does)."""
    lock = hashlib.sha256((lint.SQUAWK_DIR / "package-lock.json").read_bytes()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text().strip() == lock):
        npm = node_tool("npm")
        assert npm, "npm not found: ./dev test installs Node.js"
        argv = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"]
        subprocess.run(argv, cwd=lint.SQUAWK_DIR, check=True, capture_output=True, timeout=600)
        STAMP.write_text(lock + "\n")
    version = subprocess.run(
        [str(lint.find_squawk()), "--version"], capture_output=True, text=True, check=True
    )
    locked = json.loads((lint.SQUAWK_DIR / "package.json").read_text())["dependencies"]["squawk-cli"]
    assert version.stdout.strip() == f"squawk {locked}"


def migrations_with(tmp_path: Path, *files: str) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, target)
    for number, text in enumerate(files):
        directory = target / f"2026120100000{number}_change_{number}"
        directory.mkdir()
        (directory / "migration.sql").write_text(text)
    return target


# Each dangerous pattern of issue 26 as `prisma migrate dev --create-only` writes it, the rule that must flag
# it, and words of the safe rewrite the finding must carry.
DANGEROUS = {
    "index without CONCURRENTLY": (
        '-- CreateIndex\nCREATE INDEX "User_name_idx" ON "User"("name");\n',
        "require-concurrent-index-creation",
        "CREATE INDEX CONCURRENTLY, alone in a migration of its own",
    ),
    "required column": (
        '-- AlterTable\nALTER TABLE "User" ADD COLUMN     "plan" TEXT NOT NULL;\n',
        "adding-required-field",
        "CHECK (col IS NOT NULL) NOT VALID",
    ),
    "SET NOT NULL": (
        '-- AlterTable\nALTER TABLE "User" ALTER COLUMN "name" SET NOT NULL;\n',
        "adding-not-nullable-field",
        "VALIDATE CONSTRAINT c in the next migration",
    ),
    "type change": (
        '-- AlterTable\nALTER TABLE "User" ALTER COLUMN "name" SET DATA TYPE INTEGER USING 0;\n',
        "changing-column-type",
        "add a new column of the new type, backfill it",
    ),
    "foreign key": (
        '-- AddForeignKey\nALTER TABLE "App" ADD CONSTRAINT "App_owner_fkey" FOREIGN KEY ("userId") '
        'REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE;\n',
        "adding-foreign-key-constraint",
        "NOT VALID in one migration, then VALIDATE CONSTRAINT",
    ),
    "enum value used at once": (
        "-- AlterEnum\nALTER TYPE \"AppStatus\" ADD VALUE 'PAUSED';\n\n"
        'UPDATE "App" SET "status" = \'PAUSED\' WHERE "status" = \'ARCHIVED\';\n',
        "dbctl-enum-value-in-transaction",
        "add the value in a migration of its own",
    ),
    "CONCURRENTLY mixed with other statements": (
        '-- CreateIndex\nCREATE INDEX CONCURRENTLY "User_name_idx" ON "User"("name");\n\n'
        'ALTER TABLE "User" ADD COLUMN "nick" TEXT;\n',
        "dbctl-mixed-no-transaction",
        "move that statement into a migration of its own",
    ),
}


@pytest.mark.parametrize("case", DANGEROUS, ids=list(DANGEROUS))
def test_each_dangerous_pattern_is_flagged_with_its_safe_rewrite(tmp_path: Path, case: str) -> None:
    text, rule, rewrite = DANGEROUS[case]
    report = lint.lint(migrations_with(tmp_path, text))
    assert report.checked == [INIT, "20261201000000_change_0"]
    flagged = [f for f in report.findings if f.rule == rule]
    assert flagged, [f.rule for f in report.findings]
    (finding,) = flagged[:1]
    assert finding.migration == "20261201000000_change_0"
    assert finding.line == 2
    assert rewrite in finding.rewrite
    assert finding.risk


def test_the_projects_own_migrations_and_the_safe_rewrites_are_clean(tmp_path: Path) -> None:
    assert lint.lint(MIGRATIONS_DIR).findings == []
    safe = migrations_with(
        tmp_path,
        '-- AlterTable\nALTER TABLE "User" ADD COLUMN "plan" TEXT;\n\n'
        'ALTER TABLE "User" ADD CONSTRAINT "User_plan_not_null" CHECK ("plan" IS NOT NULL) NOT VALID;\n',
        '-- CreateIndex\nCREATE INDEX CONCURRENTLY "User_plan_idx" ON "User"("plan");\n',
        'ALTER TABLE "User" VALIDATE CONSTRAINT "User_plan_not_null";\n',
        # squawk cannot see the CHECK validated in the migration before: accepted, with the reason.
        "-- squawk-ignore adding-not-nullable-field -- the validated CHECK proves no NULL: no scan\n"
        'ALTER TABLE "User" ALTER COLUMN "plan" SET NOT NULL;\n'
        'ALTER TABLE "User" DROP CONSTRAINT "User_plan_not_null";\n',
        '-- AddForeignKey\nALTER TABLE "App" ADD CONSTRAINT "App_owner_fkey" FOREIGN KEY ("userId") '
        'REFERENCES "User"("id") NOT VALID;\n',
        # A constant default needs no rewrite since PostgreSQL 11: clean because .squawk.toml says 17.
        '-- AlterTable\nALTER TABLE "User" ADD COLUMN "credits" INTEGER NOT NULL DEFAULT 0;\n',
    )
    assert [f.text() for f in lint.lint(safe).findings] == []


def test_an_accepted_finding_is_not_reported_and_its_reason_is_kept(tmp_path: Path) -> None:
    accepted = (
        '-- squawk-ignore require-concurrent-index-creation -- "Tag" is created empty in this migration\n'
        'CREATE INDEX "User_name_idx" ON "User"("name");\n'
    )
    no_reason = (
        "-- squawk-ignore require-concurrent-index-creation\n"
        'CREATE INDEX "User_email2_idx" ON "User"("email");\n'
    )
    report = lint.lint(migrations_with(tmp_path, accepted, no_reason))
    assert [(f.migration, f.line, f.rule) for f in report.findings] == [
        ("20261201000001_change_1", 1, "dbctl-accept-without-reason")
    ]
    assert [(a.migration, a.line, a.rules, a.reason) for a in report.accepted] == [
        (
            "20261201000000_change_0",
            1,
            "require-concurrent-index-creation",
            '"Tag" is created empty in this migration',
        )
    ]


def run_lint(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        migrate_command("migrate", "lint", *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env=env,
    )


def test_the_command_prints_findings_annotations_and_a_job_summary(tmp_path: Path) -> None:
    migrations = migrations_with(tmp_path, DANGEROUS["required column"][0])
    summary = tmp_path / "summary.md"
    result = run_lint(
        "--migrations-dir",
        str(migrations),
        "--github",
        env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 1, result.stderr
    path = migrations / "20261201000000_change_0" / "migration.sql"
    assert f"{path}:2: adding-required-field: ADD COLUMN … NOT NULL without a default" in result.stdout
    assert "    safe rewrite: add the column nullable; backfill in batches;" in result.stdout
    assert "2 migration(s) checked: 1 finding(s)" in result.stdout
    assert f"::error file={path},line=2,title=adding-required-field::ADD COLUMN" in result.stdout
    table = summary.read_text()
    assert "| 20261201000000_change_0 | 2 | adding-required-field |" in table
    clean = run_lint("--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["clean"] is True


def test_missing_squawk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_lint("--squawk", str(tmp_path / "squawk"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: squawk not found at {tmp_path / 'squawk'}; install the locked one: {lint.INSTALL}"
    ]
    monkeypatch.setattr(lint, "SQUAWK_DIR", tmp_path)
    with pytest.raises(DbctlError, match=r"^squawk is not installed \(tools/squawk/node_modules\); install"):
        lint.lint(MIGRATIONS_DIR)


def test_only_the_named_migrations_are_linted(tmp_path: Path) -> None:
    migrations = migrations_with(tmp_path, DANGEROUS["required column"][0], DANGEROUS["foreign key"][0])
    second = migrations / "20261201000001_change_1"
    report = lint.lint(migrations, only=[str(second / "migration.sql"), INIT])
    assert report.checked == [INIT, "20261201000001_change_1"]
    assert {f.migration for f in report.findings} == {"20261201000001_change_1"}
    with pytest.raises(DbctlError, match=rf"^no migration 20991231000000_x in {migrations}; name one of its"):
        lint.lint(migrations, only=["20991231000000_x"])
