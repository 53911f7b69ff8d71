"""The post-deploy step: migrations and roles against one database, with a line per step and timings.

``run_migrate(url, verifiers, ...)`` is what ``dbctl migrate`` (and ``dbctl local up``) call:

1. connect directly (never through PgBouncer) as the admin (master) user;
2. take Prisma's advisory lock 72707369 (waiting up to ``lock_wait`` seconds; an idle pooled-role session
   holding it is ended, as it cannot be a migration run);
3. read the migration plan; an unresolved failure or a changed applied file stops here, changing nothing,
   and so does a password the verifiers may not set (dbctl.schema.credentials: a ``--credentials`` file
   never changes a password dbctl or a rotation already set, unless ``PasswordSource.RESET``);
4. ``before_apply(pending)`` when there are pending migrations (the --stack flow takes a snapshot there);
5. converge roles and privileges (dbctl.roles), create ``_prisma_migrations`` as spike_owner if missing;
6. apply each pending migration in its own transaction, as spike_owner;
7. converge privileges again when migrations created objects (e.g. keep the app off ``_prisma_migrations``);
8. converge PgBouncer's session reset procedure (dbctl.schema.session_reset: spike_ops.reset_session());
9. converge scheduled maintenance (dbctl.maintenance: pg_cron's weekly VACUUM ANALYZE), or say why not.

``status(url, verifiers)`` reports applied/pending/failed migrations, role drift, history rows with no
migration file and objects in schema public not owned by spike_owner, without changing anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dbctl.core import roles
from dbctl.schema import maintenance, migrate, session_reset
from dbctl.schema.connection import connect
from dbctl.schema.credentials import PasswordSource, overwritten_users, refuse_overwrites

Echo = Callable[["Step"], None]
BeforeApply = Callable[[list[migrate.Migration]], None]


@dataclass
class Step:
    step: str
    detail: str
    ms: float = 0.0

    def line(self) -> str:
        return f"{self.ms:8.1f} ms  {self.step:<9} {self.detail}"


@dataclass
class Report:
    target: str = ""
    dry_run: bool = False
    changed: bool = False
    role_changes: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    maintenance: list[str] = field(default_factory=list)
    # status only: history rows without a migration file, objects not owned by spike_owner.
    drift: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Timer:
    def __init__(self, report: Report, echo: Echo | None) -> None:
        self.report, self.echo = report, echo

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        step = Step(name, detail)
        started = time.perf_counter()
        yield step
        step.ms = (time.perf_counter() - started) * 1000
        self.report.steps.append(step)
        if self.echo:
            self.echo(step)


def _describe(changes: list[roles.Change]) -> str:
    if not changes:
        return "no changes"
    head = "; ".join(c.description for c in changes[:3])
    more = f"; … {len(changes) - 3} more" if len(changes) > 3 else ""
    return f"{len(changes)} change(s): {head}{more}"


def run_migrate(
    url: str,
    verifiers: Mapping[str, str],
    *,
    migrations_dir: Path = migrate.MIGRATIONS_DIR,
    dry_run: bool = False,
    lock_wait: float = 60.0,
    before_apply: BeforeApply | None = None,
    echo: Echo | None = None,
    passwords: PasswordSource = PasswordSource.AUTH_SOURCE,
) -> Report:
    """Bring the database to the migrations and roles; raises DbctlError (one clear line) on any problem.

    passwords: where the verifiers come from (dbctl.schema.credentials.PasswordSource); the default, the
    auth source, may set any password (the verifiers are what PgBouncer checks)."""
    report = Report(dry_run=dry_run)
    timer = _Timer(report, echo)
    started = time.perf_counter()
    migrations = migrate.load_migrations(migrations_dir)
    with timer.step("connect") as step:
        conn, target = connect(url, application_name="dbctl migrate")
        report.target = step.detail = str(target)
    with conn, ExitStack() as held:
        with timer.step("lock", f"advisory lock {migrate.LOCK_KEY}") as step:
            ended = held.enter_context(migrate.advisory_lock(conn, timeout=lock_wait))
            if ended:
                step.detail += "; " + "; ".join(ended)
        with timer.step("plan") as step:
            plan = migrate.plan(conn, migrations)
            report.pending = [m.name for m in plan.pending]
            step.detail = f"{len(plan.applied)} applied, {len(plan.pending)} pending" + (
                f": {', '.join(report.pending)}" if report.pending else ""
            )
            refuse_overwrites(conn, verifiers, passwords)
        if plan.pending and before_apply is not None and not dry_run:
            with timer.step("pre-apply", "before applying pending migrations"):
                before_apply(plan.pending)
        with timer.step("roles") as step:
            changes = roles.plan(conn, verifiers)
            report.role_changes = [c.description for c in changes]
            if changes and not dry_run:
                roles.apply(conn, changes)
            step.detail = ("would make " if dry_run and changes else "") + _describe(changes)
        if dry_run:
            report.changed = bool(changes or plan.pending)
        else:
            created = migrate.ensure_history_table(conn)
            for migration in plan.pending:
                alone = migration.no_transaction or migration.runs_alone()
                with timer.step("apply", migration.name + (" (outside a transaction)" if alone else "")):
                    migrate.apply_one(conn, migration)
                report.applied.append(migration.name)
            if report.applied or created:
                with timer.step("grants") as step:
                    after = roles.plan(conn, verifiers)
                    roles.apply(conn, after)
                    report.role_changes += [c.description for c in after]
                    step.detail = _describe(after)
            report.pending = []
            report.changed = bool(changes or report.applied or created)
        with timer.step("reset") as step:
            resets = session_reset.plan(conn)
            report.maintenance = [c.description for c in resets]
            if resets and not dry_run:
                session_reset.apply(conn, resets)
            report.changed |= bool(resets)
            step.detail = ("would make " if dry_run and resets else "") + _describe(resets)
        with timer.step("maintain") as step:
            upkeep = maintenance.plan(conn)
            report.maintenance += [c.description for c in upkeep.changes]
            if upkeep.changes and not dry_run:
                maintenance.apply(conn, upkeep.changes)
            report.changed |= bool(upkeep.changes)
            step.detail = (
                f"skipped: {upkeep.skipped}"
                if upkeep.skipped
                else ("would make " if dry_run and upkeep.changes else "") + _describe(upkeep.changes)
            )
    report.total_ms = (time.perf_counter() - started) * 1000
    return report


def status(
    url: str,
    verifiers: Mapping[str, str] | None,
    *,
    migrations_dir: Path = migrate.MIGRATIONS_DIR,
    echo: Echo | None = None,
    passwords: PasswordSource = PasswordSource.AUTH_SOURCE,
) -> Report:
    """Applied, pending and failed migrations, checksum problems and role drift; changes nothing. With
    verifiers from a file (PasswordSource.FILE), a password the file would move is drift migrate refuses."""
    report = Report(dry_run=True)
    timer = _Timer(report, echo)
    started = time.perf_counter()
    migrations = migrate.load_migrations(migrations_dir)
    with timer.step("connect") as step:
        conn, target = connect(url, application_name="dbctl status")
        report.target = step.detail = str(target)
    with conn:
        with timer.step("history") as step:
            plan, problems = migrate.read_plan(conn, migrations)
            report.applied = plan.applied
            report.pending = [m.name for m in plan.pending]
            report.failed = [{"name": name, "log": log} for name, log in plan.failed]
            report.problems = problems
            step.detail = (
                f"{len(plan.applied)} applied, {len(plan.pending)} pending, {len(plan.failed)} failed"
                + (f", {len(problems)} changed after apply" if problems else "")
            )
        with timer.step("roles") as step:
            drift = roles.plan(conn, verifiers)
            report.role_changes = [c.description for c in drift]
            step.detail = "no drift" if not drift else "drift: " + _describe(drift)
            if verifiers and passwords is PasswordSource.FILE:
                report.role_changes += [
                    f"password of {user}: the file's verifier differs from the one dbctl or a rotation set, "
                    "and `dbctl migrate --credentials` refuses to change it (an older file would undo a "
                    "rotation): give the current verifiers, or --reset-passwords once PgBouncer's auth "
                    "source holds these"
                    for user in overwritten_users(conn, verifiers)
                ]
        with timer.step("reset") as step:
            resets = session_reset.plan(conn)
            report.maintenance = [c.description for c in resets]
            step.detail = "no drift" if not resets else "drift: " + _describe(resets)
        with timer.step("maintain") as step:
            upkeep = maintenance.plan(conn)
            report.maintenance += [c.description for c in upkeep.changes]
            step.detail = f"skipped: {upkeep.skipped}" if upkeep.skipped else _describe(upkeep.changes)
        with timer.step("objects") as step:
            report.drift = [
                f"migration {name} is in _prisma_migrations but has no directory in {migrations_dir}: "
                "restore it from version control (or from the tool that applied it)"
                for name in plan.unknown
            ] + roles.foreign_owned(conn)
            report.drift += [
                f'index "{schema}"."{index}" is INVALID (a CREATE INDEX CONCURRENTLY failed or was killed): '
                "writes maintain it, no query uses it. `dbctl migrate resolve --rolled-back NAME` drops it "
                f'when a failed migration made it, else: DROP INDEX CONCURRENTLY "{schema}"."{index}"'
                for schema, index in migrate.invalid_indexes(conn)
            ]
            step.detail = f"{len(report.drift)} drift item(s)" if report.drift else "no drift"
    report.changed = bool(
        report.pending
        or report.failed
        or report.problems
        or report.role_changes
        or report.maintenance
        or report.drift
    )
    report.total_ms = (time.perf_counter() - started) * 1000
    return report
