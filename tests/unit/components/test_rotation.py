"""The Rotation component under Pulumi mocks, for the real dev and prod stack files; the Pulumi-managed
first versions of the rotated secrets; the rotation step's pure parts (dbctl.rotation)."""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import credentials as credentials_component
from components.rotation import DBCTL_CORE, HANDLER, TEST_TIMEOUT_S, TIMEOUT_S
from dbctl.core import names, rotation, scram
from dbctl.pgbouncer.config import POOLED_ROLES
from dbctl.stackconfig.settings import SettingsError
from lambdas import build
from lambdas.rotation.handler import Config
from tests.unit.harness import Resource, RunResult, named, of_type, run, run_fresh, settings_for

STACKS = ["dev", "prod"]
FUNCTION = "aws:lambda/function:Function"
ROTATION = "aws:secretsmanager/secretRotation:SecretRotation"


@cache
def result(stack: str) -> RunResult:
    return run(stack)


def function(r: RunResult) -> Resource:
    return named(of_type(r.resources, FUNCTION), "rotation-fn")


def rotated_arns(r: RunResult) -> dict[str, str]:
    roles = r.outputs["role_secret_arns"]
    return {
        "master": r.outputs["master_secret_arn"],
        **{role: roles[role] for role in (*names.ALTERNATING_ROLES, names.MIGRATOR_ROLE)},
    }


@pytest.mark.parametrize("stack", STACKS)
def test_every_rotated_secret_has_a_schedule_on_the_function(stack: str) -> None:
    r = result(stack)
    fn = function(r)
    schedules = {res.inputs["secretId"]: res for res in of_type(r.resources, ROTATION)}
    # Every login role's secret and the master's: the migrator's too (seed: quarterly; Checkov CKV2_AWS_57).
    assert (
        set(schedules)
        == set(rotated_arns(r).values())
        == {
            r.outputs["master_secret_arn"],
            *r.outputs["role_secret_arns"].values(),
        }
    )
    for schedule in schedules.values():
        assert schedule.inputs["rotationLambdaArn"] == fn.state["arn"]
        assert schedule.inputs["rotationRules"] == {"automaticallyAfterDays": 90}  # the seed's quarter
        assert schedule.inputs["rotateImmediately"] is False
    assert r.outputs["rotation_function_arn"] == fn.state["arn"]


@pytest.mark.parametrize("stack", STACKS)
def test_each_rotation_waits_for_its_secrets_first_version_and_the_functions_path_to_secrets_manager(
    stack: str,
) -> None:
    """Declaring a rotation runs the function's testSecret on an AWSPENDING version (the configuration test:
    lambdas/rotation/handler.py): the secret must have its AWSCURRENT and the function its route to
    Secrets Manager (egress to the endpoints' group, and their ingress) by then."""
    r = result(stack)
    versions = {
        v.inputs["secretId"]: v.urn
        for v in of_type(r.resources, "aws:secretsmanager/secretVersion:SecretVersion")
    }
    path = {
        res.urn
        for res in r.resources
        if res.name in ("rotation-fn-to-endpoints", "rotation-endpoints-from-fn", "rotation-fn-https")
    }
    assert len(path) == 2  # both stacks have the interface endpoints
    for schedule in of_type(r.resources, ROTATION):
        assert versions[schedule.inputs["secretId"]] in schedule.dependencies
        assert path <= schedule.dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_the_functions_log_group_is_encrypted_with_the_stack_key_whose_policy_admits_it(stack: str) -> None:
    r = result(stack)
    group = named(of_type(r.resources, "aws:cloudwatch/logGroup:LogGroup"), "rotation-fn")
    assert group.inputs["name"] == f"/aws/lambda/{function(r).inputs['name']}"
    key = named(of_type(r.resources, "aws:kms/key:Key"), "credentials-key")
    assert group.inputs["kmsKeyId"] == key.state["arn"] == r.outputs["kms_key_arn"]
    statement = next(st for st in json.loads(key.inputs["policy"])["Statement"] if "Logs" in st["Sid"])
    allowed = statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert any(fnmatch.fnmatchcase(group.state["arn"], pattern) for pattern in allowed)


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_manager_may_invoke_the_function_for_those_secrets_only(stack: str) -> None:
    r = result(stack)
    fn = function(r)
    permissions = [
        p for p in of_type(r.resources, "aws:lambda/permission:Permission") if p.name.startswith("rotation-")
    ]
    assert {p.inputs["sourceArn"] for p in permissions} == set(rotated_arns(r).values())
    for p in permissions:
        assert p.inputs["principal"] == "secretsmanager.amazonaws.com"
        assert p.inputs["function"] == fn.state["name"] and p.inputs["sourceAccount"] == "123456789012"


def statements(r: RunResult) -> dict[str, dict[str, Any]]:
    policy = named(of_type(r.resources, "aws:iam/rolePolicy:RolePolicy"), "rotation-fn")
    return {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}


@pytest.mark.parametrize("stack", STACKS)
def test_the_functions_role_is_scoped_to_the_rotated_secrets_and_the_stack_key(stack: str) -> None:
    r = result(stack)
    s = statements(r)
    assert set(s) == {"RotatedSecrets", "SecretKeyViaSecretsManager"}
    assert sorted(s["RotatedSecrets"]["Resource"]) == sorted(rotated_arns(r).values())
    assert sorted(s["RotatedSecrets"]["Action"]) == [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ]
    key = s["SecretKeyViaSecretsManager"]
    assert key["Resource"] == r.outputs["kms_key_arn"]
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}}


@pytest.mark.parametrize("stack", STACKS)
def test_the_function_is_arm64_in_the_private_subnets_and_reaches_db_pgbouncer_and_secrets_manager(
    stack: str,
) -> None:
    r = result(stack)
    fn = function(r)
    assert fn.inputs["architectures"] == ["arm64"] and fn.inputs["runtime"] == build.RUNTIME
    assert fn.inputs["timeout"] == TIMEOUT_S > TEST_TIMEOUT_S > 5 * 60 + 30  # the hosts' refresh + jitter
    assert fn.inputs["vpcConfig"]["subnetIds"] == r.outputs["subnet_ids"]
    egress = {
        e.name: e
        for e in of_type(r.resources, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if e.name.startswith("rotation-")
    }
    assert {e.inputs["fromPort"] for e in egress.values()} == {5432, 6543, 443}
    sg_id = egress["rotation-fn-to-db"].inputs["securityGroupId"]
    assert fn.inputs["vpcConfig"]["securityGroupIds"] == [sg_id]
    assert (
        egress["rotation-fn-to-db"].inputs["referencedSecurityGroupId"] == r.outputs["db_security_group_id"]
    )
    nlb_ingress = named(
        of_type(r.resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"),
        "rotation-pgbouncer-from-fn",
    )
    assert nlb_ingress.inputs["referencedSecurityGroupId"] == sg_id and nlb_ingress.inputs["fromPort"] == 6543
    # Secrets Manager is reached through the network's interface endpoint.
    endpoints = {e.inputs["serviceName"] for e in of_type(r.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert "com.amazonaws.eu-west-1.secretsmanager" in endpoints
    env = fn.inputs["environment"]["variables"]
    assert env["MASTER_SECRET_ARN"] == r.outputs["master_secret_arn"]
    assert env["MIGRATOR_SECRET_ARN"] == r.outputs["role_secret_arns"][names.MIGRATOR_ROLE]
    roles = r.outputs["role_secret_arns"]
    assert json.loads(env["ROLE_SECRETS"]) == {roles[role]: role for role in names.ALTERNATING_ROLES}
    assert (
        env["DB_HOST"] == r.outputs["primary_address"]
        and env["PGBOUNCER_HOST"] == r.outputs["pgbouncer_endpoint"]
    )
    assert env["PGBOUNCER_CA_PEM"] == r.outputs["pgbouncer_ca_certificate"]
    assert not any("password" in str(v).lower() for v in env.values())


def test_the_schedule_is_a_setting_checked_before_any_resource() -> None:
    assert settings_for("prod").rotation.schedule_days == 90
    r = run_fresh("dev", {"rotation": {"scheduleDays": 30}})
    assert {
        res.inputs["rotationRules"]["automaticallyAfterDays"] for res in of_type(r.resources, ROTATION)
    } == {30}
    for bad in (0, 1001, "quarterly"):
        with pytest.raises(SettingsError, match=r"spike-land-db:rotation.scheduleDays"):
            settings_for("dev", {"rotation": {"scheduleDays": bad}})


def test_pulumi_writes_a_rotated_secrets_first_version_only() -> None:
    """A `pulumi up` after a rotation must not put Pulumi's first value back (nor refresh recreate it)."""
    opts = credentials_component.first_version_options(pulumi.ResourceOptions())
    assert opts.ignore_changes == ["secret_string", "version_stages"]


def test_the_package_ships_the_handler_and_the_dbctl_modules_it_imports() -> None:
    assert HANDLER.is_file()
    shipped = sorted(DBCTL_CORE.glob("*.py"))
    assert {"names.py", "roles.py", "rotation.py", "scram.py"} <= {m.name for m in shipped}
    imported = {
        line.split()[1]
        for path in [HANDLER, *shipped]
        for line in path.read_text().splitlines()
        if line.lstrip().startswith(("from dbctl", "import dbctl"))
    }
    assert imported, "the handler imports dbctl.core"
    assert imported <= {"dbctl", "dbctl.core", *(f"dbctl.core.{m.stem}" for m in shipped)}, imported
    assert "scramp" in build.export_requirements()  # dbctl/core/scram.py's dependency is in the Lambda build


# ---------------------------------------------------------------- dbctl.rotation, pure


def test_the_inactive_user_alternates_and_a_single_user_role_keeps_its_user() -> None:
    assert rotation.inactive_user(names.APP_ROLE, "spike_app_a") == "spike_app_b"
    assert rotation.inactive_user(names.APP_ROLE, "spike_app_b") == "spike_app_a"
    assert rotation.inactive_user("spike_admin", "spike_admin") == "spike_admin"
    with pytest.raises(rotation.RotationError, match="names 'spike_app'"):
        rotation.inactive_user(names.APP_ROLE, "spike_app")


def test_next_secret_is_a_new_password_with_its_own_verifier() -> None:
    one, two = (
        rotation.next_secret(names.READONLY_ROLE, "spike_readonly_a"),
        rotation.next_secret(names.READONLY_ROLE, "spike_readonly_a"),
    )
    assert one.username == two.username == "spike_readonly_b"
    assert one.password != two.password and len(one.password) >= 32
    assert scram.password_matches(one.password, one.scram_verifier)
    assert not scram.password_matches(two.password, one.scram_verifier)
    assert set(rotation.POOL_DATABASE) == set(POOLED_ROLES) == set(names.ALTERNATING_ROLES)


def test_check_login_retries_until_it_works_and_then_names_the_user_without_the_password() -> None:
    attempts: list[int] = []

    class Conn:
        def __enter__(self) -> Conn:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def execute(self, _query: str) -> Conn:
            return self

        def fetchone(self) -> tuple[str]:
            return ("spike_app_b",)

    import psycopg

    def connect() -> Any:
        attempts.append(1)
        if len(attempts) < 3:
            raise psycopg.OperationalError("FATAL:  SASL authentication failed")
        return Conn()

    rotation.check_login(connect, "spike_app_b", timeout=60, sleep=lambda _s: None)
    assert len(attempts) == 3

    def never() -> Any:
        raise psycopg.OperationalError("FATAL:  SASL authentication failed")

    with pytest.raises(
        rotation.RotationError, match=r"spike_app_b cannot log in .*SASL authentication failed"
    ):
        rotation.check_login(never, "spike_app_b", timeout=0, sleep=lambda _s: None)


def test_the_functions_configuration_comes_from_its_environment() -> None:
    env = {
        "MASTER_SECRET_ARN": "arn:m",
        "ROLE_SECRETS": json.dumps({"arn:a": names.APP_ROLE}),
        "DB_HOST": "db.example",
        "PGBOUNCER_HOST": "nlb.example",
        "PGBOUNCER_CA_PEM": "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
    }
    cfg = Config.from_env(env)
    assert (
        cfg.role_secrets == {"arn:a": names.APP_ROLE} and cfg.db_port == 5432 and cfg.pgbouncer_port == 6543
    )
    assert cfg.test_timeout_s == TEST_TIMEOUT_S
    assert cfg.migrator_secret_arn == "" and not cfg.rotates("arn:x")  # the migrator's: only when named
    assert Config.from_env({**env, "MIGRATOR_SECRET_ARN": "arn:x"}).rotates("arn:x")
    assert Path(cfg.pgbouncer_ca_file).read_text() == env["PGBOUNCER_CA_PEM"]
    assert Config.from_env({**env, "PGBOUNCER_CA_PEM": ""}).pgbouncer_ca_file == ""  # clientTls off
    with pytest.raises(ValueError, match="only pooled roles rotate here"):
        Config.from_env({**env, "ROLE_SECRETS": json.dumps({"arn:x": names.MIGRATOR_ROLE})})
