"""The local stack's migrations and roles: `dbctl migrate`'s own functions (dbctl.schema.deploy) run against
the local cluster as its master role, direct, with a pg_dump before pending migrations are applied.

`.local/credentials.json` is the auth source PgBouncer's userlist is rendered from, so its verifiers may set
any password (dbctl.schema.credentials.PasswordSource.AUTH_SOURCE). A failed migration is resolved with
`dbctl local resolve --rolled-back NAME` (the local stack's `dbctl migrate resolve`); `local_advice` turns
the runner's advice into that command."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import psycopg

from dbctl.core import names
from dbctl.local import backup as local_backup
from dbctl.local.stack import Echo, Stack
from dbctl.local.state import Credential
from dbctl.schema import deploy, migrate
from dbctl.schema.credentials import PasswordSource

# What the runner's messages advise (dbctl/schema/migrate.py), and the local stack's counterpart, which needs
# no admin URL: tests/unit/local/test_local_migrations.py checks the runner still says it.
MIGRATE_RESOLVE = "dbctl migrate resolve --rolled-back"
LOCAL_RESOLVE = "dbctl local resolve --rolled-back"


def login_verifiers(creds: Mapping[str, Credential]) -> dict[str, str]:
    """The roles step's {login user: verifier}: the migrator's and every pooled user's that has one."""
    return {user: v for role in names.LOGIN_ROLES for user, v in creds[role].verifiers().items()}


def pre_migration_dump(stack: Stack, echo: Echo) -> deploy.BeforeApply:
    """The local counterpart of prod's pre-migration snapshot: before pending migrations are applied to a
    database that has a migration history (a new, empty one has nothing to lose), a pg_dump kept for ever."""

    def dump(pending: list[migrate.Migration]) -> None:
        with psycopg.connect(stack.cluster.admin_conninfo(), autocommit=True) as conn:
            history = conn.execute("SELECT to_regclass('public._prisma_migrations')").fetchone()
        if history == (None,):
            return
        now = dt.datetime.now(dt.UTC)
        path = local_backup.take_backup(stack.cluster, stack.paths.backup_dir, now, pending[0].name, echo)
        echo(f"  pre-migration dump: {path}")

    return dump


def local_advice(message: str) -> str:
    """A runner's message with the local stack's resolve command in place of `dbctl migrate resolve`."""
    return message.replace(MIGRATE_RESOLVE, LOCAL_RESOLVE)


def apply_migrations(stack: Stack, echo: Echo, migrations_dir: Path = migrate.MIGRATIONS_DIR) -> bool:
    """`dbctl migrate`'s own function (dbctl.schema.deploy.run_migrate), as the master role, direct; a
    pre-migration dump first when migrations are pending. True when it changed anything."""
    report = deploy.run_migrate(
        stack.cluster.admin_url(),
        login_verifiers(stack.creds),
        migrations_dir=migrations_dir,
        before_apply=pre_migration_dump(stack, echo),
        echo=lambda step: echo(f"  {step.line().strip()}"),
        passwords=PasswordSource.AUTH_SOURCE,
    )
    echo(
        f"migrations and roles: {'changed' if report.changed else 'nothing to do'} ({report.total_ms:.0f} ms)"
    )
    return report.changed


def migration_status(stack: Stack) -> tuple[bool, str]:
    """(up to date?, one line): applied/pending/failed migrations and role drift (dbctl status's function)."""
    report = deploy.status(stack.cluster.admin_url(), login_verifiers(stack.creds))
    parts = [f"{len(report.applied)} applied"]
    if report.pending:
        parts.append(f"{len(report.pending)} pending ({', '.join(report.pending)})")
    if report.failed:
        parts.append(f"{len(report.failed)} failed ({', '.join(f['name'] for f in report.failed)})")
    parts += report.problems + report.drift
    parts.append(
        f"role drift: {len(report.role_changes)} change(s)" if report.role_changes else "roles: no drift"
    )
    ok = not report.changed
    return ok, _verdict(report) + ", ".join(parts)


def _verdict(report: deploy.Report) -> str:
    """The line's head: up to date, or the command that fixes what is not (`up` converges everything but a
    failed migration, which needs resolving first)."""
    if not report.changed:
        return "up to date; "
    if report.failed:
        name = report.failed[0]["name"]
        return f"NOT up to date (fix the migration, then `{LOCAL_RESOLVE} {name}` and `dbctl local up`); "
    repairable = report.pending or report.role_changes or report.maintenance
    if report.problems or (report.drift and not repairable):
        return "NOT up to date (`dbctl local up` cannot repair this: see each item); "
    return "NOT up to date (run `dbctl local up`: it applies pending migrations and repairs role drift); "
