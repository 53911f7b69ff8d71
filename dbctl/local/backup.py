"""The seed's backups and monthly restore test, on the local stack (`dbctl local backup`, `restore-test`).

- ``take_backup(cluster, backup_dir, now, migration=None) -> Path``: ``pg_dump -Fc`` of ``spike_land`` into
  ``backup_dir`` (0700; the file 0600), named ``spike_land-<yyyymmddThhmmssZ>.dump``, or
  ``spike_land-<ts>-pre-migration-<first pending migration>.dump`` before ``up`` applies migrations. It is
  written to a hidden ``.partial`` file and renamed only when pg_dump succeeded, so a failed dump is never
  mistaken for a backup.
- ``plan_retention(backups, now) -> Retention``: the seed's tiers, pure (unit-tested on synthetic lists):
  the newest backup of each of the last 30 days, 12 weeks (Monday to Sunday, UTC) and 12 months is kept;
  pre-migration dumps are kept for ever; everything else is pruned. Files whose names this module did not
  write are never touched.
- ``restore_test(cluster, backup_dir) -> RestoreReport``: the seed's monthly procedure. Restore the latest
  backup into a scratch database, compare its migration history and the row counts of the critical tables
  with the live database, drop the scratch database (always, also when the restore fails).

pg_dump and pg_restore are the server's major version (``client_binary``); they get the password in
``PGPASSWORD`` in their own environment, never on a command line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.install import find_binary

CRITICAL_TABLES: Final = ("User", "App", "Requirement")
PRE_MIGRATION: Final = "pre-migration"
SUFFIX: Final = ".dump"
_STAMP: Final = "%Y%m%dT%H%M%SZ"
_NAME: Final = re.compile(
    rf"^{re.escape(names.DATABASE_NAME)}-(?P<stamp>\d{{8}}T\d{{6}}Z)"
    rf"(?:-{PRE_MIGRATION}-(?P<migration>[A-Za-z0-9_.-]+))?{re.escape(SUFFIX)}$"
)
# The seed's retention policy: (tier, how many of its periods, counting the current one).
TIERS: Final = (("daily", 30), ("weekly", 12), ("monthly", 12))
_MIGRATION_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")


class BackupError(DbctlError):
    """A dump, restore or restore test could not run; the message says why and what to do."""


# ---------------------------------------------------------------- names and retention (pure)


@dataclass(frozen=True, order=True)
class Backup:
    taken_at: dt.datetime
    name: str
    migration: str | None = None

    @property
    def pre_migration(self) -> bool:
        return self.migration is not None


def backup_name(now: dt.datetime, migration: str | None = None) -> str:
    stamp = now.astimezone(dt.UTC).strftime(_STAMP)
    tail = f"-{PRE_MIGRATION}-{_MIGRATION_NAME_UNSAFE.sub('_', migration)}" if migration else ""
    return f"{names.DATABASE_NAME}-{stamp}{tail}{SUFFIX}"


def parse_backup(name: str) -> Backup | None:
    """The backup a file name stands for, or None when this module did not write that name."""
    match = _NAME.match(name)
    if match is None:
        return None
    taken_at = dt.datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=dt.UTC)
    return Backup(taken_at, name, match["migration"])


def _period(tier: str, day: dt.date) -> int:
    """A running number of the day, week (Monday first: ordinal 1 is Monday 0001-01-01) or month."""
    if tier == "daily":
        return day.toordinal()
    if tier == "weekly":
        return (day.toordinal() - 1) // 7
    return day.year * 12 + day.month - 1


@dataclass(frozen=True)
class Retention:
    kept: dict[str, list[str]]  # name -> the tiers (or "pre-migration") that keep it
    pruned: list[str]


def plan_retention(backups: Iterable[Backup], now: dt.datetime) -> Retention:
    """Which backups the seed's tiers keep at `now`, and why; the rest, oldest first, are pruned.

    For each tier, the newest scheduled backup of each of its last N periods (the current one included) is
    kept. A period's newest backup only changes while the period is current, and the daily tier keeps every
    day of the last 30, so no backup a tier will later need is pruned early."""
    reasons: dict[str, list[str]] = {}
    scheduled = sorted(b for b in backups if not b.pre_migration)
    for b in backups:
        if b.pre_migration:
            reasons[b.name] = [PRE_MIGRATION]
    today = now.astimezone(dt.UTC).date()
    for tier, count in TIERS:
        current = _period(tier, today)
        newest: dict[int, Backup] = {}
        for b in scheduled:  # oldest first: the last one seen in a period is its newest
            period = _period(tier, b.taken_at.date())
            if current - period < count:
                newest[period] = b
        for b in newest.values():
            reasons.setdefault(b.name, []).append(tier)
    pruned = [b.name for b in scheduled if b.name not in reasons]
    return Retention(
        kept={b.name: reasons[b.name] for b in sorted(backups) if b.name in reasons}, pruned=pruned
    )


def list_backups(backup_dir: Path) -> list[Backup]:
    """The backups in backup_dir, oldest first (other files are ignored and never deleted)."""
    if not backup_dir.is_dir():
        return []
    found = (parse_backup(p.name) for p in backup_dir.iterdir() if p.is_file())
    return sorted(b for b in found if b is not None)


# ---------------------------------------------------------------- pg_dump / pg_restore


def client_binary(name: str, server_major: int) -> Path:
    """pg_dump or pg_restore of the server's major version: Debian's versioned directory first, else the
    one dbctl.cluster finds, when its major matches. A dump from an older pg_dump can miss what a newer
    server has, and an older pg_restore refuses a newer archive."""
    versioned = Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")
    if versioned.is_file() and os.access(versioned, os.X_OK):
        return versioned
    found = find_binary(name)
    out = subprocess.run([str(found), "--version"], capture_output=True, text=True, timeout=10, check=False)
    version = re.search(r"\d+", out.stdout)
    if version is None or int(version.group()) != server_major:
        raise BackupError(
            f"{found} is not version {server_major}, the server's ({out.stdout.strip() or 'unknown'}); "
            f"install the matching client: apt-get install -y postgresql-client-{server_major}"
        )
    return found


def client_env(cluster: Cluster, dbname: str, application: str) -> dict[str, str]:
    """libpq's environment for a client binary as the admin: the password in PGPASSWORD, no inherited PG*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=cluster.host,
        PGPORT=str(cluster.port),
        PGUSER=cluster.admin_user,
        PGPASSWORD=cluster.admin_password,
        PGDATABASE=dbname,
        PGSSLMODE="verify-full",
        PGSSLROOTCERT=str(cluster.ca_file),
        PGCONNECT_TIMEOUT="10",
        PGAPPNAME=application,
    )
    return env


def server_major(cluster: Cluster, dbname: str = names.DATABASE_NAME) -> int:
    with psycopg.connect(cluster.admin_conninfo(dbname)) as conn:
        return conn.info.server_version // 10000


def _run_client(args: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=3600, check=False
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if "error:" in line] or [
            line for line in result.stderr.splitlines() if line.strip()
        ]
        detail = " ".join(lines[0].split()) if lines else f"exit status {result.returncode}"
        raise BackupError(f"{what} failed: {detail}")


def take_backup(cluster: Cluster, backup_dir: Path, now: dt.datetime, migration: str | None = None) -> Path:
    """pg_dump -Fc of spike_land into backup_dir; returns the new file. Never overwrites a backup."""
    try:
        backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise BackupError(
            f"cannot create {backup_dir} ({e.strerror}); make it a writable directory"
        ) from None
    target = backup_dir / backup_name(now, migration)
    if target.exists():
        raise BackupError(f"{target} already exists (two backups in one second); run the command again")
    partial = backup_dir / f".{target.name}.partial"
    pg_dump = client_binary("pg_dump", server_major(cluster))
    env = client_env(cluster, names.DATABASE_NAME, "dbctl local backup")
    try:
        # pg_cron's tables (its jobs, their run history) are behind row-level security and belong to the
        # scheduler, not to the app: the post-deploy step schedules the jobs again on any restored database.
        dump = [str(pg_dump), "--format=custom", "--exclude-table-data=cron.*", f"--file={partial}"]
        _run_client(dump, env, "pg_dump")
        partial.chmod(0o600)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def prune(backup_dir: Path, retention: Retention) -> None:
    for name in retention.pruned:
        (backup_dir / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- the restore test


@dataclass(frozen=True)
class Facts:
    """What the restore test compares: the applied migrations and the critical tables' row counts (None:
    the table is missing)."""

    migrations: list[str]
    counts: dict[str, int | None]


def read_facts(conn: psycopg.Connection[tuple[object, ...]]) -> Facts:
    migrations: list[str] = []
    if conn.execute("SELECT to_regclass('public._prisma_migrations')").fetchone() != (None,):
        rows = conn.execute(
            "SELECT migration_name FROM public._prisma_migrations "
            "WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name"
        ).fetchall()
        migrations = [str(r[0]) for r in rows]
    counts: dict[str, int | None] = {}
    for table in CRITICAL_TABLES:
        exists = conn.execute("SELECT to_regclass(%s)", (f'public."{table}"',)).fetchone() != (None,)
        query = sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
        row = conn.execute(query).fetchone() if exists else None
        counts[table] = int(str(row[0])) if row else None
    return Facts(migrations, counts)


@dataclass
class RestoreReport:
    backup: str
    scratch_database: str
    migrations: dict[str, object] = field(default_factory=dict)
    counts: dict[str, dict[str, object]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "backup": self.backup,
            "scratch_database": self.scratch_database,
            "scratch_dropped": True,
            "migrations": self.migrations,
            "counts": self.counts,
            "mismatches": self.mismatches,
        }


def compare(backup: str, scratch: str, restored: Facts, live: Facts) -> RestoreReport:
    report = RestoreReport(backup, scratch)
    latest_restored = restored.migrations[-1] if restored.migrations else None
    latest_live = live.migrations[-1] if live.migrations else None
    same_history = restored.migrations == live.migrations
    report.migrations = {"backup": latest_restored, "live": latest_live, "match": same_history}
    if not same_history:
        report.mismatches.append(
            f"migration history: backup has {len(restored.migrations)} applied (latest {latest_restored}), "
            f"live has {len(live.migrations)} (latest {latest_live})"
        )
    for table in CRITICAL_TABLES:
        was, now = restored.counts[table], live.counts[table]
        report.counts[table] = {"backup": was, "live": now, "match": was is not None and was == now}
        if was is None:
            report.mismatches.append(f'"{table}": missing from the restored backup')
        elif was != now:
            report.mismatches.append(f'"{table}": backup has {was} rows, live has {now}')
    return report


# What a non-superuser (RDS's master user, the local admin) may not restore: the comment on an extension,
# which only its owner may set (the scratch database has pg_stat_statements already, from template1), and
# pg_cron with what lives in its schema (it may be created only in cron.database_name, never in a scratch
# one), and pgstattuple, which only a superuser (rds_superuser on RDS) may create; the report's bloat section
# needs it, a restored copy's data does not.
_SKIP_ENTRY: Final = re.compile(
    r"^\d+; \d+ \d+ "
    r"(COMMENT - EXTENSION |EXTENSION - (pg_cron|pgstattuple)\b|.* cron \S+$|ACL - SCHEMA cron\b)"
)


def restore_archive(pg_restore: Path, archive: Path, env: dict[str, str]) -> None:
    """pg_restore archive into env's PGDATABASE, all or nothing, without the entries in _SKIP_ENTRY."""
    listing = subprocess.run(
        [str(pg_restore), "--list", str(archive)], capture_output=True, text=True, timeout=600, check=False
    )
    if listing.returncode != 0:
        raise BackupError(f"{archive} is not a readable pg_dump archive: {listing.stderr.strip()}")
    with tempfile.TemporaryDirectory(prefix="dbctl-restore-") as tmp:
        entries = Path(tmp) / "toc.list"
        entries.write_text(
            "".join(line for line in listing.stdout.splitlines(True) if not _SKIP_ENTRY.match(line))
        )
        _run_client(
            [
                str(pg_restore),
                "--exit-on-error",
                "--single-transaction",
                f"--use-list={entries}",
                f"--dbname={env['PGDATABASE']}",
                str(archive),
            ],
            env,
            f"pg_restore of {archive.name}",
        )


def restore_test(cluster: Cluster, backup_dir: Path) -> RestoreReport:
    """Restore the latest backup into a scratch database, compare it with spike_land, drop the scratch."""
    backups = list_backups(backup_dir)
    if not backups:
        raise BackupError(f"no backup in {backup_dir}; take one with `dbctl local backup`")
    latest = backups[-1]
    scratch = f"{names.DATABASE_NAME}_restore_test_{secrets.token_hex(4)}"
    pg_restore = client_binary("pg_restore", server_major(cluster))
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        try:
            # pg_restore sets owners (ALTER ... OWNER TO spike_owner) before it restores the schema's ACL,
            # and a new owner needs CREATE on the schema: grant what dbctl.roles grants in spike_land.
            with psycopg.connect(cluster.admin_conninfo(scratch), autocommit=True) as scratch_conn:
                scratch_conn.execute(
                    sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(
                        sql.Identifier(names.OWNER_ROLE)
                    )
                )
            restore_archive(
                pg_restore, backup_dir / latest.name, client_env(cluster, scratch, "dbctl local restore-test")
            )
            with psycopg.connect(cluster.admin_conninfo(scratch), autocommit=True) as restored_conn:
                restored = read_facts(restored_conn)
            with psycopg.connect(cluster.admin_conninfo(names.DATABASE_NAME), autocommit=True) as live_conn:
                live = read_facts(live_conn)
        finally:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    return compare(latest.name, scratch, restored, live)
