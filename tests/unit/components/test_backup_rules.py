"""components.backup_rules: the seed's retention tiers, timed clear of the RDS windows."""

from __future__ import annotations

import re

import pytest

from components import backup_rules
from dbctl.stackconfig.settings import SettingsError
from tests.unit.harness import settings_for


def _hour_minute(schedule: str) -> tuple[int, int]:
    m = re.fullmatch(r"cron\((\d+) (\d+) .+\)", schedule)
    assert m, schedule
    return int(m.group(2)), int(m.group(1))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_retention_matches_the_seed(stack: str) -> None:
    rules = {r.name: r for r in backup_rules.rules(settings_for(stack))}
    assert {n: r.delete_after_days for n, r in rules.items()} == {"daily": 30, "weekly": 84, "monthly": 365}
    assert rules["daily"].schedule.endswith("? * * *)")
    assert rules["weekly"].schedule.endswith("? * SUN *)")
    assert re.fullmatch(r"cron\(\d+ \d+ 1 \* \? \*\)", rules["monthly"].schedule)


def test_default_windows_put_backups_after_maintenance() -> None:
    # backupWindow 02:00-03:00, maintenance sun:04:00-05:00: 04:00 and 05:00 come within an hour of Sunday
    # maintenance, so the first clear hour is 06:00.
    rules = backup_rules.rules(settings_for("prod"))
    assert {_hour_minute(r.schedule) for r in rules} == {(6, 0)}


@pytest.mark.parametrize(
    ("backup_window", "maintenance_window"),
    [
        ("02:00-03:00", "sun:04:00-sun:05:00"),
        ("22:30-23:30", "mon:00:00-mon:01:00"),  # wraps past midnight into the week's start
        ("05:00-06:00", "sat:07:00-sat:08:00"),
        ("23:00-00:30", "sun:01:00-sun:01:30"),  # the backup window itself wraps midnight
    ],
)
def test_computed_start_never_conflicts(backup_window: str, maintenance_window: str) -> None:
    overrides = {"backupWindow": backup_window, "maintenanceWindow": maintenance_window}
    s = settings_for("prod", overrides)
    start = backup_rules.start_minute(s)
    assert backup_rules.conflicts(s, start) == []
    for r in backup_rules.rules(s):
        hour, minute = _hour_minute(r.schedule)
        assert hour * 60 + minute == start


def test_conflicts_name_the_window() -> None:
    s = settings_for("prod")
    assert backup_rules.conflicts(s, 2 * 60) == ["RDS backup window 02:00-03:00"]
    assert backup_rules.conflicts(s, 5 * 60) == ["maintenance window sun:04:00-sun:05:00"]
    assert backup_rules.conflicts(s, 12 * 60) == []


def test_vault_lock_range_covers_every_rule() -> None:
    rules = backup_rules.rules(settings_for("prod"))
    assert backup_rules.vault_lock_retention(rules) == (30, 365)


def test_dr_region_must_differ_from_the_stack_region() -> None:
    with pytest.raises(SettingsError, match=r"drRegion must differ from aws:region \(eu-west-1\)"):
        settings_for("prod", {"backups.drRegion": "eu-west-1"})
    with pytest.raises(SettingsError, match="crossRegionCopy needs drRegion"):
        settings_for("dev", {"backups.crossRegionCopy": True})


def test_prod_restore_test_defaults_to_monthly_dev_to_weekly() -> None:
    assert settings_for("prod", {"backups.restoreTestSchedule": None}).backups.restore_test_schedule == (
        "cron(0 9 2 * ? *)"
    )
    assert settings_for("dev").backups.restore_test_schedule == "cron(0 4 ? * SUN *)"
