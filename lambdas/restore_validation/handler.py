"""Restore-test validation: the seed's "verify critical data" step for AWS Backup restore testing.

An EventBridge rule sends this function the `Restore Job State Change` events (status COMPLETED) of the
stack's restore testing plan. For each, it:

1. reads the job (`backup:DescribeRestoreJob`) and ignores it unless it was created by this stack's plan
   (`CreatedBy.RestoreTestingPlanArn`) and is COMPLETED; when the job cannot be read, the event's own
   `detail.restoreTestingPlanArn` (the rule matched it) decides, and the validation is FAILED with why;
2. finds the restored instance (`rds:DescribeDBInstances` on `CreatedResourceArn`) and reads the migrator's
   credentials from Secrets Manager (the restored instance has the roles as they were at backup time: when
   AWSCURRENT's password fails there, AWSPREVIOUS's, from before the migrator's last rotation);
3. connects to the restored instance and to the source primary, both read-only and `verify-full` with the
   RDS CA bundle shipped beside this file, and checks:
   - `_prisma_migrations` has the source's latest migration finished before the recovery point was taken;
   - "User", "App" and "Requirement" exist, each with at least `MIN_ROW_FRACTION` of the source's rows,
     and at least one row where the source has any. The source's counts are read now, at validation time
     (the recovery point is at most a few days old, so the fraction tolerates growth since then);
4. reports `backup:PutRestoreValidationResult` SUCCESSFUL, or FAILED with the reasons (also when a check
   could not run). FAILED results reach the alarm topic through an EventBridge rule on `validationStatus`.

Configuration (environment): RESTORE_TESTING_PLAN_ARN, CREDENTIALS_SECRET_ARN, SOURCE_HOST, SOURCE_PORT,
DATABASE_NAME, MIN_ROW_FRACTION (default 0.5), SSL_ROOT_CERT (default: rds-ca-bundle.pem beside this file).
Only boto3 (in the Lambda runtime) and psycopg (packaged) are imported: nothing from this repository.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

CRITICAL_TABLES = ("User", "App", "Requirement")
HISTORY_TABLE = "_prisma_migrations"
DEFAULT_MIN_ROW_FRACTION = 0.5
MESSAGE_LIMIT = 1000  # characters of ValidationStatusMessage we send
CONNECT_TIMEOUT_S = 15


@dataclass(frozen=True)
class Config:
    plan_arn: str
    secret_arn: str
    source_host: str
    source_port: int
    database: str
    min_row_fraction: float
    ssl_root_cert: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        fraction = float(env.get("MIN_ROW_FRACTION", DEFAULT_MIN_ROW_FRACTION))
        if not 0 < fraction <= 1:
            raise ValueError(f"MIN_ROW_FRACTION must be in (0, 1], got {fraction}")
        return cls(
            plan_arn=env["RESTORE_TESTING_PLAN_ARN"],
            secret_arn=env["CREDENTIALS_SECRET_ARN"],
            source_host=env["SOURCE_HOST"],
            source_port=int(env.get("SOURCE_PORT", "5432")),
            database=env["DATABASE_NAME"],
            min_row_fraction=fraction,
            ssl_root_cert=env.get("SSL_ROOT_CERT", str(Path(__file__).with_name("rds-ca-bundle.pem"))),
        )


@dataclass(frozen=True)
class Snapshot:
    """What one database says: its applied migrations (name -> finished_at) and critical row counts."""

    migrations: dict[str, dt.datetime]
    counts: dict[str, int | None]  # None: the table is missing


Connect = Callable[..., "psycopg.Connection[tuple[Any, ...]]"]


def read_snapshot(conn: psycopg.Connection[tuple[Any, ...]]) -> Snapshot:
    migrations: dict[str, dt.datetime] = {}
    if conn.execute("SELECT to_regclass(%s)", (f"public.{HISTORY_TABLE}",)).fetchone() != (None,):
        rows = conn.execute(
            sql.SQL(
                "SELECT migration_name, finished_at FROM public.{} "
                "WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL"
            ).format(sql.Identifier(HISTORY_TABLE))
        ).fetchall()
        migrations = {str(name): finished for name, finished in rows}
    counts: dict[str, int | None] = {}
    for table in CRITICAL_TABLES:
        if conn.execute("SELECT to_regclass(%s)", (f'public."{table}"',)).fetchone() == (None,):
            counts[table] = None
            continue
        row = conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else None
    return Snapshot(migrations, counts)


def latest_before(migrations: Mapping[str, dt.datetime], moment: dt.datetime | None) -> str | None:
    """The newest migration finished at or before moment (all of them when moment is None)."""
    eligible = [
        (finished, name) for name, finished in migrations.items() if moment is None or finished <= moment
    ]
    return max(eligible)[1] if eligible else None


def problems(
    restored: Snapshot, source: Snapshot, recovery_point_at: dt.datetime | None, fraction: float
) -> list[str]:
    """Every reason the restored database is not a good copy of the source; empty when it is."""
    found: list[str] = []
    expected = latest_before(source.migrations, recovery_point_at)
    if expected is not None and expected not in restored.migrations:
        have = latest_before(restored.migrations, None)
        found.append(
            f"{HISTORY_TABLE} lacks {expected} (the source's latest at backup time; restored latest: {have})"
        )
    for table in CRITICAL_TABLES:
        was, now = restored.counts[table], source.counts[table] or 0
        if was is None:
            found.append(f'"{table}" is missing')
        elif now > 0 and was == 0:
            found.append(f'"{table}" is empty (source has {now} rows)')
        elif was < fraction * now:
            found.append(f'"{table}" has {was} rows, below {fraction:g} of the source\'s {now}')
    return found


def _read(connect: Connect, host: str, port: int, cfg: Config, user: str, password: str) -> Snapshot:
    with connect(
        host=host,
        port=port,
        dbname=cfg.database,
        user=user,
        password=password,
        sslmode="verify-full",
        sslrootcert=cfg.ssl_root_cert,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="restore-validation",
        options="-c default_transaction_read_only=on -c statement_timeout=60000",
        autocommit=True,
    ) as conn:
        return read_snapshot(conn)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _password_refused(e: psycopg.OperationalError) -> bool:
    """PostgreSQL refused the password (invalid_password, 28P01), as opposed to an unreachable server."""
    return getattr(e, "sqlstate", None) == "28P01" or "password authentication failed" in str(e)


def _check(
    job: Mapping[str, Any], cfg: Config, rds: Any, secrets: Any, connect: Connect
) -> tuple[list[str], Snapshot | None]:
    """The problems with the restored database (empty: a good copy) and its snapshot when it was read."""
    try:
        instances = rds.describe_db_instances(DBInstanceIdentifier=job["CreatedResourceArn"])["DBInstances"]
        endpoint = instances[0]["Endpoint"]
        secret = json.loads(secrets.get_secret_value(SecretId=cfg.secret_arn)["SecretString"])
        user, password = secret["username"], secret["password"]
        try:
            restored = _read(connect, endpoint["Address"], int(endpoint["Port"]), cfg, user, password)
        except psycopg.OperationalError as e:
            # The migrator's password rotated after the recovery point: the restored instance has the one
            # before, AWSPREVIOUS (none before the first rotation: the first error stands).
            if not _password_refused(e):
                raise
            try:
                value = secrets.get_secret_value(SecretId=cfg.secret_arn, VersionStage="AWSPREVIOUS")
            except secrets.exceptions.ResourceNotFoundException:
                raise e from None
            previous = json.loads(value["SecretString"])
            restored = _read(
                connect,
                endpoint["Address"],
                int(endpoint["Port"]),
                cfg,
                previous["username"],
                previous["password"],
            )
        source = _read(connect, cfg.source_host, cfg.source_port, cfg, user, password)
        return problems(
            restored, source, job.get("RecoveryPointCreationDate"), cfg.min_row_fraction
        ), restored
    except Exception as e:  # any failure to check is a FAILED validation, and is reported
        return [f"validation could not run: {type(e).__name__}: {_one_line(e)}"], None


def validate(
    event: Mapping[str, Any], cfg: Config, backup: Any, rds: Any, secrets: Any, connect: Connect
) -> dict[str, str]:
    """Validate the restore job of one event and report the result; returns what was reported (or why not).

    The result line (`validationStatus`) is printed before the report, so a FAILED validation reaches the
    alarm even when PutRestoreValidationResult itself fails (that failure is then raised: the Errors alarm,
    EventBridge's retries and the dead-letter queue)."""
    detail = event.get("detail") or {}
    job_id = detail.get("restoreJobId")
    if not job_id:
        return {"result": "ignored", "reason": "no detail.restoreJobId in the event"}
    restored: Snapshot | None = None
    try:
        job = backup.describe_restore_job(RestoreJobId=job_id)
    except Exception as e:  # AccessDenied, throttling, ...: the rule matched this plan, so report it
        if detail.get("restoreTestingPlanArn") != cfg.plan_arn:
            return {"result": "ignored", "reason": f"restore job {job_id} is not from {cfg.plan_arn}"}
        found = [f"validation could not run: DescribeRestoreJob failed: {type(e).__name__}: {_one_line(e)}"]
    else:
        plan = (job.get("CreatedBy") or {}).get("RestoreTestingPlanArn")
        if plan != cfg.plan_arn:
            return {"result": "ignored", "reason": f"restore job {job_id} is not from {cfg.plan_arn}"}
        if job.get("Status") != "COMPLETED":
            return {"result": "ignored", "reason": f"restore job {job_id} is {job.get('Status')}"}
        found, restored = _check(job, cfg, rds, secrets, connect)
    if found:
        status, message = "FAILED", "; ".join(found)
    else:
        assert restored is not None
        counts = ", ".join(f"{t}={restored.counts[t]}" for t in CRITICAL_TABLES)
        status, message = "SUCCESSFUL", f"migrations and row counts match the source ({counts})"
    message = message[:MESSAGE_LIMIT]
    print(json.dumps({"restoreJobId": job_id, "validationStatus": status, "message": message}))
    backup.put_restore_validation_result(
        RestoreJobId=job_id, ValidationStatus=status, ValidationStatusMessage=message
    )
    return {"result": status, "message": message}


def handler(event: Mapping[str, Any], context: object) -> dict[str, str]:
    """The Lambda entry point."""
    import boto3  # in the Lambda runtime; imported here so tests and the local checks need no AWS

    cfg = Config.from_env(os.environ)
    return validate(
        event,
        cfg,
        boto3.client("backup"),
        boto3.client("rds"),
        boto3.client("secretsmanager"),
        psycopg.connect,
    )
