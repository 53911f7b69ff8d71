"""The local backups' names and the seed's retention tiers (`dbctl local backup`), pure but for reading a
directory's names; dbctl.local.backup takes and restores the dumps.

- ``backup_name(now, migration=None)``: ``spike_land-<yyyymmddThhmmssZ>.dump``, or
  ``spike_land-<ts>-pre-migration-<first pending migration>.dump`` before ``up`` applies migrations.
- ``list_backups(backup_dir, now, warn)``: the backups there, oldest first. Files whose names this module
  did not write are ignored and never touched; so is a file named like a backup whose date cannot be (month
  13, …) or lies after ``now`` (a skewed clock, a copied file), each with one ``warn`` line: a backup from
  the future would otherwise be kept by every tier and always be the one `restore-test` tests.
- ``plan_retention(backups, now) -> Retention``: the newest backup of each of the last 30 days, 12 weeks
  (Monday to Sunday, UTC) and 12 months is kept; pre-migration dumps are kept for ever; everything else is
  pruned (unit-tested on synthetic lists).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dbctl.core import names

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

Warn = Callable[[str], None]


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
    """The backup a file name stands for, or None when this module did not write that name (or its date
    cannot be: `spike_land-20261399T000000Z.dump`)."""
    match = _NAME.match(name)
    if match is None:
        return None
    try:
        taken_at = dt.datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return Backup(taken_at, name, match["migration"])


def list_backups(backup_dir: Path, now: dt.datetime | None = None, warn: Warn | None = None) -> list[Backup]:
    """The backups in backup_dir, oldest first; other files are ignored and never deleted. A name like a
    backup's with an impossible date, and (given now) a backup dated after now, are left out with a warning
    each."""
    if not backup_dir.is_dir():
        return []
    found: list[Backup] = []
    for path in sorted(p for p in backup_dir.iterdir() if p.is_file()):
        backup = parse_backup(path.name)
        if backup is None:
            if _NAME.match(path.name) and warn is not None:
                warn(
                    f"warning: ignoring {path}: named like a backup but its date cannot be; it is never "
                    "pruned or tested: rename or remove it"
                )
            continue
        if now is not None and backup.taken_at > now:
            if warn is not None:
                warn(
                    f"warning: ignoring {path}: dated {backup.taken_at:%Y-%m-%d %H:%M:%S} UTC, after now (a "
                    "skewed clock or a copied file); not counted in retention, never pruned or tested: check "
                    "the clock, or rename or remove it"
                )
            continue
        found.append(backup)
    return sorted(found)


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
    day of the last 30, so no backup a tier will later need is pruned early. A backup dated after now counts
    for no tier and is neither kept nor pruned (list_backups leaves it out with a warning)."""
    backups = [b for b in backups if b.taken_at <= now]
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


def prune(backup_dir: Path, retention: Retention) -> None:
    for name in retention.pruned:
        (backup_dir / name).unlink(missing_ok=True)
