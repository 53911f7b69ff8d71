"""dbctl.local.retention (backup names and the seed's retention tiers on synthetic file lists) and
dbctl.local.backup's parts that need no server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dbctl.local import backup as local_backup
from dbctl.local import retention as local_retention
from dbctl.local.lifecycle import wipe
from dbctl.local.retention import Backup, backup_name, parse_backup, plan_retention
from dbctl.local.state import Paths

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)  # a Tuesday


def daily(days: int, *, at: dt.datetime = NOW, hour: int = 3) -> list[Backup]:
    """One scheduled backup a day at `hour`, for `days` days up to `at`."""
    start = at.replace(hour=hour, minute=0)
    found = (parse_backup(backup_name(start - dt.timedelta(days=n))) for n in range(days))
    return [b for b in found if b is not None]


def test_names_round_trip_and_foreign_files_are_not_backups() -> None:
    name = backup_name(NOW)
    assert name == "spike_land-20261201T090000Z.dump"
    assert parse_backup(name) == Backup(NOW, name)
    pre = backup_name(NOW, "20261125060000_init")
    assert pre == "spike_land-20261201T090000Z-pre-migration-20261125060000_init.dump"
    assert parse_backup(pre) == Backup(NOW, pre, "20261125060000_init")
    # A name with a path separator or a shell character is made safe.
    assert "/" not in backup_name(NOW, "../x y")
    for foreign in ("notes.txt", ".spike_land-20261201T090000Z.dump.partial", "spike_land-2026.dump"):
        assert parse_backup(foreign) is None


def test_a_year_of_daily_backups_keeps_30_days_12_weeks_12_months() -> None:
    backups = daily(400)
    retention = plan_retention(backups, NOW)
    kept = {parse_backup(n).taken_at.date(): tiers for n, tiers in retention.kept.items()}  # type: ignore[union-attr]
    daily_kept = sorted(d for d, t in kept.items() if "daily" in t)
    assert len(daily_kept) == 30 and daily_kept[0] == dt.date(2026, 11, 2) and daily_kept[-1] == NOW.date()
    # Weekly: the newest (Sunday's, or today's in the current week) of the current and 11 previous weeks.
    weekly = sorted(d for d, t in kept.items() if "weekly" in t)
    assert len(weekly) == 12 and weekly[-1] == NOW.date()
    assert all(d.weekday() == 6 for d in weekly[:-1])
    # Monthly: the last day of each of the 11 previous months, and today for this month.
    monthly = sorted(d for d, t in kept.items() if "monthly" in t)
    assert len(monthly) == 12 and monthly[0] == dt.date(2026, 1, 31) and monthly[-1] == NOW.date()
    assert all((d + dt.timedelta(days=1)).day == 1 for d in monthly[:-1])
    assert len(retention.kept) == len(set(daily_kept) | set(weekly) | set(monthly))
    assert len(retention.kept) + len(retention.pruned) == 400
    assert set(retention.kept).isdisjoint(retention.pruned)


def test_only_the_newest_backup_of_a_day_is_kept() -> None:
    morning, evening = daily(1, hour=1)[0], daily(1, hour=8)[0]
    retention = plan_retention([evening, morning], NOW)
    assert list(retention.kept) == [evening.name]
    assert retention.pruned == [morning.name]


def test_pre_migration_dumps_are_kept_for_ever_and_do_not_count_for_a_tier() -> None:
    old = NOW - dt.timedelta(days=3000)
    pre = Backup(old, backup_name(old, "20200101000000_ancient"), "20200101000000_ancient")
    today_pre = Backup(NOW, backup_name(NOW, "20261201000000_new"), "20261201000000_new")
    scheduled = daily(1, hour=2)[0]
    retention = plan_retention([pre, today_pre, scheduled], NOW)
    assert retention.kept == {
        pre.name: ["pre-migration"],
        scheduled.name: ["daily", "weekly", "monthly"],
        today_pre.name: ["pre-migration"],
    }
    assert retention.pruned == []


def test_a_pruned_backup_is_never_one_a_later_run_would_keep() -> None:
    """Run the policy every day for 500 days over what the previous day kept: what it keeps at each step
    is what it would keep given every backup ever taken (pruning never removes a future keeper)."""
    everything: list[Backup] = []
    kept: list[Backup] = []
    for day in range(500):
        now = NOW - dt.timedelta(days=500 - day)
        new = daily(1, at=now)[0]
        everything.append(new)
        kept.append(new)
        retention = plan_retention(kept, now)
        kept = [b for b in kept if b.name in retention.kept]
        assert set(retention.kept) == set(plan_retention(everything, now).kept)


def test_a_sparse_history_keeps_one_per_month_for_a_year() -> None:
    months = [NOW - dt.timedelta(days=45 * n) for n in range(12)]
    backups = sorted(Backup(t, backup_name(t)) for t in months)
    retention = plan_retention(backups, NOW)
    cutoff = NOW.year * 12 + NOW.month - 12
    assert retention.pruned == [b.name for b in backups if b.taken_at.year * 12 + b.taken_at.month <= cutoff]


def test_list_backups_ignores_other_files(tmp_path: Path) -> None:
    names = [backup_name(NOW - dt.timedelta(days=n)) for n in range(3)]
    for name in [*names, "README", ".partial"]:
        (tmp_path / name).write_text("x")
    assert [b.name for b in local_retention.list_backups(tmp_path)] == sorted(names)
    assert local_retention.list_backups(tmp_path / "missing") == []


def test_reset_keeps_the_backups(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.backup_dir.mkdir(parents=True)
    (paths.backup_dir / backup_name(NOW)).write_text("dump")
    (paths.state_dir / "state.json").write_text("{}")
    wipe(paths)
    assert (paths.backup_dir / backup_name(NOW)).read_text() == "dump"
    assert not (paths.state_dir / "state.json").exists()


def test_a_client_of_another_major_than_the_server_is_refused() -> None:
    with pytest.raises(local_backup.BackupError, match="postgresql-client-99"):
        local_backup.client_binary("pg_dump", 99)


# ---------------------------------------------------------------- issue 25, items 4, 8, 11


def test_a_name_with_an_impossible_date_is_ignored_with_a_warning(tmp_path: Path) -> None:
    """Item 8: `spike_land-20261399T000000Z.dump` crashed `backup` (after its dump, before retention) and
    `restore-test` with a traceback."""
    stray = "spike_land-20261399T000000Z.dump"
    good = backup_name(NOW)
    for name in (stray, good):
        (tmp_path / name).write_text("x")
    assert parse_backup(stray) is None
    said: list[str] = []
    assert [b.name for b in local_retention.list_backups(tmp_path, NOW, said.append)] == [good]
    [line] = said
    assert line.startswith(f"warning: ignoring {tmp_path / stray}: ") and "date cannot be" in line


def test_a_backup_dated_in_the_future_counts_for_no_tier_and_is_not_tested(tmp_path: Path) -> None:
    """Item 4: a backup dated in the future (clock skew, a copied file) was kept by every tier and was always
    the one restore-test tested; the one just taken was then never tested."""
    future = NOW + dt.timedelta(days=400)
    taken = [NOW - dt.timedelta(days=1), NOW]
    for at in (*taken, future):
        (tmp_path / backup_name(at)).write_text("x")
    said: list[str] = []
    listed = local_retention.list_backups(tmp_path, NOW, said.append)
    assert [b.name for b in listed] == [backup_name(at) for at in taken]
    assert listed[-1].name == backup_name(NOW)  # what restore-test tests: the newest not in the future
    [line] = said
    assert f"ignoring {tmp_path / backup_name(future)}: dated 2028-01-05 09:00:00 UTC, after now" in line
    # Given to the tiers anyway, it is neither kept nor pruned, and today's backup keeps its tiers.
    everything = [Backup(at, backup_name(at)) for at in (*taken, future)]
    retention = plan_retention(everything, NOW)
    assert backup_name(future) not in retention.kept and backup_name(future) not in retention.pruned
    assert retention.kept[backup_name(NOW)] == ["daily", "weekly", "monthly"]


def test_stale_partial_dumps_are_removed_and_said(tmp_path: Path) -> None:
    """Item 11: a killed backup left `.spike_land-….dump.partial` for ever (0644)."""
    stale = tmp_path / f".{backup_name(NOW)}.partial"
    stale.write_text("half a dump")
    other = tmp_path / ".notes.partial"
    other.write_text("not ours")
    said: list[str] = []
    assert local_backup.remove_stale_partials(tmp_path, said.append) == [stale.name]
    assert not stale.exists() and other.exists()
    assert said == [f"removed {stale}: a partial dump an interrupted backup left"]


def test_a_clients_undecodable_stderr_is_one_escaped_line() -> None:
    """Item 9: pg_restore's stderr carries raw archive bytes; reading it as text raised UnicodeDecodeError."""
    stderr = b"pg_restore: error: could not read \xff\xfe\x00 entry \x1b[2J\nsecond line\n"
    line = local_backup._first_error(stderr, 1)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("pg_restore: error: could not read")
