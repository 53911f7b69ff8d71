"""`dbctl preflight`: each check against AWS's answers, through botocore's Stubber or moto.

moto answers iam.get_role, so the deploy-role check runs against moto's IAM. moto has no
DescribeSourceRegions, DescribeEngineDefaultParameters, TestMetricFilter or DescribeRegionSettings, and its
DescribeOrderableDBInstanceOptions knows only aurora-postgresql and neptune (moto/rds/models.py), so those
checks run against botocore's Stubber, which validates every request and response against the service's
own API model: a misspelt parameter or response field fails the test. Every stubbed call also pins its
exact parameters. No request leaves the machine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner
from moto import mock_aws

from dbctl.aws import preflight
from dbctl.cli.main import cli as dbctl_cli
from dbctl.postgres.install import find_binary
from dbctl.stackconfig.parameters import replica_parameters
from dbctl.stackconfig.settings import SettingsError, StackSettings, stack_file_settings
from dbctl.stackconfig.slow_query import SLOW_QUERY_FILTER_PATTERN
from tests.unit.harness import ROOT, settings_for

DUMMY = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # stub credentials


def stubbed(service: str, region: str | None = "eu-west-1") -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name=region or "us-east-1", **DUMMY)  # type: ignore[call-overload]
    return client, Stubber(client)


# --- the parameter group's apply types --------------------------------------------------------------------

# Parameters no core PostgreSQL describes: pg_stat_statements' (its docs: max "can only be set at server
# start", track and track_utility by superusers at any time), pg_cron's cron.database_name (read at server
# start, its README), auto_explain's (superuser settings, its docs) and RDS's own rds.force_ssl (dynamic in
# the RDS user guide).
EXTRA_CONTEXTS = {
    "cron.database_name": "postmaster",
    "auto_explain.log_min_duration": "superuser",
    "auto_explain.sample_rate": "superuser",
    "auto_explain.log_analyze": "superuser",
    "pg_stat_statements.max": "postmaster",
    "pg_stat_statements.track": "superuser",
    "pg_stat_statements.track_utility": "superuser",
    "rds.force_ssl": "sighup",
}


def real_postgres_defaults() -> list[dict[str, Any]]:
    """EngineDefaults.Parameters as RDS would list them, from a real PostgreSQL's own parameter contexts:
    RDS calls a parameter static exactly when PostgreSQL only reads it at server start (`postmaster`)."""
    out = subprocess.run(
        [str(find_binary("postgres")), "--describe-config"], capture_output=True, text=True, check=True
    ).stdout
    contexts = {line.split("\t")[0]: line.split("\t")[1] for line in out.splitlines() if "\t" in line}
    assert contexts["max_connections"] == "postmaster" and contexts["log_statement"] == "superuser"
    contexts |= EXTRA_CONTEXTS
    return [
        {
            "ParameterName": name,
            "ApplyType": "static" if context == "postmaster" else "dynamic",
            "IsModifiable": context != "internal",
        }
        for name, context in sorted(contexts.items())
    ]


def engine_defaults_client(parameters: list[dict[str, Any]], family: str = "postgres17") -> Any:
    """A stubbed RDS client answering DescribeEngineDefaultParameters in two pages (the paginator follows)."""
    rds, stub = stubbed("rds")
    half = len(parameters) // 2
    stub.add_response(
        "describe_engine_default_parameters",
        {
            "EngineDefaults": {
                "DBParameterGroupFamily": family,
                "Marker": "page-2",
                "Parameters": parameters[:half],
            }
        },
        {"DBParameterGroupFamily": family},
    )
    stub.add_response(
        "describe_engine_default_parameters",
        {"EngineDefaults": {"DBParameterGroupFamily": family, "Parameters": parameters[half:]}},
        {"DBParameterGroupFamily": family, "Marker": "page-2"},
    )
    stub.activate()
    return rds


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_our_parameters_pass_against_a_real_postgresqls_parameter_contexts(stack: str) -> None:
    settings = settings_for(stack)
    check = preflight.parameter_apply_types(settings, engine_defaults_client(real_postgres_defaults()))
    assert check.status == "ok", check.line()
    ours = replica_parameters(settings.effective_max_connections, 30_000)
    statics = {p.name for p in ours if p.apply_method == "pending-reboot"}
    assert statics == {
        "shared_preload_libraries",
        "pg_stat_statements.max",
        "track_activity_query_size",
        "max_connections",
        "cron.database_name",
    }
    assert check.detail == f"{len(ours)} parameters known to postgres17, 5 static ones sent pending-reboot"


def test_a_static_parameter_sent_immediate_an_unknown_and_a_fixed_one_fail() -> None:
    defaults = real_postgres_defaults()
    by_name = {p["ParameterName"]: p for p in defaults}
    by_name["log_statement"]["ApplyType"] = "static"  # as if RDS made it static: we send it immediate
    by_name["log_lock_waits"]["IsModifiable"] = False
    del by_name["track_io_timing"]
    check = preflight.parameter_apply_types(
        settings_for("prod"), engine_defaults_client(list(by_name.values()))
    )
    assert check.status == "fail"
    assert check.detail == (
        "track_io_timing is not a postgres17 parameter; "  # in the order of dbctl/stackconfig/parameters.py
        "log_statement is static but sent with apply_method immediate; "
        "log_lock_waits is not modifiable in postgres17"
    )
    assert "pending-reboot" in check.fix and "dbctl/stackconfig/parameters.py" in check.fix


def test_the_family_follows_the_engine_version() -> None:
    settings = settings_for("dev", {"engineVersion": "16"})
    check = preflight.parameter_apply_types(
        settings, engine_defaults_client(real_postgres_defaults(), "postgres16")
    )
    assert check.status == "ok" and "postgres16" in check.detail


# --- DR region --------------------------------------------------------------------------------------------


def source_regions_client(regions: list[dict[str, Any]]) -> tuple[Any, Stubber]:
    rds, stub = stubbed("rds", "eu-central-1")
    stub.add_response("describe_source_regions", {"SourceRegions": regions}, {"RegionName": "eu-west-1"})
    stub.activate()
    return rds, stub


@pytest.mark.parametrize(
    ("regions", "status", "detail"),
    [
        (
            [
                {
                    "RegionName": "eu-west-1",
                    "Status": "available",
                    "SupportsDBInstanceAutomatedBackupsReplication": True,
                }
            ],
            "ok",
            "eu-central-1 replicates automated backups from eu-west-1",
        ),
        (
            [
                {
                    "RegionName": "eu-west-1",
                    "Status": "available",
                    "SupportsDBInstanceAutomatedBackupsReplication": False,
                }
            ],
            "fail",
            "eu-central-1 cannot replicate automated backups from eu-west-1",
        ),
        ([], "fail", "eu-central-1 lists eu-west-1 as no source region of its own"),
    ],
)
def test_the_dr_region_must_replicate_automated_backups_from_the_primary(
    regions: list[dict[str, Any]], status: str, detail: str
) -> None:
    rds, stub = source_regions_client(regions)
    check = preflight.dr_backup_replication(settings_for("prod"), rds)
    assert (check.status, check.detail) == (status, detail)
    if status == "fail":
        assert "describe-source-regions --region <dr> --region-name eu-west-1" in check.fix
    stub.assert_no_pending_responses()


def test_without_a_dr_copy_the_dr_check_does_not_apply() -> None:
    check = preflight.dr_backup_replication(settings_for("dev"), None)
    assert check.status == "skip" and "crossRegionCopy is off" in check.detail


# --- the slow-query metric filter -------------------------------------------------------------------------


def metric_filter_client(matched: list[str]) -> tuple[Any, Stubber]:
    logs, stub = stubbed("logs")
    stub.add_response(
        "test_metric_filter",
        {"matches": [{"eventNumber": 1, "eventMessage": m, "extractedValues": {}} for m in matched]},
        {
            "filterPattern": SLOW_QUERY_FILTER_PATTERN,
            "logEventMessages": [preflight.SLOW_SAMPLE, preflight.FAST_SAMPLE],
        },
    )
    stub.activate()
    return logs, stub


def test_the_sample_lines_are_rds_lines_our_evaluator_splits_into_slow_and_fast() -> None:
    assert preflight.SLOW_SAMPLE.split("LOG:", 1)[0].count(":[") == 1  # %t:%r:%u@%d:[%p]:
    assert "duration: 1202.851 ms" in preflight.SLOW_SAMPLE


@pytest.mark.parametrize(
    ("matched", "status"),
    [
        ([preflight.SLOW_SAMPLE], "ok"),
        ([], "fail"),  # CloudWatch reads the pattern differently: nothing counted
        ([preflight.SLOW_SAMPLE, preflight.FAST_SAMPLE], "fail"),  # every statement counted
    ],
)
def test_cloudwatch_must_count_exactly_the_slow_line(matched: list[str], status: str) -> None:
    logs, stub = metric_filter_client(matched)
    check = preflight.slow_query_filter(logs)
    assert check.status == status, check.line()
    if status == "fail":
        assert "dbctl/stackconfig/slow_query.py" in check.fix
    stub.assert_no_pending_responses()


def test_a_pattern_cloudwatch_rejects_fails_with_its_message() -> None:
    logs, stub = stubbed("logs")
    stub.add_client_error(
        "test_metric_filter", "InvalidParameterException", "Invalid metric filter pattern", 400
    )
    stub.activate()
    settings = settings_for("dev")
    checks = preflight.run_checks(settings, only({("logs", "eu-west-1"): logs}), workflow=WORKFLOW)
    [check] = [c for c in checks if c.name == "slow-query-filter"]
    assert check.status == "fail"
    assert check.detail == "AWS answered InvalidParameterException: Invalid metric filter pattern"
    assert check.fix == "run with credentials allowed logs:TestMetricFilter (read-only)"


# --- AWS Backup opt-in ------------------------------------------------------------------------------------


def region_settings_client(region: str, rds: bool | None) -> Any:
    backup, stub = stubbed("backup", region)
    prefs = {"Aurora": True, "DynamoDB": True, **({} if rds is None else {"RDS": rds})}
    stub.add_response("describe_region_settings", {"ResourceTypeOptInPreference": prefs}, {})
    stub.activate()
    return backup


@pytest.mark.parametrize(("rds", "status"), [(True, "ok"), (False, "fail"), (None, "fail")])
def test_aws_backup_must_be_opted_in_for_rds(rds: bool | None, status: str) -> None:
    check = preflight.backup_opt_in("eu-central-1", region_settings_client("eu-central-1", rds))
    assert (check.name, check.status) == ("backup-opt-in (eu-central-1)", status)
    if status == "fail":
        assert check.fix == (
            "aws backup update-region-settings --region eu-central-1 "
            "--resource-type-opt-in-preference RDS=true"
        )


# --- the instance class -----------------------------------------------------------------------------------


def option(cls: str, version: str, **overrides: Any) -> dict[str, Any]:
    return {
        "Engine": "postgres",
        "EngineVersion": version,
        "DBInstanceClass": cls,
        "StorageType": "gp3",
        "MultiAZCapable": True,
        "ReadReplicaCapable": True,
        "Vpc": True,
        **overrides,
    }


def orderable_client(*pages: list[dict[str, Any]], cls: str = "db.m7g.large") -> tuple[Any, Stubber]:
    rds, stub = stubbed("rds")
    params = {"Engine": "postgres", "DBInstanceClass": cls, "Vpc": True}
    for i, page in enumerate(pages):
        last = i == len(pages) - 1
        response = {"OrderableDBInstanceOptions": page, **({} if last else {"Marker": f"m{i + 1}"})}
        stub.add_response(
            "describe_orderable_db_instance_options",
            response,
            {**params, **({"Marker": f"m{i}"} if i else {})},
        )
    stub.activate()
    return rds, stub


def test_a_class_offered_for_the_major_on_gp3_with_multi_az_and_replicas_passes() -> None:
    cls = "db.m7g.large"
    rds, stub = orderable_client(
        [option(cls, "16.4"), option(cls, "17.2")],
        [option(cls, "17.6"), option(cls, "17.2", StorageType="io2")],
    )
    [check] = preflight.instance_class(settings_for("prod"), rds)
    assert check.status == "ok", check.line()
    assert check.detail == "offered on gp3 for PostgreSQL 17.2 to 17.6 in eu-west-1"
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("options", "detail"),
    [
        ([option("db.m7g.large", "16.4")], "not offered for PostgreSQL 17 in eu-west-1"),
        ([option("db.m7g.large", "17.2", StorageType="gp2")], "offered for PostgreSQL 17, not on gp3"),
        (
            [option("db.m7g.large", "17.2", MultiAZCapable=False)],
            "offered for PostgreSQL 17 on gp3, without Multi-AZ",
        ),
        (
            [option("db.m7g.large", "17.2", MultiAZCapable=False, ReadReplicaCapable=False)],
            "offered for PostgreSQL 17 on gp3, without Multi-AZ or read replicas",
        ),
    ],
)
def test_a_class_not_offered_as_the_stack_uses_it_fails(options: list[dict[str, Any]], detail: str) -> None:
    rds, _ = orderable_client(options)
    [check] = preflight.instance_class(settings_for("prod"), rds)
    assert (check.status, check.detail) == ("fail", detail)
    assert "describe-orderable-db-instance-options --region eu-west-1 --engine postgres" in check.fix


def test_a_different_replica_class_is_checked_too() -> None:
    settings = settings_for("prod", {"replicaInstanceClass": "db.r7g.large"})
    rds, stub = stubbed("rds")
    for cls, opt in (
        ("db.m7g.large", option("db.m7g.large", "17.2")),
        ("db.r7g.large", option("db.r7g.large", "16.1")),
    ):
        stub.add_response(
            "describe_orderable_db_instance_options",
            {"OrderableDBInstanceOptions": [opt]},
            {"Engine": "postgres", "DBInstanceClass": cls, "Vpc": True},
        )
    stub.activate()
    checks = preflight.instance_class(settings, rds)
    assert [(c.name, c.status) for c in checks] == [
        ("instance-class (db.m7g.large)", "ok"),
        ("instance-class (db.r7g.large)", "fail"),
    ]


# --- the deploy role (moto's IAM) -------------------------------------------------------------------------

WORKFLOW = ROOT / ".github" / "workflows" / "deploy-stack.yml"


@pytest.fixture
def iam() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("iam", region_name="us-east-1", **DUMMY)  # type: ignore[call-overload]


def make_role(iam: Any, name: str, max_session: int) -> str:
    trust = {"Version": "2012-10-17", "Statement": []}
    role = iam.create_role(
        RoleName=name,
        Path="/deploy/",
        AssumeRolePolicyDocument=json.dumps(trust),
        MaxSessionDuration=max_session,
    )
    return str(role["Role"]["Arn"])


def test_the_workflow_asks_for_two_hours() -> None:
    assert preflight.workflow_role_duration(WORKFLOW) == 7200


@pytest.mark.parametrize(("max_session", "status"), [(7200, "ok"), (43200, "ok"), (3600, "fail")])
def test_the_deploy_roles_max_session_must_cover_the_workflows(
    iam: Any, max_session: int, status: str
) -> None:
    arn = make_role(iam, "spike-land-db-deploy-prod", max_session)
    assert arn.endswith(":role/deploy/spike-land-db-deploy-prod")
    check = preflight.deploy_role_session(arn, 7200, iam)
    assert check.status == status, check.line()
    if status == "fail":
        assert (
            check.detail
            == "spike-land-db-deploy-prod allows 3600 s sessions, the deploy workflow asks for 7200 s"
        )
        assert check.fix == (
            "aws iam update-role --role-name spike-land-db-deploy-prod --max-session-duration 7200"
        )


def test_a_missing_role_fails_with_the_iam_error(iam: Any) -> None:
    checks = preflight.run_checks(
        settings_for("dev"), only({("iam", None): iam}), "arn:aws:iam::123456789012:role/nope", WORKFLOW
    )
    [check] = [c for c in checks if c.name == "deploy-role-session"]
    assert check.status == "fail" and check.detail.startswith("AWS answered NoSuchEntity")
    assert check.fix == "run with credentials allowed iam:GetRole (read-only)"


def test_an_unreadable_workflow_stops_preflight_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "deploy-stack.yml").write_text("jobs: {deploy: {steps: [{run: echo}]}}\n")
    with pytest.raises(
        preflight.PreflightError, match=r"cannot read role-duration-seconds from .*deploy-stack"
    ):
        preflight.workflow_role_duration(tmp_path / "deploy-stack.yml")


# --- the whole run and the command ------------------------------------------------------------------------


def only(clients: dict[tuple[str, str | None], Any]) -> preflight.ClientFactory:
    """A factory for the given clients; any other client is a stubbed one that answers nothing."""

    def make(service: str, region: str | None) -> Any:
        if (service, region) not in clients:
            client, stub = stubbed(service, region)
            stub.activate()  # a call on it raises: no response queued
            clients[service, region] = client
        return clients[service, region]

    return make


def healthy_account(iam: Any, settings: StackSettings) -> dict[tuple[str, str | None], Any]:
    """Stubbed answers under which every check of `settings` passes (prod: DR region and replica too)."""
    rds, stub = stubbed("rds")
    family = settings.parameter_group_family
    stub.add_response(
        "describe_engine_default_parameters",
        {"EngineDefaults": {"DBParameterGroupFamily": family, "Parameters": real_postgres_defaults()}},
        {"DBParameterGroupFamily": family},
    )
    stub.add_response(
        "describe_orderable_db_instance_options",
        {"OrderableDBInstanceOptions": [option(settings.instance_class, "17.6")]},
        {"Engine": "postgres", "DBInstanceClass": settings.instance_class, "Vpc": True},
    )
    stub.activate()
    logs, _ = metric_filter_client([preflight.SLOW_SAMPLE])
    clients = {("rds", "eu-west-1"): rds, ("logs", "eu-west-1"): logs, ("iam", None): iam}
    clients["backup", "eu-west-1"] = region_settings_client("eu-west-1", True)
    if settings.backups.cross_region_copy:
        clients["rds", "eu-central-1"] = source_regions_client(
            [{"RegionName": "eu-west-1", "SupportsDBInstanceAutomatedBackupsReplication": True}]
        )[0]
        clients["backup", "eu-central-1"] = region_settings_client("eu-central-1", True)
    return clients


def test_stack_file_settings_are_the_programs_settings(tmp_path: Path) -> None:
    for stack in ("dev", "prod"):
        assert stack_file_settings(stack, ROOT) == settings_for(stack)
    assert stack_file_settings("acme/prod", ROOT, region="us-east-1").region == "us-east-1"
    text = (ROOT / "Pulumi.dev.yaml").read_text()
    (tmp_path / "Pulumi.dev.yaml").write_text(text.replace("multiAz: false", "multiAz: 'yes'"))
    with pytest.raises(SettingsError, match=r"spike-land-db:multiAz = 'yes' is invalid"):
        stack_file_settings("dev", tmp_path)
    # what `pulumi config set multiAz true` writes (a string) is what `pulumi up` reads: a boolean
    (tmp_path / "Pulumi.dev.yaml").write_text(text.replace("multiAz: false", 'multiAz: "true"'))
    assert stack_file_settings("dev", tmp_path).multi_az is True


def test_the_command_prints_one_line_per_check_and_exits_0_when_all_pass(
    iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = make_role(iam, "deploy-prod", 7200)
    clients = healthy_account(iam, settings_for("prod"))
    monkeypatch.setattr(preflight, "boto3_factory", lambda profile: only(clients))
    result = CliRunner().invoke(dbctl_cli, ["preflight", "--stack", "prod", "--deploy-role", arn])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "ok   dr-backup-replication",
        "ok   parameter-apply-types",
        "ok   slow-query-filter",
        "ok   backup-opt-in (eu-west-1)",
        "ok   backup-opt-in (eu-central-1)",
        "ok   instance-class (db.m7g.large)",
        "ok   deploy-role-session",
    ]
    assert lines[-1] == "7 of 7 checks passed or do not apply"


def test_a_failed_check_exits_1_with_its_fix_and_the_others_still_run(
    iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_role(iam, "deploy-dev", 3600)
    clients = healthy_account(iam, settings_for("dev"))
    clients["backup", "eu-west-1"] = region_settings_client("eu-west-1", False)
    monkeypatch.setattr(preflight, "boto3_factory", lambda profile: only(clients))
    monkeypatch.setenv("AWS_DEPLOY_ROLE_ARN", "deploy-dev")
    result = CliRunner().invoke(dbctl_cli, ["preflight", "--stack", "dev"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("skip dr-backup-replication: backups.crossRegionCopy is off")
    assert lines[3] == (
        "FAIL backup-opt-in (eu-west-1): AWS Backup's RDS opt-in is off: the backup plan would select "
        "nothing; fix: aws backup update-region-settings --region eu-west-1 "
        "--resource-type-opt-in-preference RDS=true"
    )
    assert lines[5].startswith("FAIL deploy-role-session: deploy-dev allows 3600 s sessions")
    assert lines[-1] == "4 of 6 checks passed or do not apply; 2 failed"


def test_json_output_and_a_bad_stack_file_is_one_line_before_any_call(
    iam: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = healthy_account(iam, settings_for("dev"))
    monkeypatch.setattr(preflight, "boto3_factory", lambda profile: only(clients))
    result = CliRunner().invoke(dbctl_cli, ["preflight", "--stack", "dev", "--json"])
    payload = json.loads(result.output)
    assert payload["ok"] is True and payload["stack"] == "dev"
    assert [c["status"] for c in payload["checks"]] == ["skip", "ok", "ok", "ok", "ok", "skip"]

    def no_clients(profile: str | None) -> preflight.ClientFactory:
        raise AssertionError("no AWS client may be made for a stack file that does not validate")

    monkeypatch.setattr(preflight, "boto3_factory", no_clients)
    for args in (["--stack", "staging"], ["--stack", "dev", "--region", "Ireland"]):
        result = CliRunner().invoke(dbctl_cli, ["preflight", *args])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "Pulumi.staging.yaml" in CliRunner().invoke(dbctl_cli, ["preflight", "--stack", "staging"]).output
    assert "aws:region = 'Ireland' is invalid" in result.output


def test_the_real_factory_makes_one_client_per_service_and_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    make = preflight.boto3_factory()
    rds = make("rds", "eu-central-1")
    assert make("rds", "eu-central-1") is rds and rds.meta.region_name == "eu-central-1"
    assert (
        make("rds", "eu-west-1") is not rds
        and make("logs", "eu-west-1").meta.service_model.service_name == "logs"
    )
