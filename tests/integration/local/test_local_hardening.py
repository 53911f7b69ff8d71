"""Issue 25 against a real local stack: what faults and hostile input broke in backups, restore tests and
`up`. Each test's setup is the issue's reproduction. One stack, tests in file order; the last ones add
migrations from a directory of their own."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbctl.core import names
from dbctl.local import backup as local_backup
from dbctl.local import commands, lifecycle
from dbctl.local import retention as local_retention
from dbctl.local.migrations import apply_migrations, migration_status
from dbctl.local.stack import existing_stack
from dbctl.local.state import LocalError
from tests.integration.local.test_local import LocalStack, dbctl_local, running_stack
from tests.integration.schema.test_migrate import add_migration, copy_migrations

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack() as s:
        yield s


def backups(s: LocalStack) -> list[str]:
    return [b.name for b in local_retention.list_backups(s.paths.backup_dir)]


def databases(s: LocalStack, like: str) -> list[str]:
    with s.connect("DIRECT_URL") as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)).fetchall()
    return [str(r[0]) for r in rows]


def take(s: LocalStack) -> str:
    result = dbctl_local(s.root, "backup")
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


# ---------------------------------------------------------------- items 8, 4: bad names and future dates


def test_a_stray_name_with_an_impossible_date_is_ignored_with_a_warning(stack: LocalStack) -> None:
    stack.paths.backup_dir.mkdir(mode=0o700, exist_ok=True)
    stray = stack.paths.backup_dir / "spike_land-20261399T000000Z.dump"
    stray.write_bytes(b"not a dump")
    said = take(stack)
    assert "Traceback" not in said
    assert f"warning: ignoring {stray}: named like a backup but its date cannot be" in said
    assert "kept    spike_land-" in said  # retention ran after the dump
    restore = dbctl_local(stack.root, "restore-test")
    assert restore.returncode == 0, restore.stderr + restore.stdout
    assert "Traceback" not in restore.stderr and f"ignoring {stray}" in restore.stderr
    assert stray.exists()  # never touched
    stray.unlink()


def test_a_backup_from_the_future_is_neither_kept_nor_tested(stack: LocalStack) -> None:
    newest = backups(stack)[-1]
    future = stack.paths.backup_dir / local_retention.backup_name(
        dt.datetime.now(dt.UTC) + dt.timedelta(days=900)
    )
    shutil.copy(stack.paths.backup_dir / newest, future)
    with stack.connect("DATABASE_URL") as conn:  # the copy's data differs from what the next backup holds
        conn.execute(
            'INSERT INTO "User" (id, email, "updatedAt") VALUES (%s, %s, now())', ("u_future", "f@x.test")
        )
    said = take(stack)
    assert f"warning: ignoring {future}: dated " in said and "after now" in said
    assert f"kept    {future.name}" not in said and f"pruned  {future.name}" not in said
    result = dbctl_local(stack.root, "restore-test", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["backup"] == backups(stack)[-2]  # the one just taken
    assert report["backup"] != future.name and f"ignoring {future}" in result.stderr
    future.unlink()


# ---------------------------------------------------------------- item 9: a damaged backup


def test_a_bit_flipped_backup_is_a_json_verdict_not_a_crash(stack: LocalStack) -> None:
    take(stack)
    newest = stack.paths.backup_dir / backups(stack)[-1]
    data = bytearray(newest.read_bytes())
    for at in range(5, len(data), 97):  # past the magic "PGDMP": the archive's header and TOC are garbage
        data[at] ^= 0xFF
    newest.write_bytes(bytes(data))
    result = dbctl_local(stack.root, "restore-test", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["verdict"] == "failed" and report["backup"] == newest.name
    assert "pg_restore" in report["reason"] and report["reason"] == report["error"]
    text = dbctl_local(stack.root, "restore-test")
    assert text.returncode == 1 and text.stdout.startswith("restore test FAILED: ")
    assert databases(stack, "%restore_test%") == []
    newest.unlink()


def test_every_restore_test_failure_prints_one_json_object(stack: LocalStack) -> None:
    empty = stack.paths.backup_dir.rename(stack.paths.state_dir / "backups-aside")
    try:
        result = dbctl_local(stack.root, "restore-test", "--json")
    finally:
        empty.rename(stack.paths.backup_dir)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False and "no backup in" in report["error"]


# ---------------------------------------------------------------- item 10: the scratch database


def test_a_killed_restore_tests_scratch_database_is_dropped_next_time(stack: LocalStack) -> None:
    """A scratch database as a killed run left it (PUBLIC CONNECT, the app's rows) is dropped and said."""
    leftover = f"{local_backup.SCRATCH_PREFIX}deadbeef"
    s = existing_stack(stack.paths)
    with psycopg.connect(s.cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(leftover)))
    assert databases(stack, leftover) == [leftover]
    take(stack)
    result = dbctl_local(stack.root, "restore-test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"dropped {leftover}: the scratch database of an interrupted restore test" in result.stderr
    assert databases(stack, "%restore_test%") == []


def test_no_other_role_can_connect_to_the_scratch_database(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = existing_stack(stack.paths).creds[names.APP_ROLE]
    refused: list[str] = []
    real = local_backup.restore_archive

    def restore_and_try(pg_restore: Path, archive: Path, env: dict[str, str]) -> None:
        real(pg_restore, archive, env)
        s = existing_stack(stack.paths)
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(s.cluster.conninfo(app.username, app.password, env["PGDATABASE"])).close()
        refused.append(str(exc.value))

    monkeypatch.setattr(local_backup, "restore_archive", restore_and_try)
    report = commands.restore_test(stack.paths, lambda _: None)
    assert report.ok, report.reason
    [message] = refused
    assert "permission denied for database" in message


# ---------------------------------------------------------------- item 11: partial dumps


def test_a_killed_backups_partial_file_is_removed_and_new_ones_are_0600(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = stack.paths.backup_dir / ".spike_land-20261201T000000Z.dump.partial"
    stale.write_bytes(b"half a dump")
    stale.chmod(0o644)
    modes: list[int] = []
    real = local_backup._run_client

    def watch(args: list[str], env: dict[str, str], what: str, timeout: float = 3600) -> bytes:
        partial = Path(next(a for a in args if a.startswith("--file="))[len("--file=") :])
        modes.append(stat.S_IMODE(partial.stat().st_mode))
        return real(args, env, what, timeout)

    monkeypatch.setattr(local_backup, "_run_client", watch)
    said: list[str] = []
    path, _ = commands.backup(stack.paths, said.append)
    assert not stale.exists()
    assert f"removed {stale}: a partial dump an interrupted backup left" in said
    assert modes == [0o600] and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in stack.paths.backup_dir.iterdir() if p.name.endswith(".partial")]


# ---------------------------------------------------------------- item 7: a stuck replica's lag


def test_a_replica_with_replay_stopped_never_looks_current(stack: LocalStack) -> None:
    """Replay paused on the replica while the primary writes: `status` said "replay lag 2.0 ms" with 554 KB
    of WAL waiting (pg_stat_replication's replay_lag is the last replayed commit's delay)."""
    s = existing_stack(stack.paths)
    with psycopg.connect(s.replica.superuser_conninfo("postgres"), autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            with stack.connect("DIRECT_URL") as conn:
                conn.execute(
                    'CREATE TABLE "LagProbe" AS'
                    " SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 3000) g"
                )
                conn.execute('DROP TABLE "LagProbe"')
            time.sleep(1.5)  # so "how long ago" is visibly more than the commit's own delay
            status = dbctl_local(stack.root, "status")
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
    [line] = [line for line in status.stdout.splitlines() if line.startswith("replication ")]
    pending = int(line.split("replay lag ")[1].split(" bytes")[0])
    assert pending > 100_000, line
    assert " bytes of WAL not yet replayed; " in line
    seconds = float(line.split("last replayed commit ")[1].split(" s ago")[0])
    assert seconds >= 1.5, line


# ---------------------------------------------------------------- item 3: `up` converges a running stack


def test_up_on_a_running_stack_repairs_role_drift_that_status_reports(stack: LocalStack) -> None:
    with psycopg.connect(existing_stack(stack.paths).cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 1").format(sql.Identifier(names.MIGRATOR_ROLE)))
    status = dbctl_local(stack.root, "status")
    assert status.returncode == 1
    assert "NOT up to date (run `dbctl local up`: it applies pending migrations and repairs role drift)" in (
        status.stdout
    )
    up = dbctl_local(stack.root, "up")
    assert up.returncode == 0, up.stderr
    assert "already running; nothing changed" not in up.stdout
    assert "reset attributes of spike_migrator" in up.stderr
    assert dbctl_local(stack.root, "status").returncode == 0
    again = dbctl_local(stack.root, "up")
    assert "already running; nothing changed" in again.stdout


# ---------------------------------------------------------------- item 2: a broken migration


def test_a_broken_migration_leaves_pgbouncer_and_the_replica_up(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations = copy_migrations(tmp_path)
    add_migration(migrations, "20991231000009_broken", "SELECT 1/0;\n")
    broken = migrations / "20991231000009_broken"
    monkeypatch.setattr(
        lifecycle, "apply_migrations", functools.partial(apply_migrations, migrations_dir=migrations)
    )
    said: list[str] = []
    commands.stop(stack.paths, said.append)
    with pytest.raises(LocalError) as exc:
        commands.start(stack.paths, said.append)
    message = str(exc.value)
    assert message.startswith(
        "the servers are up and .env is written, but migration 20991231000009_broken failed"
    )
    assert f"dbctl local resolve --rolled-back {broken.name}" in message
    for url in ("DATABASE_URL", "DATABASE_READ_URL", "DIRECT_URL"):
        with stack.connect(url) as conn:
            assert conn.execute('SELECT count(*) FROM "User"').fetchone() is not None
    with stack.connect("DATABASE_READ_URL") as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    ok, line = migration_status(existing_stack(stack.paths))
    assert not ok
    assert (
        f"fix the migration, then `dbctl local resolve --rolled-back {broken.name}` and `dbctl local up`"
        in line
    )

    # The advice works: fix the file, resolve, up.
    (broken / "migration.sql").write_text("SELECT 1;\n")
    resolved = dbctl_local(stack.root, "resolve", "--rolled-back", broken.name)
    assert resolved.returncode == 0, resolved.stderr
    _, changed = commands.start(stack.paths, said.append)
    assert changed
    with stack.connect("DIRECT_URL") as conn:
        row = conn.execute(
            "SELECT count(*) FROM _prisma_migrations WHERE migration_name = %s AND finished_at IS NOT NULL",
            (broken.name,),
        ).fetchone()
    assert row == (1,)
    assert os.environ.get("PGPASSWORD") is None
