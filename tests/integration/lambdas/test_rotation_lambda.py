"""The rotation function (lambdas/rotation/handler.py) against a real local stack, Secrets Manager stubbed.

moto holds the secrets (versions, staging labels, AWSPREVIOUS moving with AWSCURRENT);
tests/integration/lambdas/fake_secretsmanager.py adds what the Secrets Manager service does before it calls
the function (rotation enabled, the new version staged AWSPENDING with no value until createSecret). The
PgBouncer "host refresh" is the real auth-file helper (hosts/pgbouncer_authfile.py) reading the stubbed
secrets, then a reload of the local PgBouncer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from dbctl.core import names, rotation
from dbctl.local.bouncer import pgbouncer_config, pgbouncer_pid
from dbctl.local.stack import existing_stack
from dbctl.local.state import write_private
from dbctl.pgbouncer.process import PgBouncerServer
from dbctl.postgres.osproc import HOST
from dbctl.postgres.spec import DEFAULT_ADMIN_USER
from hosts import pgbouncer_authfile
from lambdas.rotation import handler
from tests.integration.lambdas.fake_secretsmanager import FakeSecretsManager
from tests.integration.local.test_local import LocalStack, running_stack

pytestmark = pytest.mark.integration
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack("--no-replica") as s:
        yield s


@pytest.fixture
def aws(stack: LocalStack) -> Iterator[tuple[FakeSecretsManager, handler.Config]]:
    creds = json.loads(stack.paths.credentials_file.read_text())
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        admin = creds[DEFAULT_ADMIN_USER]
        master = {
            "engine": "postgres",
            "host": HOST,
            "port": stack.pg_port,
            "dbname": names.DATABASE_NAME,
            "username": admin["username"],
            "password": admin["password"],
        }
        master_arn = client.create_secret(Name="master", SecretString=json.dumps(master))["ARN"]
        role_arns = {}
        for role in names.ALTERNATING_ROLES:
            current = {k: creds[role][k] for k in ("username", "password", "scram_verifier")}
            role_arns[role] = client.create_secret(Name=role, SecretString=json.dumps(current))["ARN"]
        ca = str(stack.paths.ca_dir / "ca.crt")
        cfg = handler.Config(
            master_secret_arn=master_arn,
            role_secrets={arn: role for role, arn in role_arns.items()},
            db_host=HOST,
            db_port=stack.pg_port,
            db_name=names.DATABASE_NAME,
            pgbouncer_host=HOST,
            pgbouncer_port=stack.pgbouncer_port,
            test_timeout_s=1,
            ssl_root_cert=ca,
            pgbouncer_ca_file=ca,
        )
        yield FakeSecretsManager(client), cfg


def step(
    sm: FakeSecretsManager, cfg: handler.Config, arn: str, name: str, capsys: pytest.CaptureFixture[str]
) -> str:
    handler.handler({"SecretId": arn, "ClientRequestToken": sm.started[arn], "Step": name}, None, sm, cfg)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    return str(json.loads(line)["outcome"])


def refresh_pgbouncer_hosts(stack: LocalStack, sm: FakeSecretsManager, cfg: handler.Config) -> str:
    """What each PgBouncer host's timer does: the auth file from the secrets' versions, then a reload."""

    def fetch(arn: str, stage: str) -> str | None:
        try:
            return str(sm.client.get_secret_value(SecretId=arn, VersionStage=stage)["SecretString"])
        except sm.exceptions.ResourceNotFoundException:
            return None

    text = pgbouncer_authfile.render([(role, arn) for arn, role in cfg.role_secrets.items()], fetch)
    verifiers = dict(line.replace('"', "").split(" ", 1) for line in text.splitlines())
    s = existing_stack(stack.paths)
    server = PgBouncerServer(s.pgbouncer_dir)
    pid = pgbouncer_pid(s)
    assert pid is not None
    server.reload_pid(pid, pgbouncer_config(s, server), verifiers)
    return text


def pooled(stack: LocalStack, secret: dict[str, Any]) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=HOST,
        port=stack.pgbouncer_port,
        dbname=names.DATABASE_NAME,
        user=secret["username"],
        password=secret["password"],
        sslmode="verify-full",
        sslrootcert=str(stack.paths.ca_dir / "ca.crt"),
        autocommit=True,
    )


def test_a_role_rotation_prepares_the_inactive_user_waits_for_pgbouncer_then_switches(
    stack: LocalStack, aws: tuple[FakeSecretsManager, handler.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    sm, cfg = aws
    arn = next(a for a, role in cfg.role_secrets.items() if role == names.APP_ROLE)
    before = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    held = pooled(stack, before)
    sm.start_rotation(arn)

    assert step(sm, cfg, arn, "createSecret", capsys) == f"new version for {names.APP_ROLE}_b"
    assert step(sm, cfg, arn, "createSecret", capsys) == "pending version exists"  # a retry: same version
    pending = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSPENDING")["SecretString"])
    assert pending["username"] == f"{names.APP_ROLE}_b" and pending["password"] != before["password"]

    assert step(sm, cfg, arn, "setSecret", capsys) == f"{names.APP_ROLE}_b's verifier set"
    assert step(sm, cfg, arn, "setSecret", capsys) == f"{names.APP_ROLE}_b's verifier already set"
    # The hosts have not refreshed their auth file yet: testSecret fails, so the secret does not switch.
    with pytest.raises(handler.RotationFailed, match=f"test: {names.APP_ROLE}_b cannot log in"):
        step(sm, cfg, arn, "testSecret", capsys)
    assert (
        json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])["username"]
        == before["username"]
    )

    userlist = refresh_pgbouncer_hosts(stack, sm, cfg)
    assert f'"{names.APP_ROLE}_a" ' in userlist and f'"{names.APP_ROLE}_b" ' in userlist
    assert (
        step(sm, cfg, arn, "testSecret", capsys)
        == f"{names.APP_ROLE}_b logs in through PgBouncer (spike_land)"
    )
    assert step(sm, cfg, arn, "finishSecret", capsys) == "AWSCURRENT moved to the new version"
    assert step(sm, cfg, arn, "finishSecret", capsys) == "already current"

    current = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    previous = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSPREVIOUS")["SecretString"])
    assert current == pending and previous == before
    with pooled(stack, current) as conn:  # the app's next connection, with the secret it re-reads
        assert conn.execute("SELECT session_user, current_user").fetchone() == (
            f"{names.APP_ROLE}_b",
            names.APP_ROLE,
        )
    with pooled(stack, previous) as conn:  # an app that has not re-read yet still logs in
        assert conn.execute("SELECT session_user").fetchone() == (before["username"],)
    assert held.execute("SELECT 1").fetchone() == (1,)  # connected before the rotation: untouched
    held.close()
    out = capsys.readouterr().out
    assert pending["password"] not in out and before["password"] not in out


def test_the_master_password_rotates_on_the_same_user(
    stack: LocalStack, aws: tuple[FakeSecretsManager, handler.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    sm, cfg = aws
    arn = cfg.master_secret_arn
    before = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    sm.start_rotation(arn)
    for name in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        step(sm, cfg, arn, name, capsys)
    after = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    assert after["username"] == before["username"] == DEFAULT_ADMIN_USER
    assert after["password"] != before["password"]
    assert {k: v for k, v in after.items() if k != "password"} == {
        k: v for k, v in before.items() if k != "password"
    }  # host, port, engine: the standard RDS JSON kept

    def direct(password: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=HOST,
            port=stack.pg_port,
            dbname=names.DATABASE_NAME,
            user=DEFAULT_ADMIN_USER,
            password=password,
            sslmode="verify-full",
            sslrootcert=str(stack.paths.ca_dir / "ca.crt"),
        )

    with direct(after["password"]) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (DEFAULT_ADMIN_USER,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        direct(before["password"]).close()
    # The verifier went by COPY, never in a statement pg_stat_statements could keep: no ALTER ROLE with one
    # (the local cluster's own bootstrap CREATE ROLE statements are there, from before).
    with direct(after["password"]) as conn:
        leaked = conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query ILIKE %s", ("%ALTER ROLE%SCRAM-SHA-256$%",)
        ).fetchone()
        do_blocks = conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query ILIKE %s", ("DO %pg_temp.dbctl_verifiers%",)
        ).fetchone()
    assert leaked == (0,) and do_blocks is not None and int(str(do_blocks[0])) >= 1
    # The local stack's own record of the admin password follows (so `down`/`status` keep working).
    creds = json.loads(stack.paths.credentials_file.read_text())
    creds[DEFAULT_ADMIN_USER]["password"] = after["password"]
    creds[DEFAULT_ADMIN_USER]["scram_verifier"] = rotation.verifier_for(after["password"])
    write_private(stack.paths.credentials_file, json.dumps(creds))
    assert after["password"] not in capsys.readouterr().out


def test_a_secret_it_does_not_rotate_is_refused(aws: tuple[FakeSecretsManager, handler.Config]) -> None:
    sm, cfg = aws
    other = sm.create_secret(Name="other", SecretString="{}")["ARN"]
    with pytest.raises(handler.RotationFailed, match="is not one this function rotates"):
        handler.handler({"SecretId": other, "ClientRequestToken": "t", "Step": "createSecret"}, None, sm, cfg)
