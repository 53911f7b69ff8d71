"""Pre-migration backups: a manual RDS snapshot taken before `dbctl migrate --stack` applies anything.

The seed's retention policy says "pre-migration backups: keep indefinitely". A *manual* DB snapshot is
exactly that: RDS never expires it, and it survives the deletion of the instance. This module creates one,
names it after the migration (plus a UTC timestamp, so re-runs never collide), tags it, waits with boto3's
`db_snapshot_available` waiter until it can be restored from, and never deletes anything.

API
---
- ``snapshot_identifier(migration_name, now) -> str``: a valid RDS snapshot identifier (letters, digits,
  hyphens; starts with a letter; no double or trailing hyphen; <= 255) derived from the migration name.
- ``take_pre_migration_snapshot(rds_client, instance_id, migration_name) -> str``: create, wait, return
  the id. Raises ``SnapshotError`` (one message naming the problem and the fix) when RDS refuses or
  the wait fails.
- ``before_pending_migrations(target, say) -> BeforeApply``: the `dbctl migrate --stack` hook that takes
  the snapshot when the stack's output pre_migration_snapshot says so (on in prod).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from botocore.exceptions import ClientError, WaiterError

from dbctl.aws.stack import StackTarget
from dbctl.core.errors import DbctlError
from dbctl.schema.deploy import BeforeApply
from dbctl.schema.migrate import Migration

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import TagTypeDef

PREFIX: Final = "pre-migration"
MAX_IDENTIFIER_LENGTH: Final = 255
# Tags that say what the snapshot is for, so nobody "cleans it up" by mistake.
PURPOSE_TAG: Final = ("purpose", "pre-migration")
RETENTION_TAG: Final = ("retention", "indefinite")
_TAG_VALUE_UNSAFE = re.compile(r"[^\w .:/=+\-@]")


class SnapshotError(DbctlError):
    """The pre-migration snapshot could not be taken; migrations must not run (the CLI prints one line)."""


def _slug(text: str) -> str:
    """Lowercase letters and digits separated by single hyphens, no leading/trailing hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def snapshot_identifier(migration_name: str, now: dt.datetime) -> str:
    """`pre-migration-<migration slug>-<yyyymmdd-hhmmss>` (UTC), truncated to RDS's 255 characters."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S")
    slug = _slug(migration_name) or "unnamed"
    room = MAX_IDENTIFIER_LENGTH - len(PREFIX) - len(stamp) - 2
    slug = slug[:room].rstrip("-")
    return f"{PREFIX}-{slug}-{stamp}"


def _tag_value(value: str) -> str:
    """RDS tag values allow letters, digits, spaces and `_ . : / = + - @`, up to 256 characters."""
    return _TAG_VALUE_UNSAFE.sub("_", value)[:256]


def take_pre_migration_snapshot(
    rds_client: RDSClient,
    instance_id: str,
    migration_name: str,
    *,
    now: dt.datetime | None = None,
    poll_seconds: int = 30,
    max_polls: int = 240,
) -> str:
    """Snapshot `instance_id` before `migration_name` is applied; wait until it is available; return its id.

    The snapshot is manual, so RDS keeps it until someone deletes it on purpose (this code never does).
    """
    snapshot_id = snapshot_identifier(migration_name, now or dt.datetime.now(dt.UTC))
    tags: list[TagTypeDef] = [
        {"Key": PURPOSE_TAG[0], "Value": PURPOSE_TAG[1]},
        {"Key": RETENTION_TAG[0], "Value": RETENTION_TAG[1]},
        {"Key": "migration", "Value": _tag_value(migration_name)},
        {"Key": "source-instance", "Value": _tag_value(instance_id)},
    ]
    try:
        rds_client.create_db_snapshot(
            DBSnapshotIdentifier=snapshot_id, DBInstanceIdentifier=instance_id, Tags=tags
        )
    except ClientError as e:
        error = e.response.get("Error", {})
        raise SnapshotError(
            f"could not start pre-migration snapshot {snapshot_id} of RDS instance {instance_id!r} "
            f"({error.get('Code', 'Unknown')}: {error.get('Message', '')}). No migration was applied. Fix: "
            "check that the "
            "stack's primary_instance_id output names a running instance in this region and that your AWS "
            "credentials allow rds:CreateDBSnapshot, rds:AddTagsToResource and rds:DescribeDBSnapshots."
        ) from None
    try:
        rds_client.get_waiter("db_snapshot_available").wait(
            DBSnapshotIdentifier=snapshot_id,
            WaiterConfig={"Delay": poll_seconds, "MaxAttempts": max_polls},
        )
    except WaiterError as e:
        snapshots = e.last_response.get("DBSnapshots")
        status = (
            snapshots[0].get("Status", "unknown") if isinstance(snapshots, list) and snapshots else "unknown"
        )
        raise SnapshotError(
            f"pre-migration snapshot {snapshot_id} of {instance_id!r} did not become available (status: "
            f"{status}; {e.kwargs.get('reason', 'waiter gave up')}). No migration was applied. Fix: look at "
            f"the snapshot (aws rds describe-db-snapshots --db-snapshot-identifier {snapshot_id}), then "
            "re-run the migration."
        ) from None
    return snapshot_id


def before_pending_migrations(target: StackTarget, say: Callable[[str], None]) -> BeforeApply:
    """The --stack flow's pre-migration hook: runs once, only when migrations are pending, before any change.

    When the stack says so (output pre_migration_snapshot, on in prod), take a manual RDS snapshot of the
    primary named after the first pending migration (the database as it was just before it) and wait until
    it is available; `say` hears progress. A failure stops the run before anything is applied.
    """

    def hook(pending: list[Migration]) -> None:
        if not target.pre_migration_snapshot:
            return
        if not target.instance_id:
            raise DbctlError(
                f"stack {target.stack!r} wants a pre-migration snapshot but has no output "
                "primary_instance_id; run `pulumi up` for it first"
            )
        import boto3

        client = boto3.client("rds", region_name=target.region or None)
        say(f"taking pre-migration snapshot of {target.instance_id} (waits until available)")
        snapshot_id = take_pre_migration_snapshot(client, target.instance_id, pending[0].name)
        say(f"pre-migration snapshot {snapshot_id} is available; it is kept until deleted by hand")

    return hook
