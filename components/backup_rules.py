"""Backup plan rules, pure: the seed's retention policy as AWS Backup rules, timed around RDS's own windows.

Seed, "Backup Retention Policy": daily backups kept 30 days, weekly 12 weeks (84 days), monthly 12 months
(365 days). All three rules start at the same time of day: when rules of one plan overlap, AWS Backup takes
one backup and keeps it for the longest retention, so the 1st of a month yields one snapshot kept a year.

The start time is computed, not configured: the first whole hour after the RDS backup window such that the
AWS Backup start window, with `MARGIN_MINUTES` on both sides, touches neither the RDS backup window (any
day) nor the weekly maintenance window. An RDS snapshot requested while the instance is `backing-up` or in
maintenance waits or fails, and a snapshot during maintenance may capture a rebooting instance.
`conflicts()` checks any start time against both windows; `rules()` never returns a conflicting one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dbctl.stackconfig.settings import StackSettings, _maint_minutes, _spans, _window_minutes

DAY: Final = 1440
WEEK: Final = 7 * DAY
MARGIN_MINUTES: Final = 60
START_WINDOW_MINUTES: Final = 60
# An RDS snapshot of a few hundred GB finishes well within this; AWS Backup cancels the job after it.
COMPLETION_WINDOW_MINUTES: Final = 8 * 60

DAILY_RETENTION_DAYS: Final = 30
WEEKLY_RETENTION_DAYS: Final = 84
MONTHLY_RETENTION_DAYS: Final = 365


@dataclass(frozen=True)
class BackupRule:
    name: str
    schedule: str  # AWS Backup cron expression, UTC
    delete_after_days: int
    start_window_minutes: int = START_WINDOW_MINUTES
    completion_window_minutes: int = COMPLETION_WINDOW_MINUTES


def _busy_spans(settings: StackSettings) -> list[tuple[int, int, str]]:
    """RDS's windows as half-open spans in minutes of the week (Monday 00:00 = 0)."""
    spans: list[tuple[int, int, str]] = []
    for day in range(7):
        for s, e in _spans(*_window_minutes(settings.backup_window), DAY):
            spans.append((day * DAY + s, day * DAY + e, f"RDS backup window {settings.backup_window}"))
    for s, e in _spans(*_maint_minutes(settings.maintenance_window), WEEK):
        spans.append((s, e, f"maintenance window {settings.maintenance_window}"))
    return spans


def conflicts(
    settings: StackSettings,
    start_minute: int,
    start_window: int = START_WINDOW_MINUTES,
    margin: int = MARGIN_MINUTES,
) -> list[str]:
    """The RDS windows a daily job starting at `start_minute` (of the day, UTC) would come near."""
    found: list[str] = []
    for day in range(7):
        lo = day * DAY + start_minute - margin
        hi = day * DAY + start_minute + start_window + margin
        for s, e, what in _busy_spans(settings):
            # Compare on the circle of the week: the job's span may wrap past Sunday midnight.
            if any(lo + shift < e and s < hi + shift for shift in (-WEEK, 0, WEEK)) and what not in found:
                found.append(what)
    return found


def start_minute(settings: StackSettings) -> int:
    """The first whole hour after the RDS backup window that keeps clear of both RDS windows."""
    _, backup_end = _window_minutes(settings.backup_window)
    first = -(-backup_end // 60) * 60  # round up to the hour
    for step in range(24):
        candidate = (first + step * 60) % DAY
        if not conflicts(settings, candidate):
            return candidate
    raise ValueError(
        f"no hour of the day keeps AWS Backup {MARGIN_MINUTES} minutes clear of backupWindow "
        f"{settings.backup_window} and maintenanceWindow {settings.maintenance_window}; shorten them"
    )


def rules(settings: StackSettings) -> list[BackupRule]:
    """Daily (30 d), weekly on Sundays (84 d) and monthly on the 1st (365 d), all at `start_minute`."""
    start = start_minute(settings)
    hour, minute = divmod(start, 60)
    return [
        BackupRule("daily", f"cron({minute} {hour} ? * * *)", DAILY_RETENTION_DAYS),
        BackupRule("weekly", f"cron({minute} {hour} ? * SUN *)", WEEKLY_RETENTION_DAYS),
        BackupRule("monthly", f"cron({minute} {hour} 1 * ? *)", MONTHLY_RETENTION_DAYS),
    ]


def vault_lock_retention(backup_rules: list[BackupRule]) -> tuple[int, int]:
    """(min, max) retention days a vault lock must allow so that every rule's recovery points fit."""
    days = [r.delete_after_days for r in backup_rules]
    return min(days), max(days)
