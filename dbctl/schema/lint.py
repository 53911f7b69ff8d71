"""`dbctl migrate lint`: squawk, the PostgreSQL migration linter, over every migration, tuned to this project.

- squawk comes from npm (``squawk-cli`` locked in tools/squawk/package-lock.json, its binary a per-platform
  optional dependency: ``npm ci --ignore-scripts`` installs it); ``find_squawk`` finds that binary.
- Its rules are tuned in the repository's ``.squawk.toml`` (PostgreSQL 17, what the runner already does).
  Each file is linted the way the runner applies it: ``--assume-in-transaction`` unless it runs outside one
  (the ``-- dbctl:no-transaction`` marker, or a lone statement such as ``CREATE INDEX CONCURRENTLY``).
- A finding names the migration, the line, the risk and the safe rewrite (``REWRITES``; squawk's own help
  for rules not listed). dbctl adds what squawk has no rule for: a statement that cannot run in a
  transaction mixed with others (the runner refuses it), an enum value added and used in one transaction,
  and an accepted finding without a reason.
- An engineer accepts a finding in the file with squawk's own comment, and a reason after a second ``--``
  (squawk ignores the text after it): ``-- squawk-ignore adding-required-field -- the table is new``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pglast import ast

from dbctl.core.errors import DbctlError
from dbctl.schema import statements
from dbctl.schema.migrate import MIGRATIONS_DIR, Migration, load_migrations

REPO = Path(__file__).resolve().parents[2]
SQUAWK_DIR = REPO / "tools" / "squawk"
CONFIG = REPO / ".squawk.toml"
INSTALL = "`.venv/bin/npm ci --ignore-scripts --prefix tools/squawk` (./dev test and ./dev migrate do it)"

# rule -> (risk, safe rewrite). The rewrites are written for Prisma: `prisma migrate dev --create-only`,
# then edit the SQL before it is applied.
REWRITES: dict[str, tuple[str, str]] = {
    "require-concurrent-index-creation": (
        "CREATE INDEX holds a SHARE lock: every write to the table waits for the whole build",
        "CREATE INDEX CONCURRENTLY, alone in a migration of its own (dbctl and prisma migrate deploy run it "
        "outside a transaction)",
    ),
    "require-concurrent-index-deletion": (
        "DROP INDEX takes an ACCESS EXCLUSIVE lock: reads and writes of the table wait",
        "DROP INDEX CONCURRENTLY, alone in a migration of its own",
    ),
    "adding-required-field": (
        "ADD COLUMN … NOT NULL without a default fails on a table with rows (column contains null values), "
        "and takes an ACCESS EXCLUSIVE lock on the table",
        "add the column nullable; backfill in batches; ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; "
        "VALIDATE CONSTRAINT c (next migration); then SET NOT NULL (no scan: the CHECK proves it) and drop c",
    ),
    "adding-not-nullable-field": (
        "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
        "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c in the next migration; "
        "then SET NOT NULL (no scan: the validated CHECK proves it) and DROP CONSTRAINT c",
    ),
    "changing-column-type": (
        "a type change rewrites the table and its indexes under an ACCESS EXCLUSIVE lock",
        "add a new column of the new type, backfill it, move the app to it, drop the old column later",
    ),
    "prefer-text-field": (
        "changing a varchar's length takes an ACCESS EXCLUSIVE lock (shortening it rewrites the table)",
        "TEXT with ADD CONSTRAINT c CHECK (char_length(col) <= n) NOT VALID, then VALIDATE CONSTRAINT c",
    ),
    "constraint-missing-not-valid": (
        "a new constraint scans the whole table while it blocks writes",
        "ADD CONSTRAINT … NOT VALID in one migration, then ALTER TABLE … VALIDATE CONSTRAINT … in the next",
    ),
    "adding-foreign-key-constraint": (
        "a foreign key scans the table while it blocks writes on both tables (SHARE ROW EXCLUSIVE)",
        "ADD CONSTRAINT … FOREIGN KEY … NOT VALID in one migration, then VALIDATE CONSTRAINT … in the next",
    ),
    "disallowed-unique-constraint": (
        "ADD CONSTRAINT … UNIQUE builds its index under an ACCESS EXCLUSIVE lock",
        "CREATE UNIQUE INDEX CONCURRENTLY in a migration of its own, then ADD CONSTRAINT … UNIQUE USING "
        "INDEX",
    ),
    "adding-field-with-default": (
        "a volatile default rewrites the table under an ACCESS EXCLUSIVE lock",
        "add the column without the default, backfill in batches, then SET DEFAULT",
    ),
    "ban-concurrent-index-creation-in-transaction": (
        "CREATE INDEX CONCURRENTLY cannot run in a transaction: the migration fails",
        "move it into a migration of its own",
    ),
    "dbctl-mixed-no-transaction": (
        "a statement that cannot run in a transaction shares the file with others: dbctl refuses the "
        "migration, and prisma migrate deploy fails on it",
        "move that statement into a migration of its own",
    ),
    "dbctl-enum-value-in-transaction": (
        "ALTER TYPE … ADD VALUE commits only with the migration's transaction: a later statement of the same "
        "migration that uses the new value fails (unsafe use of new value)",
        "add the value in a migration of its own; use it from the next migration on",
    ),
    "dbctl-accept-without-reason": (
        "a finding is accepted without saying why it is safe",
        "write the reason after the rules: -- squawk-ignore RULE -- why it is safe here",
    ),
}
_IGNORE = re.compile(r"^\s*--\s*squawk-ignore(?P<file>-file)?(?P<rest>.*)$")


@dataclass(frozen=True)
class Finding:
    migration: str
    path: str
    line: int
    rule: str
    risk: str
    rewrite: str

    def text(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.risk}\n    safe rewrite: {self.rewrite}"


@dataclass(frozen=True)
class Accepted:
    migration: str
    line: int
    rules: str
    reason: str


@dataclass
class LintReport:
    squawk: str
    checked: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"clean": not self.findings, **asdict(self)}


def find_squawk(explicit: Path | None = None) -> Path:
    """The squawk binary: explicit, else the one tools/squawk installed. Raises one clear line if missing."""
    if explicit is not None:
        if explicit.is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise DbctlError(f"squawk not found at {explicit}; install the locked one: {INSTALL}")
    found = sorted((SQUAWK_DIR / "node_modules" / "@squawk-cli").glob("*/bin/squawk"))
    if not found:
        raise DbctlError(f"squawk is not installed (tools/squawk/node_modules); install it: {INSTALL}")
    return found[0]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _squawk(binary: Path, files: list[Path], in_transaction: bool) -> list[dict[str, object]]:
    if not files:
        return []
    flag = "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction"
    argv = [str(binary), "--config", str(CONFIG), flag, "--reporter", "json", *map(str, files)]
    env = {**os.environ, "SQUAWK_DISABLE_GITHUB_ANNOTATIONS": "1"}  # dbctl writes its own, with rewrites
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
    except OSError as exc:
        raise DbctlError(f"cannot run squawk ({binary}): {exc.strerror}; reinstall it: {INSTALL}") from None
    try:
        found: list[dict[str, object]] = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DbctlError(f"squawk failed (exit {result.returncode}): {last}") from None
    return found


def _comments(migration: Migration, display: str, report: LintReport) -> None:
    """Record the file's squawk-ignore comments; one without a reason is a finding."""
    for number, line in enumerate(migration.sql_text.splitlines(), start=1):
        match = _IGNORE.match(line)
        if not match:
            continue
        rules, _, reason = match["rest"].partition("--")
        rules = rules.strip() or "(every rule)"
        if reason.strip():
            report.accepted.append(Accepted(migration.name, number, rules, reason.strip()))
        else:
            risk, rewrite = REWRITES["dbctl-accept-without-reason"]
            report.findings.append(
                Finding(migration.name, display, number, "dbctl-accept-without-reason", risk, rewrite)
            )


def _enum_values_used_at_once(migration: Migration, display: str, report: LintReport) -> None:
    """A value added with ALTER TYPE … ADD VALUE and used by a later statement of the same transaction."""
    if migration.no_transaction:
        return
    try:
        found = statements.parse(migration.name, migration.sql_text)
    except DbctlError:
        return  # reported with the mode check
    for index, statement in enumerate(found):
        node = statement.node
        if isinstance(node, ast.AlterEnumStmt) and node.newVal and not node.oldVal:
            literal = "'" + node.newVal.replace("'", "''") + "'"
            if any(literal in later.text for later in found[index + 1 :]):
                risk, rewrite = REWRITES["dbctl-enum-value-in-transaction"]
                rule = "dbctl-enum-value-in-transaction"
                report.findings.append(Finding(migration.name, display, statement.line, rule, risk, rewrite))


def _select(migrations: list[Migration], only: list[str], directory: Path) -> list[Migration]:
    """The migrations named in only (a name, or a path ending in it); all when only is empty."""
    if not only:
        return migrations
    paths = [Path(item) for item in only]
    wanted = {p.parent.name if p.name == "migration.sql" else p.name for p in paths}
    unknown = sorted(wanted - {m.name for m in migrations})
    if unknown:
        raise DbctlError(
            f"no migration {unknown[0]} in {directory}; name one of its <timestamp>_<name> directories"
        )
    return [m for m in migrations if m.name in wanted]


def lint(
    migrations_dir: Path = MIGRATIONS_DIR, squawk: Path | None = None, only: list[str] | None = None
) -> LintReport:
    """The migrations in migrations_dir (those named in only, else all) through squawk and dbctl's own
    checks; raises only when it cannot lint (no squawk, not a migrations folder, an unknown name)."""
    binary = find_squawk(squawk)
    migrations = _select(load_migrations(migrations_dir), only or [], migrations_dir)
    report = LintReport(squawk=str(binary))
    by_path: dict[Path, tuple[Migration, str]] = {}
    in_tx: list[Path] = []
    outside: list[Path] = []
    for migration in migrations:
        path = migration.path.resolve()
        display = _display(migration.path)
        by_path[path] = (migration, display)
        report.checked.append(migration.name)
        _comments(migration, display, report)
        _enum_values_used_at_once(migration, display, report)
        try:
            alone = migration.no_transaction or migration.runs_alone()
        except DbctlError as exc:
            line = int(m[1]) if (m := re.search(r"line (\d+)", str(exc))) else 1
            risk, rewrite = REWRITES["dbctl-mixed-no-transaction"]
            if "parser rejects" in str(exc):
                risk, rewrite = str(exc), "fix the SQL"
            report.findings.append(
                Finding(migration.name, display, line, "dbctl-mixed-no-transaction", risk, rewrite)
            )
            alone = False
        (outside if alone else in_tx).append(path)
    for in_transaction, files in ((True, in_tx), (False, outside)):
        for item in _squawk(binary, files, in_transaction):
            migration, display = by_path[Path(str(item["file"])).resolve()]
            rule = str(item["rule_name"])
            risk, rewrite = REWRITES.get(rule, (str(item["message"]), str(item.get("help") or "see squawk")))
            line = int(str(item["line"])) + 1  # squawk's JSON counts lines from 0
            report.findings.append(Finding(migration.name, display, line, rule, risk, rewrite))
    report.findings.sort(key=lambda f: (f.migration, f.line, f.rule))
    return report


def _escape(value: str, *, prop: bool = False) -> str:
    """GitHub workflow-command escaping (% \\r \\n, and , : in properties)."""
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return value.replace(":", "%3A").replace(",", "%2C") if prop else value


def github_annotations(report: LintReport) -> list[str]:
    """One `::error file=…,line=…` workflow command per finding: shown on the file's line in the PR."""
    return [
        f"::error file={_escape(f.path, prop=True)},line={f.line},title={_escape(f.rule, prop=True)}::"
        + _escape(f"{f.risk}. Safe rewrite: {f.rewrite}")
        for f in report.findings
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary(report: LintReport) -> str:
    """The job summary (Markdown): a table of findings, then the accepted ones with their reasons."""
    lines = ["## Migration lint (squawk)", ""]
    if report.findings:
        lines += ["| migration | line | rule | risk | safe rewrite |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| {_cell(f.migration)} | {f.line} | {_cell(f.rule)} | {_cell(f.risk)} | {_cell(f.rewrite)} |"
            for f in report.findings
        ]
    else:
        lines.append(f"{len(report.checked)} migration(s) checked: no findings.")
    if report.accepted:
        lines += ["", "Accepted in the migration files:", ""]
        lines += [
            f"- {a.migration} line {a.line}: {_cell(a.rules)}: {_cell(a.reason)}" for a in report.accepted
        ]
    return "\n".join(lines) + "\n"


def write_step_summary(report: LintReport) -> Path | None:
    """Append the summary to the file GitHub Actions names in GITHUB_STEP_SUMMARY; None outside Actions."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as out:
        out.write(summary(report))
    return Path(target)
