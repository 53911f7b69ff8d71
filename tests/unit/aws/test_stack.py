"""`--stack`: parsing the stack's outputs (a fake outputs dict) and reading its secrets (moto).

The Pulumi automation API itself needs the pulumi CLI, which is not installed here; only its failure path is
tested.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from dbctl.aws import stack
from dbctl.core import names, scram
from dbctl.core.errors import DbctlError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


def outputs(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "primary_address": "spike-land-db-prod.abc.eu-west-1.rds.amazonaws.com",
        "primary_port": 5432,
        "database_name": names.DATABASE_NAME,
        "master_secret_arn": "arn:master",
        "role_secret_arns": {role: f"arn:{role}" for role in names.LOGIN_ROLES},
        "primary_instance_id": "spike-land-db-prod",
        "region": "eu-west-1",
        "pre_migration_snapshot": True,
    }
    data.update(overrides)
    return data


def test_outputs_are_parsed() -> None:
    target = stack.parse_outputs("prod", outputs())
    assert target.address.endswith("rds.amazonaws.com") and target.port == 5432
    assert target.role_secret_arns[names.APP_ROLE] == "arn:spike_app"
    assert target.pre_migration_snapshot and target.instance_id == "spike-land-db-prod"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"primary_address": None}, "has no output 'primary_address'; run `pulumi up`"),
        ({"role_secret_arns": ["x"]}, "role_secret_arns must map role names"),
        ({"role_secret_arns": {names.APP_ROLE: "a"}}, "no secret for spike_migrator, spike_readonly"),
        ({"primary_port": "abc"}, "primary_port is not a port number"),
    ],
)
def test_bad_outputs_are_named(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(DbctlError, match=message.replace("(", r"\(").replace(")", r"\)")):
        stack.parse_outputs("prod", outputs(**overrides))


@pytest.fixture
def secrets() -> Iterator[tuple[SecretsManagerClient, stack.StackTarget, dict[str, str]]]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        master = client.create_secret(
            Name="master", SecretString=json.dumps({"username": "spike_admin", "password": "m@ster pw"})
        )["ARN"]
        verifiers = {}
        arns = {}
        for role in names.LOGIN_ROLES:
            verifier = scram.scram_verifier(f"pw-{role}", os.urandom(16))
            user = names.login_users(role)[-1]  # a pooled role's secret after a rotation names its _b user
            verifiers[user] = verifier
            secret = {
                names.SECRET_USERNAME_KEY: user,
                names.SECRET_PASSWORD_KEY: f"pw-{role}",
                names.SECRET_VERIFIER_KEY: verifier,
            }
            arns[role] = client.create_secret(Name=role, SecretString=json.dumps(secret))["ARN"]
        target = stack.parse_outputs("prod", outputs(master_secret_arn=master, role_secret_arns=arns))
        yield client, target, verifiers


def test_role_verifiers_come_from_the_secrets(
    secrets: tuple[SecretsManagerClient, stack.StackTarget, dict[str, str]],
) -> None:
    client, target, verifiers = secrets
    assert stack.role_verifiers(client, target) == verifiers


def test_admin_url_verifies_the_rds_name_even_through_a_tunnel(
    secrets: tuple[SecretsManagerClient, stack.StackTarget, dict[str, str]],
) -> None:
    client, target, _ = secrets
    direct = conninfo_to_dict(stack.admin_url(client, target, ssl_root_cert="/etc/rds-ca.pem"))
    assert direct["host"] == target.address and direct["port"] == "5432"
    assert direct["user"] == "spike_admin" and direct["password"] == "m@ster pw"
    assert direct["sslmode"] == "verify-full" and direct["sslrootcert"] == "/etc/rds-ca.pem"
    tunnel = conninfo_to_dict(stack.admin_url(client, target, via="localhost:15432"))
    assert (
        tunnel["host"] == target.address and tunnel["hostaddr"] == "127.0.0.1" and tunnel["port"] == "15432"
    )
    with pytest.raises(DbctlError, match="expected HOST:PORT"):
        stack.admin_url(client, target, via="15432")


def test_a_secret_without_a_verifier_is_named(
    secrets: tuple[SecretsManagerClient, stack.StackTarget, dict[str, str]],
) -> None:
    client, target, _ = secrets
    client.put_secret_value(
        SecretId=target.role_secret_arns[names.APP_ROLE], SecretString='{"password": "x"}'
    )
    with pytest.raises(DbctlError, match="role spike_app\\) has no 'scram_verifier'"):
        stack.role_verifiers(client, target)
    with pytest.raises(DbctlError, match="cannot read secret arn:missing"):
        stack.read_secret_json(client, "arn:missing")


def test_reading_outputs_without_the_pulumi_cli_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DbctlError, match="needs the pulumi CLI on PATH"):
        stack.read_outputs("prod", tmp_path)


def test_stack_flow_resolves_url_verifiers_and_the_pre_migration_hook(
    secrets: tuple[SecretsManagerClient, stack.StackTarget, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbctl.cli import targets

    _, target, verifiers = secrets
    fake = outputs(master_secret_arn=target.master_secret_arn, role_secret_arns=dict(target.role_secret_arns))
    monkeypatch.setattr(stack, "read_outputs", lambda name, work_dir=stack.REPO_ROOT: fake)
    conn = targets.admin_database(None, None, "prod", "127.0.0.1:15432", None)
    assert conn.verifiers == verifiers
    assert conninfo_to_dict(conn.url)["hostaddr"] == "127.0.0.1"
    assert conn.before_apply is not None
    with pytest.raises(DbctlError, match="drop --credentials"):
        targets.admin_database(None, stack.REPO_ROOT, "prod", None, None)
