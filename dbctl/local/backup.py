"""The seed's backups and monthly restore test, on the local stack (`dbctl local backup`, `restore-test`).

- ``take_backup(cluster, backup_dir, now, migration=None, echo=None) -> Path``: ``pg_dump -Fc`` of
  ``spike_land`` into ``backup_dir`` (0700), named as dbctl.local.retention says. It is written to a hidden
  ``.partial`` file, 0600 from its first byte, and renamed only when pg_dump succeeded, so a failed dump is
  never mistaken for a backup; the partial files a killed run left are removed at the next one, which says
  so (backups hold `.local/lock`, so no other run is writing one).
- ``restore_test(cluster, backup_dir, now, echo) -> RestoreReport``: the seed's monthly procedure. Restore
  the newest backup not dated in the future into a scratch database that only the admin may connect to,
  compare its migration history and the row counts of the critical tables with the live database, drop the
  scratch database (always; one a killed run left is dropped at the next run, which says so). A backup that
  pg_restore cannot read is the test's verdict (ok false, with pg_restore's reason), not a crash.

pg_dump and pg_restore are the server's major version (``client_binary``); they get the password in
``PGPASSWORD`` in their own environment, never on a command line. Their stderr is read as bytes and decoded
leniently: a damaged archive's bytes end up in it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.local.retention import SUFFIX, backup_name, list_backups
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.install import find_binary
from dbctl.postgres.tls import fsync_directory

CRITICAL_TABLES: Final = ("User", "App", "Requirement")
SCRATCH_PREFIX: Final = f"{names.DATABASE_NAME}_restore_test_"
_SCRATCH: Final = re.compile(rf"^{re.escape(SCRATCH_PREFIX)}[0-9a-f]{{8}}$")
_PARTIAL: Final = re.compile(rf"^\.{re.escape(names.DATABASE_NAME)}-.*{re.escape(SUFFIX)}\.partial$")
Echo = Callable[[str], None]
Conn = psycopg.Connection[tuple[object, ...]]


class BackupError(DbctlError):
    """A dump, restore or restore test could not run; the message says why and what to do."""


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


def _text(data: bytes) -> str:
    """A client's output as text: invalid UTF-8 (a damaged archive's bytes) and control characters escaped."""
    text = data.decode("utf-8", errors="backslashreplace")
    return "".join(ch if ch.isprintable() or ch in "\n\t" else f"\\x{ord(ch):02x}" for ch in text)


def _first_error(stderr: bytes, returncode: int) -> str:
    lines = _text(stderr).splitlines()
    lines = [line for line in lines if "error:" in line] or [line for line in lines if line.strip()]
    return " ".join(lines[0].split()) if lines else f"exit status {returncode}"


def _run_client(args: list[str], env: dict[str, str], what: str, timeout: float = 3600) -> bytes:
    """Run pg_dump or pg_restore; its stdout, or BackupError with the first error line of its stderr."""
    try:
        result = subprocess.run(
            args, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what} did not finish in {timeout:.0f} s") from None
    except OSError as e:
        raise BackupError(f"{what} could not start: {e.strerror}") from None
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {_first_error(result.stderr, result.returncode)}")
    return result.stdout


def remove_stale_partials(backup_dir: Path, echo: Echo | None = None) -> list[str]:
    """Remove the hidden .partial files a killed backup left (the caller holds .local/lock); their names."""
    removed = sorted(p.name for p in backup_dir.iterdir() if p.is_file() and _PARTIAL.match(p.name))
    for name in removed:
        (backup_dir / name).unlink(missing_ok=True)
        if echo is not None:
            echo(f"removed {backup_dir / name}: a partial dump an interrupted backup left")
    return removed


def take_backup(
    cluster: Cluster,
    backup_dir: Path,
    now: dt.datetime,
    migration: str | None = None,
    echo: Echo | None = None,
) -> Path:
    """pg_dump -Fc of spike_land into backup_dir; returns the new file (named for `now`, or for the next
    second when a backup already has this second's name). Never overwrites a backup."""
    try:
        backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise BackupError(
            f"cannot create {backup_dir} ({e.strerror}); make it a writable directory"
        ) from None
    remove_stale_partials(backup_dir, echo)
    target = backup_dir / backup_name(now, migration)
    if target.exists():  # a second one this second: `up` again right after a failed migration, say
        next_second = now.replace(microsecond=0) + dt.timedelta(seconds=1)
        time.sleep(max(0.0, (next_second - dt.datetime.now(dt.UTC)).total_seconds()))
        target = backup_dir / backup_name(dt.datetime.now(dt.UTC), migration)
    if target.exists():
        raise BackupError(f"{target} already exists (a backup dated ahead of this clock?); run it again")
    partial = backup_dir / f".{target.name}.partial"
    pg_dump = client_binary("pg_dump", server_major(cluster))
    env = client_env(cluster, names.DATABASE_NAME, "dbctl local backup")
    try:
        # 0600 before pg_dump writes a byte: it opens the file it is given for writing and keeps its mode.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # pg_cron's tables (its jobs, their run history) are behind row-level security and belong to the
        # scheduler, not to the app: the post-deploy step schedules the jobs again on any restored database.
        dump = [str(pg_dump), "--format=custom", "--exclude-table-data=cron.*", f"--file={partial}"]
        _run_client(dump, env, "pg_dump")  # pg_dump fsyncs the file (PostgreSQL 12+, unless --no-sync)
        partial.rename(target)
        fsync_directory(backup_dir)
    finally:
        partial.unlink(missing_ok=True)
    return target


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
    error: str | None = None  # the restore itself failed (pg_restore's reason): nothing was compared

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.error is None

    @property
    def reason(self) -> str:
        """Why the test failed, in one line ("" when it passed)."""
        return self.error or "; ".join(self.mismatches)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "verdict": "passed" if self.ok else "failed",
            "reason": self.reason,
            "error": self.error,
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
    try:
        listing = _run_client([str(pg_restore), "--list", str(archive)], env, "pg_restore --list", 600)
    except BackupError as e:
        raise BackupError(f"{archive} is not a readable pg_dump archive: {e}") from None
    with tempfile.TemporaryDirectory(prefix="dbctl-restore-") as tmp:
        entries = Path(tmp) / "toc.list"
        # Byte for byte (a damaged archive's names need not be UTF-8); only whole entries are left out.
        lines = listing.decode("utf-8", errors="surrogateescape").splitlines(True)
        kept = "".join(line for line in lines if not _SKIP_ENTRY.match(line))
        entries.write_bytes(kept.encode("utf-8", errors="surrogateescape"))
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


def drop_leftover_scratch(conn: Conn, echo: Echo | None = None) -> list[str]:
    """Drop the scratch databases a killed restore test left (the caller holds .local/lock); their names."""
    rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX + "%",))
    leftovers = sorted(str(r[0]) for r in rows.fetchall() if _SCRATCH.match(str(r[0])))
    for name in leftovers:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if echo is not None:
            echo(f"dropped {name}: the scratch database of an interrupted restore test")
    return leftovers


def create_scratch(conn: Conn, name: str) -> None:
    """A database only the admin (its owner) may connect to: created closed to connections, PUBLIC's CONNECT
    and TEMPORARY revoked, then opened, so no other role has a session in it when the data arrives."""
    db = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE DATABASE {} ALLOW_CONNECTIONS false").format(db))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(db))


def restore_test(
    cluster: Cluster, backup_dir: Path, now: dt.datetime | None = None, echo: Echo | None = None
) -> RestoreReport:
    """Restore the newest backup not dated after now into a scratch database, compare it with spike_land,
    drop the scratch; a backup pg_restore cannot read is a failed report (its error), not an exception."""
    now = now or dt.datetime.now(dt.UTC)
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        drop_leftover_scratch(conn, echo)
    backups = list_backups(backup_dir, now, echo)
    if not backups:
        raise BackupError(f"no backup in {backup_dir}; take one with `dbctl local backup`")
    latest = backups[-1]
    scratch = f"{SCRATCH_PREFIX}{secrets.token_hex(4)}"
    pg_restore = client_binary("pg_restore", server_major(cluster))
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        create_scratch(conn, scratch)
        try:
            # pg_restore sets owners (ALTER ... OWNER TO spike_owner) before it restores the schema's ACL,
            # and a new owner needs CREATE on the schema: grant what dbctl.roles grants in spike_land.
            with psycopg.connect(cluster.admin_conninfo(scratch), autocommit=True) as scratch_conn:
                scratch_conn.execute(
                    sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(
                        sql.Identifier(names.OWNER_ROLE)
                    )
                )
            try:
                restore_archive(
                    pg_restore,
                    backup_dir / latest.name,
                    client_env(cluster, scratch, "dbctl local restore-test"),
                )
            except BackupError as e:
                return RestoreReport(latest.name, scratch, error=str(e))
            with psycopg.connect(cluster.admin_conninfo(scratch), autocommit=True) as restored_conn:
                restored = read_facts(restored_conn)
            with psycopg.connect(cluster.admin_conninfo(names.DATABASE_NAME), autocommit=True) as live_conn:
                live = read_facts(live_conn)
        finally:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    return compare(latest.name, scratch, restored, live)
