"""The real program under mocks, once per real stack file: what the issue promises, per stack."""

from __future__ import annotations

import base64
import gzip
import json
import re
from functools import cache
from typing import Any

import pytest
import scramp

from components.credentials import INITIAL_STAGE
from components.database import replica_zones
from dbctl.core import names
from dbctl.core.scram import is_scram_verifier
from dbctl.pgbouncer import capacity
from dbctl.stackconfig.settings import SettingsError
from tests.unit.harness import Resource, RunResult, named, of_type, one, run, settings_for

STACKS = ("dev", "prod")
INSTANCE = "aws:rds/instance:Instance"
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
WORLD = {"0.0.0.0/0", "::/0"}


@cache
def result(stack: str) -> RunResult:
    """One mocked run per real stack file, shared by the read-only tests below."""
    return run(stack)


def primary(r: RunResult) -> Resource:
    return named(of_type(r.resources, INSTANCE), "database-primary")


def replicas(r: RunResult) -> list[Resource]:
    return [x for x in of_type(r.resources, INSTANCE) if x.inputs.get("replicateSourceDb")]


def params(group: Resource) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["value"], p.get("applyMethod", "immediate")) for p in group.inputs["parameters"]}


@pytest.mark.parametrize("stack", STACKS)
def test_primary_is_encrypted_private_and_hardened(stack: str) -> None:
    r = result(stack)
    db = primary(r).inputs
    key_arn = r.outputs["kms_key_arn"]
    assert db["storageEncrypted"] is True and db["kmsKeyId"] == key_arn
    assert db["storageType"] == "gp3"
    assert db["publiclyAccessible"] is False
    assert db["engine"] == "postgres" and db["engineVersion"] == "17"
    assert db["caCertIdentifier"] == "rds-ca-rsa2048-g1"
    assert db["iamDatabaseAuthenticationEnabled"] is True
    assert db["autoMinorVersionUpgrade"] is True
    assert db["copyTagsToSnapshot"] is True
    assert db["performanceInsightsEnabled"] is True and db["performanceInsightsKmsKeyId"] == key_arn
    assert db["monitoringInterval"] == 60 and db["monitoringRoleArn"].endswith(":role/" + _role_name(r))
    assert db["enabledCloudwatchLogsExports"] == ["postgresql", "upgrade"]
    assert db["dbName"] == names.DATABASE_NAME
    assert db["dbSubnetGroupName"] == one(r.resources, "aws:rds/subnetGroup:SubnetGroup").state["name"]
    assert db["vpcSecurityGroupIds"] == [r.outputs["db_security_group_id"]]
    assert db["skipFinalSnapshot"] is False
    assert db["finalSnapshotIdentifier"].startswith(r.outputs["primary_instance_id"] + "-final-")
    assert "password" in primary(r).secret_inputs


def _role_name(r: RunResult) -> str:
    return str(named(of_type(r.resources, "aws:iam/role:Role"), "database-monitoring").state["name"])


def test_prod_is_multi_az_protected_with_30_day_backups_and_one_replica() -> None:
    r = result("prod")
    db = primary(r).inputs
    assert db["multiAz"] is True
    assert db["deletionProtection"] is True
    assert db["backupRetentionPeriod"] == 30
    assert db["applyImmediately"] is False
    assert primary(r).protect is True  # Pulumi `protect`: `pulumi destroy` refuses
    (replica,) = replicas(r)
    assert replica.inputs["replicateSourceDb"] == r.outputs["primary_instance_id"]
    assert r.outputs["replica_endpoints"] == [replica.state["endpoint"]]


def test_dev_is_single_az_unprotected_with_7_day_backups_and_no_replica() -> None:
    r = result("dev")
    db = primary(r).inputs
    assert db["multiAz"] is False
    assert db["deletionProtection"] is False
    assert db["backupRetentionPeriod"] == 7
    assert primary(r).protect is False
    assert replicas(r) == []
    assert len(of_type(r.resources, PARAMETER_GROUP)) == 1
    assert r.outputs["replica_endpoints"] == [] and r.outputs["replica_addresses"] == []


def test_replica_count_zero_in_prod_leaves_no_replica_resources() -> None:
    r = run("prod", {"replicaCount": 0})
    assert replicas(r) == []
    assert [g.name for g in of_type(r.resources, PARAMETER_GROUP)] == ["database-primary"]
    assert not [x for x in r.resources if "replica" in x.name]
    assert r.outputs["replica_endpoints"] == []


@pytest.mark.usefixtures("pinned_pgbouncer_1_25")
def test_two_replicas_each_sourced_from_the_primary() -> None:
    r = run("prod", {"replicaCount": 2, "pgbouncer.version": "1.25"})
    sources = {x.inputs["replicateSourceDb"] for x in replicas(r)}
    assert len(replicas(r)) == 2 and sources == {r.outputs["primary_instance_id"]}
    assert len(set(r.outputs["replica_addresses"])) == 2


def test_replica_has_no_credentials_and_its_own_monitoring() -> None:
    r = result("prod")
    (replica,) = replicas(r)
    x = replica.inputs
    for absent in ("username", "password", "dbName", "engineVersion", "allocatedStorage"):
        assert absent not in x, absent
    assert (
        x["performanceInsightsEnabled"] is True
        and x["performanceInsightsKmsKeyId"] == r.outputs["kms_key_arn"]
    )
    assert x["monitoringInterval"] == 60 and x["monitoringRoleArn"]
    assert x["vpcSecurityGroupIds"] == [r.outputs["db_security_group_id"]]
    assert x["publiclyAccessible"] is False
    assert x["parameterGroupName"] == _group(r, "database-replica").state["name"]


@pytest.mark.usefixtures("pinned_pgbouncer_1_25")
def test_same_region_replica_names_no_key_and_no_encryption_flag() -> None:
    # CreateDBInstanceReadReplica: a same-region replica always uses the source's key; a KmsKeyId is
    # refused (InvalidParameterCombination). Its encryption comes from the (encrypted) primary.
    r = run("prod", {"replicaCount": 2, "pgbouncer.version": "1.25"})
    assert len(replicas(r)) == 2
    for replica in replicas(r):
        assert "kmsKeyId" not in replica.inputs and "storageEncrypted" not in replica.inputs
    assert primary(r).inputs["storageEncrypted"] is True


@pytest.mark.parametrize("stack", STACKS)
def test_database_insights_mode_is_explicit_on_every_instance(stack: str) -> None:
    r = result(stack)
    for db in of_type(r.resources, INSTANCE):
        assert db.inputs["databaseInsightsMode"] == "standard", db.name
        assert db.inputs["performanceInsightsRetentionPeriod"] == 7, db.name


def test_advanced_database_insights_carries_its_15_month_retention() -> None:
    r = run("prod", {"databaseInsightsMode": "advanced", "performanceInsightsRetentionDays": 465})
    for db in of_type(r.resources, INSTANCE):
        assert db.inputs["databaseInsightsMode"] == "advanced"
        assert db.inputs["performanceInsightsRetentionPeriod"] == 465


@pytest.mark.parametrize("stack", STACKS)
def test_parameter_group_has_the_required_settings(stack: str) -> None:
    r = result(stack)
    group = _group(r, "database-primary")
    assert group.inputs["family"] == "postgres17"
    p = params(group)
    assert p["rds.force_ssl"][0] == "1"
    assert p["password_encryption"][0] == "scram-sha-256"
    assert "pg_stat_statements" in p["shared_preload_libraries"][0].split(",")
    assert p["shared_preload_libraries"][1] == "pending-reboot"
    assert p["pg_stat_statements.track"][0] in {"top", "all"}
    assert p["log_min_duration_statement"][0] == "100"
    assert p["log_statement"][0] == "ddl"
    assert p["log_connections"][0] == "1"
    assert int(p["idle_in_transaction_session_timeout"][0]) > 0
    assert p["max_connections"] == (str(r.outputs["max_connections"]), "pending-reboot")
    assert primary(r).inputs["parameterGroupName"] == group.state["name"]


def _group(r: RunResult, name: str) -> Resource:
    return named(of_type(r.resources, PARAMETER_GROUP), name)


def test_replica_parameter_group_handles_standby_conflicts() -> None:
    r = result("prod")
    p = params(_group(r, "database-replica"))
    assert p["hot_standby_feedback"][0] == "1"
    assert p["max_standby_streaming_delay"][0] == "30000"
    # A hot standby needs max_connections >= its primary's: both groups carry the same explicit value.
    assert p["max_connections"] == params(_group(r, "database-primary"))["max_connections"]


@pytest.mark.parametrize("stack", STACKS)
def test_database_admits_5432_only_from_pgbouncer_and_configured_sources(stack: str) -> None:
    r = result(stack)
    s = settings_for(stack)
    db_sg = r.outputs["db_security_group_id"]
    rules = [x.inputs for x in of_type(r.resources, INGRESS) if x.inputs["securityGroupId"] == db_sg]
    assert all(x["fromPort"] == x["toPort"] == 5432 and x["ipProtocol"] == "tcp" for x in rules)
    sources = {x.get("referencedSecurityGroupId") or x.get("cidrIpv4") or x.get("cidrIpv6") for x in rules}
    validator = named(of_type(r.resources, EGRESS), "restore-validation-fn-to-db").inputs["securityGroupId"]
    expected = {
        r.outputs["pgbouncer_security_group_id"],
        validator,  # the restore validation function (components/restore_validation.py)
        # the credential rotation function (components/rotation.py): sets the new passwords
        named(of_type(r.resources, EGRESS), "rotation-fn-to-db").inputs["securityGroupId"],
        *s.allowed_security_group_ids,
        *s.allowed_cidrs,
    }
    assert sources == expected
    every_rule = [x.inputs for x in of_type(r.resources, INGRESS)]
    assert not [x for x in every_rule if {x.get("cidrIpv4"), x.get("cidrIpv6")} & WORLD]
    assert not [x for x in of_type(r.resources, EGRESS) if x.inputs["securityGroupId"] == db_sg]


def test_app_security_groups_and_ipv6_cidrs_are_admitted() -> None:
    r = run("dev", {"allowedSecurityGroupIds": ["sg-0123456789abcdef0"], "allowedCidrs": ["fd00:1::/64"]})
    db_sg = r.outputs["db_security_group_id"]
    rules = [x.inputs for x in of_type(r.resources, INGRESS) if x.inputs["securityGroupId"] == db_sg]
    assert {"referencedSecurityGroupId": "sg-0123456789abcdef0"}.items() <= _rule_with(rules, "sg-0").items()
    assert any(x.get("cidrIpv6") == "fd00:1::/64" for x in rules)


def _rule_with(rules: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    return next(x for x in rules if str(x.get("referencedSecurityGroupId", "")).startswith(prefix))


@pytest.mark.parametrize("stack", STACKS)
def test_created_network_is_private_in_at_least_two_azs(stack: str) -> None:
    r = result(stack)
    subnets = of_type(r.resources, "aws:ec2/subnet:Subnet")
    assert len({x.inputs["availabilityZone"] for x in subnets}) >= 2
    assert all(x.inputs["mapPublicIpOnLaunch"] is False for x in subnets)
    assert not of_type(r.resources, "aws:ec2/internetGateway:InternetGateway")
    assert not of_type(r.resources, "aws:ec2/natGateway:NatGateway")
    assert len(r.outputs["subnet_ids"]) == len(subnets) == settings_for(stack).network.az_count
    assert one(r.resources, "aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"] == r.outputs["subnet_ids"]
    vpces = of_type(r.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")
    endpoints = {x.inputs["serviceName"].rsplit(".", 1)[1] for x in vpces}
    assert {"ssm", "secretsmanager", "kms", "s3"} <= endpoints
    interface = [x for x in vpces if x.inputs["vpcEndpointType"] == "Interface"]
    per_endpoint = len(subnets) if stack == "prod" else 1
    assert interface and all(len(x.inputs["subnetIds"]) == per_endpoint for x in interface)
    assert all(x.inputs["privateDnsEnabled"] is True for x in interface)


def test_existing_network_is_adopted_not_created() -> None:
    subnets = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    r = run("dev", {"network": {"mode": "existing", "vpcId": "vpc-0123456789abcdef0", "subnetIds": subnets}})
    assert not of_type(r.resources, "aws:ec2/vpc:Vpc")
    assert not of_type(r.resources, "aws:ec2/subnet:Subnet")
    assert not of_type(r.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")
    assert one(r.resources, "aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"] == subnets
    assert r.outputs["vpc_id"] == "vpc-0123456789abcdef0" and r.outputs["subnet_ids"] == subnets


@pytest.mark.parametrize("stack", STACKS)
def test_kms_key_rotates_and_encrypts_every_secret_and_log_group(stack: str) -> None:
    r = result(stack)
    key = named(of_type(r.resources, "aws:kms/key:Key"), "credentials-key")  # alarms and DR have their own
    assert key.inputs["enableKeyRotation"] is True
    key_arn = r.outputs["kms_key_arn"]
    window = settings_for(stack).secret_recovery_window_days
    secrets = [x for x in of_type(r.resources, SECRET) if x.name.startswith("credentials-")]
    assert len(secrets) == len(names.LOGIN_ROLES) + 1
    assert all(
        x.inputs["kmsKeyId"] == key_arn and x.inputs["recoveryWindowInDays"] == window for x in secrets
    )
    logs = [
        x
        for x in of_type(r.resources, "aws:cloudwatch/logGroup:LogGroup")
        if str(x.inputs["name"]).startswith("/aws/rds/instance/")
    ]
    assert len(logs) == 2 * (1 + settings_for(stack).replica_count)
    assert all(x.inputs["kmsKeyId"] == key_arn and x.inputs["retentionInDays"] > 0 for x in logs)
    ident = r.outputs["primary_instance_id"]
    assert {x.inputs["name"] for x in logs} >= {f"/aws/rds/instance/{ident}/postgresql"}


@pytest.mark.parametrize("stack", STACKS)
def test_role_secrets_hold_username_password_and_a_verifier_of_that_password(stack: str) -> None:
    r = result(stack)
    arns = r.outputs["role_secret_arns"]
    assert set(arns) == set(names.LOGIN_ROLES)
    for role in names.LOGIN_ROLES:
        version = named(of_type(r.resources, SECRET_VERSION), f"credentials-{role}-v2")
        assert version.inputs["secretId"] == arns[role]
        assert "secretString" in version.secret_inputs
        # Pulumi's first version keeps a label of its own, so rotation's garbage collection never drops it.
        assert version.inputs["versionStages"] == ["AWSCURRENT", INITIAL_STAGE]
        body = json.loads(version.inputs["secretString"])
        assert body[names.SECRET_USERNAME_KEY] == names.login_users(role)[0]  # a pooled role: its _a user
        password, verifier = body[names.SECRET_PASSWORD_KEY], body[names.SECRET_VERIFIER_KEY]
        assert is_scram_verifier(verifier)
        salt = named(r.resources, f"credentials-{role}-salt").state["base64"]
        assert verifier.split("$")[1].split(":")[1] == salt  # the pulumi-random salt, hence stable
        assert _scram_login_ok(verifier, password)
        assert not _scram_login_ok(verifier, password + "x")


def _scram_login_ok(verifier: str, password: str) -> bool:
    """Whether a SCRAM client with `password` authenticates against a server holding only `verifier`."""
    iterations_salt, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    auth = (base64.b64decode(salt), stored_key, server_key, int(iterations))
    server = scramp.ScramMechanism("SCRAM-SHA-256").make_server(lambda _user: auth)
    client = scramp.ScramClient(["SCRAM-SHA-256"], "user", password)
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    try:
        server.set_client_final(client.get_client_final())
    except scramp.ScramException:
        return False
    client.set_server_final(server.get_server_final())
    return True


@pytest.mark.parametrize("stack", STACKS)
def test_master_secret_is_standard_rds_json_with_the_host(stack: str) -> None:
    r = result(stack)
    version = named(of_type(r.resources, SECRET_VERSION), "database-master-v2")
    assert "secretString" in version.secret_inputs
    assert version.inputs["secretId"] == r.outputs["master_secret_arn"]
    body = json.loads(version.inputs["secretString"])
    assert {"engine", "host", "port", "username", "password", "dbname"} <= set(body)
    assert body["host"] == r.outputs["primary_address"] and body["port"] == 5432
    assert body["dbname"] == names.DATABASE_NAME and body["engine"] == "postgres"
    assert body["password"] == primary(r).inputs["password"]
    assert not set('/@" ') & set(body["password"])


def test_the_master_password_is_not_rds_managed_while_replicas_need_it() -> None:
    """RDS refuses read replicas of a source whose master password it manages (docs/operations.md)."""
    assert settings_for("prod").replica_count > 0
    assert not primary(result("prod")).inputs.get("manageMasterUserPassword")


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_have_the_agreed_names_and_no_password(stack: str) -> None:
    r = result(stack)
    expected = {
        "primary_endpoint", "primary_address", "primary_port", "primary_instance_id", "replica_endpoints",
        "replica_addresses", "database_name", "master_secret_arn", "role_secret_arns", "kms_key_arn",
        "db_security_group_id", "pgbouncer_security_group_id", "vpc_id", "subnet_ids", "region",
        "pre_migration_snapshot",
    }  # fmt: skip
    assert expected <= set(r.outputs)
    assert r.outputs["pre_migration_snapshot"] is settings_for(stack).backups.pre_migration_snapshot
    passwords = [
        x.state["result"] for x in of_type(r.resources, "random:index/randomPassword:RandomPassword")
    ]
    dumped = json.dumps(r.outputs)
    assert passwords and not [p for p in passwords if p in dumped]


@pytest.mark.parametrize("stack", STACKS)
def test_every_aws_resource_uses_the_tagged_provider(stack: str) -> None:
    r = result(stack)
    provider = one(r.resources, "pulumi:providers:aws")
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    s = settings_for(stack)
    assert tags == {**s.tags, "project": "spike-land-db", "stack": stack, "owner": s.owner}
    assert provider.inputs["region"] == s.region
    aws_resources = [x for x in r.resources if x.typ.startswith("aws:")]
    assert aws_resources and all(x.provider_name == "aws" for x in aws_resources)


# Actions AWS authorises only on "*" (no resource-level permissions).
_STAR_ONLY_ACTIONS = {
    "cloudwatch:PutMetricData",
    "ec2:DescribeInstances",
    "ec2:DescribeTags",
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:*",
    "logs:DescribeLogGroups",
    # AWS Backup defines no restore-job resource type (Service Authorization Reference, AWS Backup).
    "backup:DescribeRestoreJob",
    "backup:PutRestoreValidationResult",
}


def _policies(r: RunResult) -> list[tuple[Resource, dict[str, Any]]]:
    found = []
    for x in r.resources:
        # A KMS key policy's "*" means the key itself; it is not an IAM grant over unknown resources.
        if x.typ == "aws:kms/key:Key":
            continue
        for key in ("policy", "assumeRolePolicy", "inlinePolicies"):
            value = x.inputs.get(key)
            docs = value if isinstance(value, list) else [value]
            for doc in docs:
                if isinstance(doc, dict):
                    doc = doc.get("policy")
                if isinstance(doc, str) and doc.strip().startswith("{"):
                    found.append((x, json.loads(doc)))
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_no_policy_grants_star_resources_where_an_arn_is_known(stack: str) -> None:
    r = result(stack)
    offenders = []
    for resource, doc in _policies(r):
        statements = doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]
        for st in statements:
            res = st.get("Resource", [])
            res = res if isinstance(res, list) else [res]
            actions = st.get("Action", [])
            actions = actions if isinstance(actions, list) else [actions]
            if st.get("Effect") == "Allow" and "*" in res and not set(actions) <= _STAR_ONLY_ACTIONS:
                offenders.append((resource.typ, resource.name, actions))
    assert offenders == []


def test_monitoring_role_trusts_only_rds_monitoring_with_the_managed_policy() -> None:
    r = result("prod")
    role = named(of_type(r.resources, "aws:iam/role:Role"), "database-monitoring")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    (st,) = trust["Statement"]
    assert st["Principal"] == {"Service": "monitoring.rds.amazonaws.com"}
    attachment = named(
        of_type(r.resources, "aws:iam/rolePolicyAttachment:RolePolicyAttachment"), "database-monitoring"
    )
    assert (
        attachment.inputs["policyArn"]
        == "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
    )


# EC2 accepts only these characters in security group and security group rule descriptions
# (CreateSecurityGroup GroupDescription; IpRange/UserIdGroupPair/PrefixListId Description).
SG_DESCRIPTION = r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=;{}!$*]{0,255}"


@pytest.mark.parametrize("network", ["create", "existing"])
def test_security_group_descriptions_use_only_characters_ec2_accepts(network: str) -> None:
    overrides: dict[str, Any] = {}
    if network == "existing":
        subnets = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
        overrides = {"network": {"mode": "existing", "vpcId": "vpc-0123456789abcdef0", "subnetIds": subnets}}
    r = run("prod", {**overrides, "allowedSecurityGroupIds": ["sg-0123456789abcdef0"]})
    groups = of_type(r.resources, "aws:ec2/securityGroup:SecurityGroup")
    rules = of_type(r.resources, INGRESS) + of_type(r.resources, EGRESS)
    assert groups and rules
    bad = [
        (x.name, x.inputs.get("description"))
        for x in groups + rules
        if not re.fullmatch(SG_DESCRIPTION, str(x.inputs.get("description", "")))
    ]
    assert not bad


# --- read scaling (issue 17): the read pool over every replica, each replica's budget, replica AZs ----------


def _user_data(r: RunResult) -> str:
    template = one(r.resources, "aws:ec2/launchTemplate:LaunchTemplate")
    return gzip.decompress(base64.b64decode(template.inputs["userData"])).decode()


@pytest.mark.usefixtures("pinned_pgbouncer_1_25")
def test_prod_with_two_replicas_renders_a_read_pool_over_both() -> None:
    r = run("prod", {"replicaCount": 2, "pgbouncer.version": "1.25"})
    addresses = r.outputs["replica_addresses"]
    assert len(addresses) == 2
    # One pgbouncer.ini per PgBouncer process (prod: 2), each with the same read pool.
    lines = [x for x in _user_data(r).splitlines() if x.startswith(f"{names.READ_POOL_DATABASE} = ")]
    assert (
        len(lines)
        == settings_for("prod", {"replicaCount": 2, "pgbouncer.version": "1.25"}).pgbouncer.processes
    )
    line = lines[0]
    assert set(lines) == {line}
    # The host list with load_balance_hosts written out, the primary not in it.
    assert f"host={addresses[0]},{addresses[1]} port=5432 " in line
    assert line.endswith(" load_balance_hosts=round-robin")
    assert r.outputs["primary_address"] not in line


def test_the_budget_refuses_a_layout_that_would_overfill_a_replica() -> None:
    # db.t4g.small holds 192 by RDS's formula; 2 hosts, surging to 4 in a refresh, x 1 process x (85 + 5)
    # = 360 fits the m7g.large primary (855) but not 192 - 15 headroom on either replica.
    overrides: dict[str, object] = {
        "replicaCount": 2,
        "pgbouncer.version": "1.25",
        "pgbouncer.processes": 1,
        "replicaInstanceClass": "db.t4g.small",
        "pgbouncer.defaultPoolSize": 85,
    }
    with pytest.raises(
        SettingsError, match=r"surges to 4 host.*360 server connections to replica 1, .*192 - 15 headroom"
    ):
        settings_for("prod", overrides)
    assert settings_for("prod", {**overrides, "pgbouncer.defaultPoolSize": 35}).replica_count == 2


def test_the_budget_counts_the_hosts_an_instance_refresh_surges_to() -> None:
    """2 hosts x (40 + 5) = 90 would fit a replica's 177; the refresh's 4 hosts (180) do not."""
    overrides: dict[str, object] = {
        "replicaCount": 2,
        "pgbouncer.version": "1.25",
        "pgbouncer.processes": 1,
        "replicaInstanceClass": "db.t4g.small",
        "pgbouncer.defaultPoolSize": 40,
    }
    assert capacity.hosts_at_surge(2) == 4 and capacity.hosts_at_surge(1) == 2
    with pytest.raises(SettingsError, match=r"surges to 4 host\(s\) \(hostCount 2 and their replacements\)"):
        settings_for("prod", overrides)
    targets = settings_for("prod", {**overrides, "pgbouncer.defaultPoolSize": 35}).pool_targets
    fits_without_surge = capacity.check_layout(
        targets, default_pool_size=40, reserve_pool_size=5, pgbouncer_hosts=2, processes=1
    )
    assert [b.pooled for b in fits_without_surge] == [90, 90, 90]


def test_two_replicas_need_a_pgbouncer_whose_verify_full_works_over_a_host_list() -> None:
    with pytest.raises(
        SettingsError,
        match=r"replicaCount = 2 is invalid: PgBouncer 1.24 checks .*verify-full.*\(pgbouncer.version\)",
    ):
        settings_for("prod", {"replicaCount": 2, "pgbouncer.version": "1.24"})
    assert settings_for("prod", {"replicaCount": 1, "pgbouncer.version": "1.24"}).replica_count == 1


@pytest.mark.usefixtures("pinned_pgbouncer_1_25")
@pytest.mark.parametrize(("stack", "az_count", "expected"), [("prod", 3, ["b", "c"]), ("dev", 2, ["b", "b"])])
def test_replicas_go_to_the_azs_other_than_the_primarys(
    stack: str, az_count: int, expected: list[str]
) -> None:
    overrides = {"replicaCount": 2, "pgbouncer.version": "1.25", "network.azCount": az_count}
    r = run(stack, overrides)
    region = settings_for(stack).region
    assert primary(r).state["availabilityZone"] == f"{region}a"  # where the mocks' RDS placed it
    assert "availabilityZone" not in primary(r).inputs  # never pinned: Multi-AZ forbids it
    assert [x.inputs["availabilityZone"] for x in replicas(r)] == [f"{region}{z}" for z in expected]


def test_replica_zones_round_robin_over_the_other_azs() -> None:
    assert replica_zones(["a", "b", "c"], "b", 4) == ["a", "c", "a", "c"]
    assert replica_zones(["a", "a", "b"], "a", 2) == ["b", "b"]  # subnets sharing an AZ count once
    assert replica_zones(["a"], "a", 2) == ["a", "a"]  # nowhere else to go
