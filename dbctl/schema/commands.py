"""The verbs behind `dbctl migrate`, `dbctl migrate resolve`, `dbctl status` and `dbctl report`.

Plain functions, as alembic's command.py: each takes where to connect and its flags as plain values,
returns data or raises DbctlError (or psycopg.Error). dbctl/cli/ parses the options, calls one, prints what
it returns and sets the exit code; dbctl/cli/targets.py turns --database-url / --stack / --credentials into
the `Database` they take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.schema import deploy
from dbctl.schema.connection import Target, connect
from dbctl.schema.credentials import PasswordSource
from dbctl.schema.migrate import MIGRATIONS_DIR, load_migrations, resolve_rolled_back
from dbctl.schema.report import DEFAULT_TOP_N, PoolsReader, collect, show_pools

Say = Callable[[str], None]


@dataclass(frozen=True)
class Database:
    """Where to connect as the admin, the login users' verifiers to set, and what to run before applying."""

    url: str
    verifiers: dict[str, str] | None
    before_apply: deploy.BeforeApply | None = None
    # The verifiers are the auth source PgBouncer checks (--stack's secrets), not an operator's file.
    auth_source: bool = False


def migrate(
    database: Database,
    *,
    migrations_dir: Path = MIGRATIONS_DIR,
    dry_run: bool = False,
    lock_wait: float = 60.0,
    echo: deploy.Echo | None = None,
    reset_passwords: bool = False,
) -> deploy.Report:
    """Apply pending migrations and converge roles and maintenance (the post-deploy step). A password
    dbctl already set changes only from the auth source, or with reset_passwords (--reset-passwords)."""
    if database.verifiers is None:
        raise DbctlError("pass --credentials FILE (each login role's SCRAM verifier)")
    if database.auth_source:
        if reset_passwords:
            raise DbctlError("--reset-passwords goes with --credentials; --stack sets the secrets' passwords")
        passwords = PasswordSource.AUTH_SOURCE
    else:
        passwords = PasswordSource.RESET if reset_passwords else PasswordSource.FILE
    return deploy.run_migrate(
        database.url,
        database.verifiers,
        migrations_dir=migrations_dir,
        dry_run=dry_run,
        lock_wait=lock_wait,
        before_apply=database.before_apply,
        echo=echo,
        passwords=passwords,
    )


def status(
    database: Database, *, migrations_dir: Path = MIGRATIONS_DIR, echo: deploy.Echo | None = None
) -> deploy.Report:
    """Applied, pending and failed migrations and drift (passwords unchecked without verifiers); with a
    --credentials file, each password migrate would refuse to move is a drift line that says so."""
    passwords = PasswordSource.AUTH_SOURCE if database.auth_source else PasswordSource.FILE
    return deploy.status(
        database.url, database.verifiers, migrations_dir=migrations_dir, echo=echo, passwords=passwords
    )


def resolve(
    database: Database, rolled_back: str, *, migrations_dir: Path = MIGRATIONS_DIR
) -> tuple[Target, list[str]]:
    """Mark the failed migration `rolled_back` as rolled back, dropping the INVALID indexes its
    CREATE INDEX CONCURRENTLY left; return where (no password) and one line per index dropped."""
    migrations = load_migrations(migrations_dir) if migrations_dir.is_dir() else []
    conn, where = connect(database.url, application_name="dbctl migrate resolve")
    with conn:
        dropped = resolve_rolled_back(conn, rolled_back, migrations)
    return where, dropped


def report(
    conninfo: str,
    *,
    pgbouncer_url: str | None = None,
    pools: PoolsReader | None = None,
    top_n: int = DEFAULT_TOP_N,
    note: Say | None = None,
) -> tuple[Target, dict[str, Any]]:
    """The monitoring sections, read-only, with SHOW POOLS from pgbouncer_url (else `pools`)."""
    if pgbouncer_url:
        url = pgbouncer_url
        pools = lambda: show_pools(url)  # noqa: E731
    conn, where = connect(conninfo, application_name="dbctl report")
    with conn:
        # Said before the queries run: a failure as another role is then explained.
        if note and where.user and names.role_of_user(where.user) != names.MONITOR_ROLE:
            note(
                f"note: connected as {where.user}, not {names.MONITOR_ROLE}: other roles' rows may be hidden"
            )
        return where, collect(conn, pools=pools, top_n=top_n)
