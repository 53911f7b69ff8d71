"""dbctl.snapshots: the pre-migration manual snapshot, against moto's RDS."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.exceptions import WaiterError
from moto import mock_aws

from dbctl.aws.snapshots import SnapshotError, snapshot_identifier, take_pre_migration_snapshot

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient

REGION = "eu-west-1"
INSTANCE = "spike-land-prod-primary"
NOW = dt.datetime(2026, 11, 25, 6, 30, 15, tzinfo=dt.UTC)
# RDS rule for snapshot identifiers: a letter first; letters, digits, hyphens; no "--"; no trailing "-".
VALID_ID = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|-(?=[A-Za-z0-9]))*$")


@pytest.fixture
def rds() -> Iterator[RDSClient]:
    with mock_aws():
        client = boto3.client("rds", region_name=REGION)
        client.create_db_instance(
            DBInstanceIdentifier=INSTANCE,
            DBInstanceClass="db.m7g.large",
            Engine="postgres",
            AllocatedStorage=100,
            MasterUsername="spike_admin",
            MasterUserPassword="not-a-real-password-1",
        )
        yield client


@pytest.mark.parametrize(
    "name",
    [
        "20250101120000_init",
        "20250301093000_add_app_status_index",
        "___Weird  NAME!!with--symbols__",
        "9_starts_with_digit",
        "",
        "ü-ñ-ø only non-ascii",
        "x" * 400,
    ],
)
def test_identifier_is_valid_for_rds(name: str) -> None:
    ident = snapshot_identifier(name, NOW)
    assert VALID_ID.fullmatch(ident), ident
    assert len(ident) <= 255
    assert ident.endswith("-20261125-063015")


def test_identifier_names_the_migration() -> None:
    assert (
        snapshot_identifier("20250101120000_init", NOW) == "pre-migration-20250101120000-init-20261125-063015"
    )


def test_identifier_uses_utc() -> None:
    later_elsewhere = NOW.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30)))
    assert snapshot_identifier("a", later_elsewhere) == snapshot_identifier("a", NOW)


def test_takes_tagged_manual_snapshot_and_waits_until_available(rds: RDSClient) -> None:
    snap_id = take_pre_migration_snapshot(rds, INSTANCE, "20250101120000_init", now=NOW, poll_seconds=1)

    assert snap_id == "pre-migration-20250101120000-init-20261125-063015"
    (snap,) = rds.describe_db_snapshots(DBSnapshotIdentifier=snap_id)["DBSnapshots"]
    assert snap["DBInstanceIdentifier"] == INSTANCE
    assert snap["SnapshotType"] == "manual"  # manual snapshots never expire
    assert snap["Status"] == "available"
    tags = {
        t["Key"]: t["Value"]
        for t in rds.list_tags_for_resource(ResourceName=snap["DBSnapshotArn"])["TagList"]
    }
    assert tags == {
        "purpose": "pre-migration",
        "retention": "indefinite",
        "migration": "20250101120000_init",
        "source-instance": INSTANCE,
    }


def test_second_migration_keeps_the_first_snapshot(rds: RDSClient) -> None:
    first = take_pre_migration_snapshot(rds, INSTANCE, "20250101120000_init", now=NOW, poll_seconds=1)
    second = take_pre_migration_snapshot(
        rds, INSTANCE, "20250102120000_more", now=NOW + dt.timedelta(days=1), poll_seconds=1
    )
    ids = {
        s["DBSnapshotIdentifier"]
        for s in rds.describe_db_snapshots(DBInstanceIdentifier=INSTANCE)["DBSnapshots"]
    }
    assert {first, second} <= ids


def test_unknown_instance_is_one_clear_error(rds: RDSClient) -> None:
    with pytest.raises(SnapshotError) as info:
        take_pre_migration_snapshot(rds, "no-such-instance", "20250101120000_init", now=NOW, poll_seconds=1)
    message = str(info.value)
    assert "no-such-instance" in message
    assert "No migration was applied" in message
    assert "Fix:" in message


class _StuckWaiter:
    def wait(self, **kwargs: object) -> None:
        raise WaiterError(
            name="DBSnapshotAvailable",
            reason="Max attempts exceeded",
            last_response={"DBSnapshots": [{"Status": "creating"}]},  # type: ignore[typeddict-unknown-key]
        )


def test_a_snapshot_that_never_becomes_available_is_one_clear_error(
    rds: RDSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rds, "get_waiter", lambda name: _StuckWaiter())
    with pytest.raises(SnapshotError) as info:
        take_pre_migration_snapshot(rds, INSTANCE, "20250101120000_init", now=NOW, poll_seconds=1)
    message = str(info.value)
    assert "pre-migration-20250101120000-init-20261125-063015" in message
    assert "status: creating" in message and "Max attempts exceeded" in message
    assert "No migration was applied" in message
    # The snapshot itself was requested and is left alone (never deleted).
    assert rds.describe_db_snapshots(DBInstanceIdentifier=INSTANCE)["DBSnapshots"]
