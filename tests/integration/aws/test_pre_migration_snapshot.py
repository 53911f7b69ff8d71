"""`dbctl migrate --stack prod` takes a pre-migration RDS snapshot before it applies anything.

End to end in one process: the CLI reads the stack's outputs (a fake of the automation API's answer), its
secrets from moto's Secrets Manager, snapshots the primary in moto's RDS, and migrates a real PostgreSQL
reached "through a tunnel" (--via), with TLS verifying the RDS-style host name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from click.testing import CliRunner
from moto import mock_aws

from dbctl.aws import snapshots, stack
from dbctl.cli.main import cli
from dbctl.core import names, scram
from tests.integration.conftest import FreshDatabase

REGION = "eu-west-1"
INSTANCE = "spike-land-prod-a1b2c3"
FIRST_MIGRATION = "20261125060000_init"


def _history_exists(db: FreshDatabase) -> bool:
    with psycopg.connect(db.admin_conninfo) as conn:
        row = conn.execute("SELECT to_regclass('public._prisma_migrations') IS NOT NULL").fetchone()
        return bool(row and row[0])


@pytest.fixture
def prod_stack(
    fresh_db: FreshDatabase, role_passwords: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    cluster = fresh_db.cluster
    with mock_aws():
        rds = boto3.client("rds", region_name=REGION)
        rds.create_db_instance(
            DBInstanceIdentifier=INSTANCE,
            DBInstanceClass="db.m7g.large",
            Engine="postgres",
            AllocatedStorage=100,
            MasterUsername=cluster.admin_user,
            MasterUserPassword="not-the-real-one-1",
        )
        sm = boto3.client("secretsmanager", region_name=REGION)
        master = sm.create_secret(
            Name="master",
            SecretString=json.dumps(
                {
                    names.SECRET_USERNAME_KEY: cluster.admin_user,
                    names.SECRET_PASSWORD_KEY: cluster.admin_password,
                }
            ),
        )["ARN"]
        role_arns = {}
        for role, password in role_passwords.items():
            verifier = scram.scram_verifier(password, b"0123456789abcdef")
            role_arns[role] = sm.create_secret(
                Name=role,
                SecretString=json.dumps(
                    {
                        names.SECRET_USERNAME_KEY: role,
                        names.SECRET_PASSWORD_KEY: password,
                        names.SECRET_VERIFIER_KEY: verifier,
                    }
                ),
            )["ARN"]
        outputs = {
            # The certificate names localhost; --via sends the connection to 127.0.0.1:<port>.
            "primary_address": "localhost",
            "primary_port": 5432,
            "database_name": fresh_db.name,
            "master_secret_arn": master,
            "role_secret_arns": role_arns,
            "primary_instance_id": INSTANCE,
            "region": REGION,
            "pre_migration_snapshot": True,
        }
        monkeypatch.setattr(stack, "read_outputs", lambda name, work_dir=stack.REPO_ROOT: outputs)
        yield {"rds": rds, "outputs": outputs}


def _migrate(db: FreshDatabase) -> Any:
    args = ["migrate", "--stack", "prod", "--via", f"127.0.0.1:{db.cluster.port}"]
    args += ["--ssl-root-cert", str(db.cluster.ca_file)]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _pre_migration_snapshots(rds: Any) -> list[dict[str, Any]]:
    found = rds.describe_db_snapshots(DBInstanceIdentifier=INSTANCE, SnapshotType="manual")["DBSnapshots"]
    return [s for s in found if s["DBSnapshotIdentifier"].startswith(snapshots.PREFIX)]


def test_migrate_stack_prod_snapshots_first_then_applies(
    prod_stack: dict[str, Any], fresh_db: FreshDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    rds = prod_stack["rds"]
    seen_history_at_snapshot: list[bool] = []
    real = snapshots.take_pre_migration_snapshot

    def spy(client: Any, instance_id: str, migration_name: str, **kw: Any) -> str:
        seen_history_at_snapshot.append(_history_exists(fresh_db))
        return real(client, instance_id, migration_name, poll_seconds=1, **kw)

    monkeypatch.setattr(snapshots, "take_pre_migration_snapshot", spy)

    result = _migrate(fresh_db)
    assert result.exit_code == 0, result.output
    assert seen_history_at_snapshot == [False]  # the snapshot came before any change
    assert _history_exists(fresh_db)
    (snap,) = _pre_migration_snapshots(rds)
    assert snap["DBSnapshotIdentifier"].startswith(f"pre-migration-{FIRST_MIGRATION.replace('_', '-')}-")
    assert snap["Status"] == "available"
    assert "is available; it is kept until deleted by hand" in result.output

    # Nothing pending: no second snapshot.
    again = _migrate(fresh_db)
    assert again.exit_code == 0, again.output
    assert len(_pre_migration_snapshots(rds)) == 1
    assert seen_history_at_snapshot == [False]


def test_a_failed_snapshot_applies_nothing(prod_stack: dict[str, Any], fresh_db: FreshDatabase) -> None:
    prod_stack["outputs"]["primary_instance_id"] = "no-such-instance"
    result = _migrate(fresh_db)
    assert result.exit_code == 2
    assert "could not start pre-migration snapshot" in result.output
    assert "No migration was applied" in result.output
    assert not _history_exists(fresh_db)


def test_stacks_without_the_setting_take_no_snapshot(
    prod_stack: dict[str, Any], fresh_db: FreshDatabase
) -> None:
    prod_stack["outputs"]["pre_migration_snapshot"] = False
    result = _migrate(fresh_db)
    assert result.exit_code == 0, result.output
    assert _history_exists(fresh_db)
    assert _pre_migration_snapshots(prod_stack["rds"]) == []
