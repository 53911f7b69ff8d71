"""The RestoreValidation component under Pulumi mocks, for the real dev and prod stack files, and the
package build's offline parts (lambdas.build)."""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from components.restore_validation import completed_restore_pattern
from dbctl.core import names
from dbctl.stackconfig.settings import SettingsError
from lambdas import build
from tests.unit.harness import Resource, RunResult, named, of_type, one, run, run_fresh, settings_for

STACKS = ["dev", "prod"]
FUNCTION = "aws:lambda/function:Function"


@cache
def result(stack: str) -> RunResult:
    return run(stack)


def function(r: RunResult) -> Resource:
    return named(of_type(r.resources, FUNCTION), "restore-validation-fn")


def plan(r: RunResult) -> Resource:
    return one(r.resources, "aws:backup/restoreTestingPlan:RestoreTestingPlan")


@pytest.mark.parametrize("stack", STACKS)
def test_a_completed_restore_of_this_stacks_plan_runs_the_function(stack: str) -> None:
    r = result(stack)
    rule = named(of_type(r.resources, "aws:cloudwatch/eventRule:EventRule"), "restore-validation-completed")
    plan_arn = plan(r).state["arn"]
    assert json.loads(rule.inputs["eventPattern"]) == {
        "source": ["aws.backup"],
        "detail-type": ["Restore Job State Change"],
        "detail": {"status": ["COMPLETED"], "restoreTestingPlanArn": [plan_arn]},
    }
    target = named(
        of_type(r.resources, "aws:cloudwatch/eventTarget:EventTarget"), "restore-validation-completed"
    )
    fn = function(r)
    assert target.inputs["arn"] == fn.state["arn"]
    permission = named(
        of_type(r.resources, "aws:lambda/permission:Permission"), "restore-validation-from-events"
    )
    assert permission.inputs["principal"] == "events.amazonaws.com"
    assert permission.inputs["sourceArn"] == rule.state["arn"]


@pytest.mark.parametrize("stack", STACKS)
def test_the_function_is_arm64_in_the_private_subnets_with_its_configuration(stack: str) -> None:
    r = result(stack)
    fn = function(r)
    assert fn.inputs["architectures"] == ["arm64"]
    assert fn.inputs["runtime"] == build.RUNTIME and fn.inputs["handler"] == "handler.handler"
    assert fn.inputs["vpcConfig"]["subnetIds"] == r.outputs["subnet_ids"]
    sg = named(of_type(r.resources, "aws:ec2/securityGroup:SecurityGroup"), "restore-validation-fn")
    to_db = named(
        of_type(r.resources, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"),
        "restore-validation-fn-to-db",
    )
    assert fn.inputs["vpcConfig"]["securityGroupIds"] == [to_db.inputs["securityGroupId"]]
    assert sg.inputs["vpcId"] == r.outputs["vpc_id"]
    env = fn.inputs["environment"]["variables"]
    assert env["RESTORE_TESTING_PLAN_ARN"] == plan(r).state["arn"]
    assert env["CREDENTIALS_SECRET_ARN"] == r.outputs["role_secret_arns"][names.MIGRATOR_ROLE]
    assert env["SOURCE_HOST"] == r.outputs["primary_address"]
    assert env["SOURCE_PORT"] == str(r.outputs["primary_port"])
    assert env["DATABASE_NAME"] == r.outputs["database_name"]
    assert float(env["MIN_ROW_FRACTION"]) == 0.5
    # No secret in the function's configuration: an ARN, never a password.
    assert not any("password" in str(v).lower() for v in env.values())


@pytest.mark.parametrize("stack", STACKS)
def test_the_database_admits_the_function_and_nothing_else_new(stack: str) -> None:
    r = result(stack)
    ingress = of_type(r.resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    rule = named(ingress, "restore-validation-db-from-fn")
    assert rule.inputs["securityGroupId"] == r.outputs["db_security_group_id"]
    assert (rule.inputs["fromPort"], rule.inputs["toPort"]) == (5432, 5432)
    assert "cidrIpv4" not in rule.inputs and rule.inputs["referencedSecurityGroupId"]
    egress = of_type(r.resources, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    to_db = named(egress, "restore-validation-fn-to-db")
    assert to_db.inputs["referencedSecurityGroupId"] == r.outputs["db_security_group_id"]


@pytest.mark.parametrize("stack", STACKS)
def test_backup_and_rds_api_endpoints_exist_beside_the_networks_own(stack: str) -> None:
    r = result(stack)
    services = {
        e.inputs["serviceName"].rsplit(".", 1)[1]
        for e in of_type(r.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    assert {"backup", "rds", "secretsmanager", "logs"} <= services


def policy_statements(r: RunResult) -> dict[str, dict[str, Any]]:
    policy = named(of_type(r.resources, "aws:iam/rolePolicy:RolePolicy"), "restore-validation-fn")
    doc = json.loads(policy.inputs["policy"])
    return {s["Sid"]: s for s in doc["Statement"]}


@pytest.mark.parametrize("stack", STACKS)
def test_the_role_reads_only_the_migrators_secret_and_reports_only_restore_jobs(stack: str) -> None:
    r = result(stack)
    statements = policy_statements(r)
    assert set(statements) == {
        "RestoreJobs",
        "RestoredInstance",
        "MigratorSecret",
        "SecretKeyViaSecretsManager",
        "DeadLetters",
        "DeadLetterKeyViaSqs",
    }
    secret = statements["MigratorSecret"]
    assert secret["Action"] == ["secretsmanager:GetSecretValue"]
    assert secret["Resource"] == r.outputs["role_secret_arns"][names.MIGRATOR_ROLE]
    key = statements["SecretKeyViaSecretsManager"]
    assert key["Resource"] == r.outputs["kms_key_arn"]
    assert key["Condition"]["StringEquals"]["kms:ViaService"].startswith("secretsmanager.")
    # AWS Backup has no restore-job resource type: a restore-job ARN would match nothing (AccessDenied).
    jobs = statements["RestoreJobs"]
    assert jobs["Action"] == ["backup:DescribeRestoreJob", "backup:PutRestoreValidationResult"]
    assert jobs["Resource"] == "*"
    assert jobs["Condition"] == {"StringEquals": {"aws:RequestedRegion": settings_for(stack).region}}
    assert statements["RestoredInstance"]["Action"] == ["rds:DescribeDBInstances"]
    for s in statements.values():
        assert "*" not in s["Action"]
        assert s["Resource"] != "*" or s["Sid"] == "RestoreJobs"


@pytest.mark.parametrize("stack", STACKS)
def test_a_failed_validation_and_a_crash_reach_the_alarm_topic(stack: str) -> None:
    r = result(stack)
    metric_filter = named(
        of_type(r.resources, "aws:cloudwatch/logMetricFilter:LogMetricFilter"), "restore-validation-failed"
    )
    log_group = named(of_type(r.resources, "aws:cloudwatch/logGroup:LogGroup"), "restore-validation-fn")
    assert (
        metric_filter.inputs["logGroupName"]
        == log_group.inputs["name"]
        == f"/aws/lambda/{function(r).inputs['name']}"
    )
    assert metric_filter.inputs["pattern"] == '{ $.validationStatus = "FAILED" }'
    # Encrypted with the stack key, whose policy lets CloudWatch Logs use it for this group (ArnLike).
    key = named(of_type(r.resources, "aws:kms/key:Key"), "credentials-key")
    assert log_group.inputs["kmsKeyId"] == key.state["arn"]
    statement = next(st for st in json.loads(key.inputs["policy"])["Statement"] if "Logs" in st["Sid"])
    allowed = statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert any(fnmatch.fnmatchcase(log_group.state["arn"], pattern) for pattern in allowed)
    transform = metric_filter.inputs["metricTransformation"]
    assert transform["namespace"] == f"SpikeLandDb/{stack}"  # per stack: dev's failures never fire prod's
    alarms = of_type(r.resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
    failed = named(alarms, "restore-validation-failed")
    assert (failed.inputs["namespace"], failed.inputs["metricName"]) == (
        transform["namespace"],
        transform["name"],
    )
    errors = named(alarms, "restore-validation-errors")
    assert errors.inputs["dimensions"] == {"FunctionName": function(r).state["name"]}
    for alarm in (failed, errors):
        assert alarm.inputs["alarmActions"] == [r.outputs["alarm_topic_arn"]]
        assert alarm.inputs["threshold"] == 1 and alarm.inputs["treatMissingData"] == "notBreaching"


def test_the_handlers_result_line_matches_the_metric_filter() -> None:
    """The filter reads `validationStatus` from the JSON line the handler prints."""
    source = Path(build.HANDLER).read_text()
    assert '"validationStatus": status' in source


def test_the_pattern_names_the_plan() -> None:
    assert completed_restore_pattern("arn:x")["detail"] == {
        "status": ["COMPLETED"],
        "restoreTestingPlanArn": ["arn:x"],
    }


def test_a_missing_build_is_one_line_naming_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(build.BUILD_DIR_ENV, str(tmp_path / "none"))
    with pytest.raises(build.BuildError) as caught:
        run_fresh("dev")
    error = caught.value
    assert "python -m lambdas.build" in str(error) and "\n" not in str(error)


def test_a_stale_build_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "deps").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps({"requirements_sha256": "0" * 64}))
    monkeypatch.setenv(build.BUILD_DIR_ENV, str(tmp_path))
    with pytest.raises(build.BuildError, match="stale"):
        build.current_build()


def test_the_build_installs_locked_arm64_wheels_with_hashes() -> None:
    requirements = build.export_requirements()
    pins = {
        line.split("==")[0]: line.split("==")[1].split()[0]
        for line in requirements.splitlines()
        if "==" in line
    }
    assert "psycopg" in pins and "psycopg-binary" in pins
    lock = (build.REPO_ROOT / "uv.lock").read_text()
    for name, version in pins.items():
        assert f'name = "{name}"\nversion = "{version}"' in lock
    assert requirements.count("--hash=sha256:") >= len(pins)
    command = build.install_command(Path("req.txt"), Path("deps"))
    for flag, value in (
        ("--python-platform", "aarch64-manylinux_2_28"),
        ("--python-version", "3.13"),
        ("--only-binary", ":all:"),
    ):
        assert command[command.index(flag) + 1] == value
    assert "--require-hashes" in command and "--no-deps" in command


@pytest.mark.parametrize("value", [0, 1.5, -0.1])
def test_a_min_fraction_outside_0_to_1_is_refused_before_any_resource(value: float) -> None:
    with pytest.raises(SettingsError) as err:
        settings_for("dev", {"backups.restoreValidationMinFraction": value})
    assert "restoreValidationMinFraction" in str(err.value) and "\n" not in str(err.value)


def test_the_min_fraction_setting_reaches_the_function() -> None:
    r = run("dev", {"backups.restoreValidationMinFraction": 0.8})
    assert function(r).inputs["environment"]["variables"]["MIN_ROW_FRACTION"] == "0.8"


@pytest.mark.parametrize("stack", STACKS)
def test_an_event_still_failing_after_lambdas_retries_lands_in_an_encrypted_queue_that_alarms(
    stack: str,
) -> None:
    """EventBridge invokes the function asynchronously: after Lambda's two retries a failing event would be
    dropped. The on-failure destination keeps it (the function's role sends it, through the stack key)."""
    r = result(stack)
    queue = one(r.resources, "aws:sqs/queue:Queue")
    assert queue.inputs["name"] == f"spike-land-{stack}-restore-validation-dlq"
    assert queue.inputs["kmsMasterKeyId"] == r.outputs["kms_key_arn"]
    assert queue.inputs["messageRetentionSeconds"] == 14 * 24 * 3600
    invoke = one(r.resources, "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
    assert invoke.inputs["functionName"] == function(r).state["name"]
    assert invoke.inputs["maximumRetryAttempts"] == 2
    assert invoke.inputs["destinationConfig"] == {"onFailure": {"destination": queue.state["arn"]}}
    role_policy = named(of_type(r.resources, "aws:iam/rolePolicy:RolePolicy"), "restore-validation-fn")
    assert role_policy.urn in invoke.dependencies  # Lambda checks the role may send to the destination
    statements = policy_statements(r)
    assert statements["DeadLetters"]["Action"] == ["sqs:SendMessage"]
    assert statements["DeadLetters"]["Resource"] == queue.state["arn"]
    key = statements["DeadLetterKeyViaSqs"]
    assert key["Resource"] == r.outputs["kms_key_arn"]
    assert key["Condition"] == {"StringEquals": {"kms:ViaService": "sqs.eu-west-1.amazonaws.com"}}
    assert sorted(key["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    alarm = named(
        of_type(r.resources, "aws:cloudwatch/metricAlarm:MetricAlarm"), "restore-validation-dead-letters"
    )
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert alarm.inputs["dimensions"] == {"QueueName": queue.inputs["name"]}
    assert alarm.inputs["statistic"] == "Maximum" and alarm.inputs["threshold"] == 1
    assert alarm.inputs["alarmActions"] == [r.outputs["alarm_topic_arn"]]
