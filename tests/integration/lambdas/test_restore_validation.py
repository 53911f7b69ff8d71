"""The restore-validation Lambda's code against real PostgreSQL, with botocore's Stubber for AWS.

Two clusters stand for the two RDS instances: the source (a migrated database with rows) and the restored
instance (a pg_restore of the source's pg_dump into a database of the same name, with the same roles and
passwords, as a snapshot restore has). The function connects to both with verify-full, as on AWS.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.stub import ANY, Stubber
from psycopg import sql

from dbctl.core import names
from dbctl.local import backup as local_backup
from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.postgres.osproc import free_port
from dbctl.schema import deploy, maintenance
from dbctl.schema.credentials import verifiers_from_mapping
from lambdas.restore_validation import handler
from tests.integration.conftest import secret_shaped

PLAN_ARN = "arn:aws:backup:eu-west-1:123456789012:restore-testing-plan:spike_land_dev_restore_test_abc-1"
OTHER_PLAN_ARN = "arn:aws:backup:eu-west-1:123456789012:restore-testing-plan:someone_else-2"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:spike-land-dev-spike_migrator-AbCdEf"
RESTORED_ARN = "arn:aws:rds:eu-west-1:123456789012:db:awsbackup-restore-test-1"
JOB_ID = "C1C2C3C4-0000-4000-8000-000000000001"


@dataclass(frozen=True)
class Source:
    cluster: Cluster
    database: str
    dump: Path
    migrated_at: dt.datetime


@pytest.fixture(scope="module")
def source(
    pg_cluster: Cluster, role_passwords: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    database = f"src_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(database)
    deploy.run_migrate(
        pg_cluster.admin_conninfo(database), verifiers_from_mapping(secret_shaped(role_passwords), "test")
    )
    with psycopg.connect(pg_cluster.admin_conninfo(database), autocommit=True) as conn:
        for n in range(4):
            user = f"u_{n}_{uuid.uuid4().hex}"
            conn.execute(
                'INSERT INTO "User" (id, email, "updatedAt") VALUES (%s, %s, now())', (user, f"{user}@x.test")
            )
            app = f"a_{uuid.uuid4().hex}"
            conn.execute(
                'INSERT INTO "App" (id, name, "userId", "updatedAt") VALUES (%s, %s, %s, now())',
                (app, "a", user),
            )
            conn.execute(
                'INSERT INTO "Requirement" (id, "appId", description, "updatedAt") '
                "VALUES (%s, %s, %s, now())",
                (f"r_{uuid.uuid4().hex}", app, "r"),
            )
    dump = tmp_path_factory.mktemp("dump") / "source.dump"
    pg_dump = local_backup.client_binary("pg_dump", local_backup.server_major(pg_cluster, database))
    subprocess.run(
        [str(pg_dump), "--format=custom", f"--file={dump}"],
        env=local_backup.client_env(pg_cluster, database, "test dump"),
        check=True,
        capture_output=True,
    )
    yield Source(pg_cluster, database, dump, dt.datetime.now(dt.UTC))
    with psycopg.connect(pg_cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.fixture(scope="module")
def restore_cluster(role_passwords: dict[str, str]) -> Iterator[Cluster]:
    """The "restored instance": the same roles and passwords as the source's cluster."""
    with throwaway_cluster("dbctl-test-restored-", pgstattuple_schema=maintenance.SCHEMA) as cluster:
        deploy.run_migrate(
            cluster.admin_conninfo(names.DATABASE_NAME),
            verifiers_from_mapping(secret_shaped(role_passwords), "t"),
        )
        yield cluster


@pytest.fixture
def restored(source: Source, restore_cluster: Cluster) -> Iterator[Cluster]:
    """A fresh restore of the source's dump, in a database of the source's name."""
    restore_cluster.create_database(source.database)
    with psycopg.connect(restore_cluster.admin_conninfo(source.database), autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(names.OWNER_ROLE))
        )
    pg_restore = local_backup.client_binary(
        "pg_restore", local_backup.server_major(restore_cluster, source.database)
    )
    local_backup.restore_archive(
        pg_restore, source.dump, local_backup.client_env(restore_cluster, source.database, "t")
    )
    yield restore_cluster
    with psycopg.connect(restore_cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(source.database))
        )


@pytest.fixture
def ca_bundle(source: Source, restore_cluster: Cluster, tmp_path: Path) -> Path:
    """Both clusters' CAs in one file, as the RDS bundle holds every root of a region."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(source.cluster.ca_file.read_bytes() + restore_cluster.ca_file.read_bytes())
    return bundle


def config(source: Source, ca_bundle: Path, fraction: float = 0.5) -> handler.Config:
    return handler.Config.from_env(
        {
            "RESTORE_TESTING_PLAN_ARN": PLAN_ARN,
            "CREDENTIALS_SECRET_ARN": SECRET_ARN,
            "SOURCE_HOST": source.cluster.host,
            "SOURCE_PORT": str(source.cluster.port),
            "DATABASE_NAME": source.database,
            "MIN_ROW_FRACTION": str(fraction),
            "SSL_ROOT_CERT": str(ca_bundle),
        }
    )


def event(job_id: str = JOB_ID) -> dict[str, Any]:
    return {
        "source": "aws.backup",
        "detail-type": "Restore Job State Change",
        "detail": {  # what the rule matches (components/restore_validation.py): the status and the plan
            "restoreJobId": job_id,
            "status": "COMPLETED",
            "createdResourceArn": RESTORED_ARN,
            "restoreTestingPlanArn": PLAN_ARN,
        },
    }


class Aws:
    """Stubbed backup, rds and secretsmanager clients; every expected call must happen, no other may."""

    def __init__(self) -> None:
        kw: dict[str, Any] = {
            "region_name": "eu-west-1",
            "aws_access_key_id": "x",
            "aws_secret_access_key": "x",
        }
        self.backup, self.rds, self.secrets = (
            boto3.client(s, **kw) for s in ("backup", "rds", "secretsmanager")
        )
        self.stubs = [Stubber(c) for c in (self.backup, self.rds, self.secrets)]
        for s in self.stubs:
            s.activate()

    def job(
        self, plan: str = PLAN_ARN, recovery_point_at: dt.datetime | None = None, status: str = "COMPLETED"
    ) -> None:
        self.stubs[0].add_response(
            "describe_restore_job",
            {
                "RestoreJobId": JOB_ID,
                "Status": status,
                "CreatedResourceArn": RESTORED_ARN,
                "RecoveryPointCreationDate": recovery_point_at or dt.datetime.now(dt.UTC),
                "CreatedBy": {"RestoreTestingPlanArn": plan},
            },
            {"RestoreJobId": JOB_ID},
        )

    def instance(self, port: int) -> None:
        self.stubs[1].add_response(
            "describe_db_instances",
            {"DBInstances": [{"Endpoint": {"Address": "127.0.0.1", "Port": port}}]},
            {"DBInstanceIdentifier": RESTORED_ARN},
        )

    def secret(self, password: str) -> None:
        value = json.dumps({"username": names.MIGRATOR_ROLE, "password": password, "scram_verifier": "x"})
        self.stubs[2].add_response(
            "get_secret_value",
            {"ARN": SECRET_ARN, "Name": "n", "SecretString": value},
            {"SecretId": SECRET_ARN},
        )

    def expect_result(self, status: str) -> None:
        self.stubs[0].add_response(
            "put_restore_validation_result",
            {},
            {"RestoreJobId": JOB_ID, "ValidationStatus": status, "ValidationStatusMessage": ANY},
        )

    def done(self) -> None:
        for s in self.stubs:
            s.assert_no_pending_responses()


def run(aws: Aws, cfg: handler.Config) -> dict[str, str]:
    result = handler.validate(event(), cfg, aws.backup, aws.rds, aws.secrets, psycopg.connect)
    aws.done()
    return result


def full_stubs(aws: Aws, restored: Cluster, password: str, status: str, **job: Any) -> None:
    aws.job(**job)
    aws.instance(restored.port)
    aws.secret(password)
    aws.expect_result(status)


@pytest.mark.integration
def test_a_faithful_restore_is_successful(
    source: Source, restored: Cluster, ca_bundle: Path, role_passwords: dict[str, str]
) -> None:
    aws = Aws()
    full_stubs(aws, restored, role_passwords[names.MIGRATOR_ROLE], "SUCCESSFUL")
    result = run(aws, config(source, ca_bundle))
    assert result == {
        "result": "SUCCESSFUL",
        "message": "migrations and row counts match the source (User=4, App=4, Requirement=4)",
    }


@pytest.mark.integration
def test_a_restore_from_before_the_migrators_rotation_logs_in_with_its_previous_password(
    source: Source, restored: Cluster, ca_bundle: Path, role_passwords: dict[str, str]
) -> None:
    """The migrator's password rotates every quarter; a recovery point from before has the old verifier."""
    before = secrets.token_urlsafe(16)
    with psycopg.connect(restored.admin_conninfo(source.database), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(names.MIGRATOR_ROLE), before))
    try:
        aws = Aws()
        aws.job()
        aws.instance(restored.port)
        aws.secret(role_passwords[names.MIGRATOR_ROLE])  # AWSCURRENT: the source's, since the rotation
        value = json.dumps({"username": names.MIGRATOR_ROLE, "password": before, "scram_verifier": "x"})
        aws.stubs[2].add_response(
            "get_secret_value",
            {"ARN": SECRET_ARN, "Name": "n", "SecretString": value},
            {"SecretId": SECRET_ARN, "VersionStage": "AWSPREVIOUS"},
        )
        aws.expect_result("SUCCESSFUL")
        assert run(aws, config(source, ca_bundle))["result"] == "SUCCESSFUL"
    finally:
        with psycopg.connect(restored.admin_conninfo(source.database), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(names.MIGRATOR_ROLE), role_passwords[names.MIGRATOR_ROLE]
                )
            )


@pytest.mark.integration
def test_an_emptied_restore_fails_with_the_reason(
    source: Source, restored: Cluster, ca_bundle: Path, role_passwords: dict[str, str]
) -> None:
    with psycopg.connect(restored.admin_conninfo(source.database), autocommit=True) as conn:
        conn.execute('DELETE FROM "App"')  # cascades to "Requirement"
        conn.execute('DELETE FROM "User"')
    aws = Aws()
    full_stubs(aws, restored, role_passwords[names.MIGRATOR_ROLE], "FAILED")
    result = run(aws, config(source, ca_bundle))
    assert result["result"] == "FAILED"
    for table in ("User", "App", "Requirement"):
        assert f'"{table}" is empty (source has 4 rows)' in result["message"]


@pytest.mark.integration
def test_a_partial_restore_below_the_fraction_fails(
    source: Source, restored: Cluster, ca_bundle: Path, role_passwords: dict[str, str]
) -> None:
    with psycopg.connect(restored.admin_conninfo(source.database), autocommit=True) as conn:
        conn.execute('DELETE FROM "App" WHERE id IN (SELECT id FROM "App" ORDER BY id LIMIT 3)')
    aws = Aws()
    full_stubs(aws, restored, role_passwords[names.MIGRATOR_ROLE], "FAILED")
    result = run(aws, config(source, ca_bundle, fraction=0.9))
    assert result["message"] == (
        '"App" has 1 rows, below 0.9 of the source\'s 4; '
        '"Requirement" has 1 rows, below 0.9 of the source\'s 4'
    )


@pytest.mark.integration
def test_a_restore_missing_the_latest_migration_fails(
    source: Source, restored: Cluster, ca_bundle: Path, role_passwords: dict[str, str]
) -> None:
    with psycopg.connect(restored.admin_conninfo(source.database), autocommit=True) as conn:
        conn.execute("DELETE FROM _prisma_migrations")
    aws = Aws()
    full_stubs(aws, restored, role_passwords[names.MIGRATOR_ROLE], "FAILED")
    result = run(aws, config(source, ca_bundle))
    assert result["message"].startswith("_prisma_migrations lacks 20261125060000_init")


@pytest.mark.integration
def test_a_migration_applied_to_the_source_after_the_backup_is_not_expected(
    source: Source, restored: Cluster, ca_bundle: Path, role_passwords: dict[str, str]
) -> None:
    with psycopg.connect(source.cluster.admin_conninfo(source.database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO _prisma_migrations (id, checksum, migration_name, finished_at, applied_steps_count) "
            "VALUES (%s, 'x', '20991231000000_later', now() + interval '1 hour', 1)",
            (str(uuid.uuid4()),),
        )
    try:
        aws = Aws()
        full_stubs(
            aws,
            restored,
            role_passwords[names.MIGRATOR_ROLE],
            "SUCCESSFUL",
            recovery_point_at=source.migrated_at,
        )
        assert run(aws, config(source, ca_bundle))["result"] == "SUCCESSFUL"
        # Had the recovery point been taken after it, the restore would lack it.
        aws = Aws()
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
        full_stubs(aws, restored, role_passwords[names.MIGRATOR_ROLE], "FAILED", recovery_point_at=later)
        assert "lacks 20991231000000_later" in run(aws, config(source, ca_bundle))["message"]
    finally:
        with psycopg.connect(source.cluster.admin_conninfo(source.database), autocommit=True) as conn:
            conn.execute("DELETE FROM _prisma_migrations WHERE migration_name = '20991231000000_later'")


@pytest.mark.integration
def test_another_plans_restore_job_is_ignored_and_not_reported(source: Source, ca_bundle: Path) -> None:
    aws = Aws()
    aws.job(plan=OTHER_PLAN_ARN)  # no rds, secret or put_restore_validation_result call may follow
    result = run(aws, config(source, ca_bundle))
    assert result["result"] == "ignored" and "is not from" in result["reason"]


@pytest.mark.integration
def test_an_unreachable_instance_is_failed_without_the_password_in_the_message(
    source: Source, ca_bundle: Path
) -> None:
    password = secrets.token_urlsafe(16)
    aws = Aws()
    aws.job()
    aws.instance(free_port())  # nothing listens there
    aws.secret(password)
    aws.expect_result("FAILED")
    result = run(aws, config(source, ca_bundle))
    assert result["message"].startswith("validation could not run: OperationalError:")
    assert password not in result["message"]


BARE_CONFIG = handler.Config(PLAN_ARN, SECRET_ARN, "127.0.0.1", 5432, "spike_land", 0.5, "ca.pem")


@pytest.mark.integration
def test_a_restore_job_it_cannot_read_is_reported_failed_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DescribeRestoreJob denied (or throttled): the rule matched this stack's plan, so the job is FAILED
    with the reason, and the result line reaches the FAILED alarm, instead of a crash and a TIMED_OUT."""
    aws = Aws()
    aws.stubs[0].add_client_error(
        "describe_restore_job",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform: backup:DescribeRestoreJob",
        http_status_code=403,
        expected_params={"RestoreJobId": JOB_ID},
    )
    aws.expect_result("FAILED")
    result = run(aws, BARE_CONFIG)
    assert result["message"].startswith("validation could not run: DescribeRestoreJob failed: ClientError:")
    assert "backup:DescribeRestoreJob" in result["message"]
    assert json.loads(capsys.readouterr().out)["validationStatus"] == "FAILED"
    # Another plan's event (a rule matching more than it should) is not reported on that plan's behalf.
    aws = Aws()
    aws.stubs[0].add_client_error("describe_restore_job", service_error_code="ThrottlingException")
    other = {**event(), "detail": {**event()["detail"], "restoreTestingPlanArn": OTHER_PLAN_ARN}}
    assert handler.validate(other, BARE_CONFIG, aws.backup, aws.rds, aws.secrets, psycopg.connect)[
        "result"
    ] == ("ignored")
    aws.done()


@pytest.mark.integration
def test_a_report_that_fails_still_prints_the_failed_line_then_raises(
    capsys: pytest.CaptureFixture[str],
) -> None:
    aws = Aws()
    aws.job()
    aws.stubs[1].add_client_error("describe_db_instances", service_error_code="DBInstanceNotFound")
    aws.stubs[0].add_client_error("put_restore_validation_result", service_error_code="AccessDeniedException")
    with pytest.raises(aws.backup.exceptions.ClientError, match="AccessDenied"):
        handler.validate(event(), BARE_CONFIG, aws.backup, aws.rds, aws.secrets, psycopg.connect)
    aws.done()
    assert json.loads(capsys.readouterr().out)["validationStatus"] == "FAILED"
