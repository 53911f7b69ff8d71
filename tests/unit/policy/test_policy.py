"""The policy pack: each validator on hand-written inputs; the pack process itself, driven over the analyzer
gRPC protocol as the Pulumi CLI drives it; and every validator over everything the real program declares
under mocks for the real dev and prod stacks (also sent through the pack process)."""

import copy
import functools
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints; pulumi depends on it
import pulumi
import pytest
from google.protobuf import empty_pb2, struct_pb2  # type: ignore[import-untyped]
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.deserialize import (
    SPECIAL_ARCHIVE_SIG,
    SPECIAL_ASSET_SIG,
    SPECIAL_SIG_KEY,
    deserialize_properties,
)
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UnknownValueError, unknown_checking_proxy

from policy import validators as v
from tests.unit.harness import Resource, run_program

POLICY_DIR = Path(__file__).resolve().parents[3] / "policy"

GOOD_PRIMARY: dict[str, Any] = {
    "engine": "postgres",
    "storageEncrypted": True,
    "publiclyAccessible": False,
    "multiAz": True,
    "deletionProtection": True,
    "backupRetentionPeriod": 30.0,  # mocks and the engine hand numbers over as floats
}


def names(resource_type: str, inputs: Mapping[str, Any], *, prod: bool = False) -> set[str]:
    """The names of the policies a resource violates."""
    found = v.violations(resource_type, inputs, prod=prod)
    return {message[1 : message.index("]")] for message in found}


def iam_doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


# --- every policy has a name pulumi accepts and is unique ------------------------------------------------


def test_policy_names_are_unique_kebab_case() -> None:
    policy_names = [p.name for p in v.POLICIES]
    assert len(policy_names) == len(set(policy_names))
    for name in policy_names:
        assert name == name.lower() and " " not in name and name != "all"


# --- database, snapshot, secret and topic encryption ---------------------------------------------------


def test_a_compliant_prod_primary_passes_everything() -> None:
    assert v.violations(v.RDS_INSTANCE, GOOD_PRIMARY, prod=True) == []


@pytest.mark.parametrize("value", [False, None])
def test_unencrypted_database_fails(value: bool | None) -> None:
    inputs = {**GOOD_PRIMARY, "storageEncrypted": value}
    assert names(v.RDS_INSTANCE, inputs) == {"database-storage-encrypted"}
    assert names(v.RDS_CLUSTER, {"storageEncrypted": value}) == {"database-storage-encrypted"}


def test_a_replica_inherits_encryption_from_its_source() -> None:
    replica = {"replicateSourceDb": "primary-id", "backupRetentionPeriod": 0.0, "multiAz": False}
    assert v.violations(v.RDS_INSTANCE, replica, prod=True) == []


@pytest.mark.parametrize(
    ("resource_type", "key"),
    [
        (v.SNAPSHOT_COPY, "kmsKeyId"),
        (v.CLUSTER_SNAPSHOT_COPY, "kmsKeyId"),
        (v.BACKUP_REPLICATION, "kmsKeyId"),
        (v.BACKUP_VAULT, "kmsKeyArn"),
    ],
)
def test_snapshot_stores_need_a_kms_key(resource_type: str, key: str) -> None:
    assert names(resource_type, {"name": "x"}) == {"snapshot-encrypted"}
    assert names(resource_type, {"name": "x", key: ""}) == {"snapshot-encrypted"}
    assert names(resource_type, {"name": "x", key: "arn:aws:kms:eu-west-1:1:key/k"}) == set()


def test_secret_needs_the_stack_kms_key() -> None:
    assert names(v.SECRETS_MANAGER_SECRET, {"name": "spike_app"}) == {"secret-encrypted"}
    assert names(v.SECRETS_MANAGER_SECRET, {"kmsKeyId": "arn:aws:kms:eu-west-1:1:key/k"}) == set()


def test_topic_needs_a_kms_key() -> None:
    assert names(v.SNS_TOPIC, {"name": "alarms"}) == {"topic-encrypted"}
    assert names(v.SNS_TOPIC, {"kmsMasterKeyId": "alias/spike"}) == set()


def test_log_groups_and_queues_need_a_kms_key() -> None:
    assert names(v.LOG_GROUP, {"name": "/aws/lambda/spike-land-prod-rotation"}) == {"log-group-encrypted"}
    assert names(v.LOG_GROUP, {"kmsKeyId": "arn:aws:kms:eu-west-1:1:key/k"}) == set()
    assert names(v.SQS_QUEUE, {"name": "spike-land-prod-restore-validation-dlq"}) == {"queue-encrypted"}
    assert names(v.SQS_QUEUE, {"kmsMasterKeyId": "arn:aws:kms:eu-west-1:1:key/k"}) == set()


# --- public access --------------------------------------------------------------------------------------


def test_publicly_accessible_database_fails() -> None:
    found = v.violations(v.RDS_INSTANCE, {**GOOD_PRIMARY, "publiclyAccessible": True}, prod=False)
    assert found == [
        "[no-public-instance] publiclyAccessible is true: "
        "the database would get a public endpoint; set it to False"
    ]


def test_a_replica_is_checked_for_public_access_too() -> None:
    replica = {"replicateSourceDb": "primary-id", "publiclyAccessible": True}
    assert names(v.RDS_INSTANCE, replica) == {"no-public-instance"}


def test_ec2_instance_or_launch_template_with_public_ip_fails() -> None:
    assert names(v.EC2_INSTANCE, {"associatePublicIpAddress": True}) == {"no-public-instance"}
    assert names(v.EC2_INSTANCE, {"associatePublicIpAddress": False}) == set()
    template = {"networkInterfaces": [{"associatePublicIpAddress": "true"}]}
    assert names(v.LAUNCH_TEMPLATE, template) == {"no-public-instance"}
    assert names(v.LAUNCH_TEMPLATE, {"networkInterfaces": [{"associatePublicIpAddress": "false"}]}) == set()


# --- prod durability ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "policy"),
    [
        ({"multiAz": False}, "prod-multi-az"),
        ({"multiAz": None}, "prod-multi-az"),
        ({"deletionProtection": False}, "prod-deletion-protection"),
        ({"backupRetentionPeriod": 29.0}, "prod-backup-retention"),
        ({"backupRetentionPeriod": None}, "prod-backup-retention"),
    ],
)
def test_prod_primary_rules(change: dict[str, Any], policy: str) -> None:
    inputs = {**GOOD_PRIMARY, **change}
    assert names(v.RDS_INSTANCE, inputs, prod=True) == {policy}
    assert names(v.RDS_INSTANCE, inputs, prod=False) == set()  # dev may be single-AZ and short-lived


def test_prod_rules_message_names_the_fix() -> None:
    [message] = v.violations(v.RDS_INSTANCE, {**GOOD_PRIMARY, "multiAz": False}, prod=True)
    assert message.startswith("[prod-multi-az] multiAz is not true")


# --- backup retention range -----------------------------------------------------------------------------


@pytest.mark.parametrize("days", [0.0, 36.0, -1.0])
def test_backup_retention_outside_1_to_35_fails(days: float) -> None:
    inputs = {**GOOD_PRIMARY, "backupRetentionPeriod": days}
    assert "backup-retention-range" in names(v.RDS_INSTANCE, inputs)
    assert names(v.RDS_CLUSTER, {"storageEncrypted": True, "backupRetentionPeriod": days}) == {
        "backup-retention-range"
    }


@pytest.mark.parametrize("days", [1.0, 7.0, 35.0])
def test_backup_retention_inside_1_to_35_passes(days: float) -> None:
    assert names(v.RDS_INSTANCE, {**GOOD_PRIMARY, "backupRetentionPeriod": days}) == set()


# --- security group ingress -----------------------------------------------------------------------------


@pytest.mark.parametrize("cidr_key", ["cidrBlocks", "ipv6CidrBlocks"])
@pytest.mark.parametrize(
    ("protocol", "from_port", "to_port"),
    [("tcp", 5432, 5432), ("tcp", 6543, 6543), ("tcp", 5000, 7000), ("-1", 0, 0), ("6", 5432, 5432)],
)
def test_inline_ingress_open_to_the_world_on_a_database_port_fails(
    cidr_key: str, protocol: str, from_port: int, to_port: int
) -> None:
    cidr = "0.0.0.0/0" if cidr_key == "cidrBlocks" else "::/0"
    rule = {"protocol": protocol, "fromPort": float(from_port), "toPort": float(to_port), cidr_key: [cidr]}
    found = v.violations(v.SECURITY_GROUP, {"ingress": [rule]}, prod=False)
    assert len(found) == 1 and found[0].startswith("[no-open-database-ingress] ingress[0] admits")
    assert cidr in found[0]


@pytest.mark.parametrize(
    "rule",
    [
        {"protocol": "tcp", "fromPort": 5432, "toPort": 5432, "cidrBlocks": ["10.0.0.0/16"]},
        {"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]},
        {"protocol": "udp", "fromPort": 5432, "toPort": 5432, "cidrBlocks": ["0.0.0.0/0"]},
        {"protocol": "tcp", "fromPort": 6543, "toPort": 6543, "securityGroups": ["sg-app"]},
    ],
)
def test_inline_ingress_that_is_scoped_passes(rule: dict[str, Any]) -> None:
    assert names(v.SECURITY_GROUP, {"ingress": [rule]}) == set()


@pytest.mark.parametrize(
    "cidrs",
    [
        ["0.0.0.0/1", "128.0.0.0/1"],  # together: every IPv4 address, with no /0 in sight
        ["::/1", "8000::/1"],
        ["10.0.0.0/8", "8.8.8.0/24"],
        ["172.15.0.0/16"],
        ["fe80::/10"],
    ],
)
@pytest.mark.parametrize("port", [5432, 6543])
def test_ingress_from_any_non_private_cidr_on_a_database_port_fails(cidrs: list[str], port: int) -> None:
    v4 = [c for c in cidrs if ":" not in c]
    v6 = [c for c in cidrs if ":" in c]
    rule = {"protocol": "tcp", "fromPort": port, "toPort": port, "cidrBlocks": v4, "ipv6CidrBlocks": v6}
    [found] = v.violations(v.SECURITY_GROUP, {"ingress": [rule]}, prod=False)
    public = sorted(c for c in cidrs if c != "10.0.0.0/8")
    assert found.startswith(
        f"[no-open-database-ingress] ingress[0] admits {', '.join(public)} on port {port}"
    )
    assert "outside private address space" in found

    # the same CIDRs one per rule, as the program declares them (aws.vpc.SecurityGroupIngressRule)
    for cidr in public:
        key = "cidrIpv6" if ":" in cidr else "cidrIpv4"
        rule = {"ipProtocol": "tcp", "fromPort": port, "toPort": port, key: cidr}
        assert names(v.VPC_INGRESS_RULE, rule) == {"no-open-database-ingress"}
        legacy = {"type": "ingress", "protocol": "tcp", "fromPort": port, "toPort": port}
        legacy["ipv6CidrBlocks" if ":" in cidr else "cidrBlocks"] = [cidr]
        assert names(v.SECURITY_GROUP_RULE, legacy) == {"no-open-database-ingress"}


@pytest.mark.parametrize(
    "cidr", ["10.0.0.0/8", "172.16.0.0/12", "192.168.10.0/24", "100.64.0.0/10", "fd00:1::/64"]
)
def test_ingress_from_private_address_space_passes(cidr: str) -> None:
    key = "cidrIpv6" if ":" in cidr else "cidrIpv4"
    assert (
        names(v.VPC_INGRESS_RULE, {"ipProtocol": "tcp", "fromPort": 5432, "toPort": 5432, key: cidr}) == set()
    )


def test_security_group_rule_and_vpc_ingress_rule_are_checked() -> None:
    open_rule = {
        "type": "ingress",
        "protocol": "tcp",
        "fromPort": 6543,
        "toPort": 6543,
        "cidrBlocks": ["0.0.0.0/0"],
    }
    assert names(v.SECURITY_GROUP_RULE, open_rule) == {"no-open-database-ingress"}
    assert names(v.SECURITY_GROUP_RULE, {**open_rule, "type": "egress"}) == set()

    vpc_rule = {"ipProtocol": "tcp", "fromPort": 5432, "toPort": 5432, "cidrIpv6": "::/0"}
    assert names(v.VPC_INGRESS_RULE, vpc_rule) == {"no-open-database-ingress"}
    assert names(v.VPC_INGRESS_RULE, {"ipProtocol": "-1", "cidrIpv4": "0.0.0.0/0"}) == {
        "no-open-database-ingress"
    }
    assert (
        names(v.VPC_INGRESS_RULE, {**vpc_rule, "cidrIpv6": None, "referencedSecurityGroupId": "sg"}) == set()
    )


# --- IAM Action '*' -------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["*", ["s3:GetObject", "*"], "*:*"])
def test_iam_allow_action_star_fails(action: str | list[str]) -> None:
    doc = iam_doc({"Sid": "All", "Effect": "Allow", "Action": action, "Resource": "*"})
    found = v.violations("aws:iam/policy:Policy", {"policy": doc}, prod=False)
    assert found == [
        "[no-iam-action-star] policy statement 0 (All) allows Action '*': name the actions it needs"
    ]


def test_iam_star_is_found_in_trust_inline_and_key_policies() -> None:
    star = {"Effect": "Allow", "Action": "*", "Principal": {"AWS": "*"}, "Resource": "*"}
    assert names("aws:iam/role:Role", {"assumeRolePolicy": iam_doc(star)}) == {"no-iam-action-star"}
    role = {"assumeRolePolicy": iam_doc(), "inlinePolicies": [{"name": "p", "policy": iam_doc(star)}]}
    assert v.violations("aws:iam/role:Role", role, prod=False)[0].startswith(
        "[no-iam-action-star] inlinePolicies[0].policy statement 0"
    )
    assert names("aws:kms/key:Key", {"policy": iam_doc(star)}) == {"no-iam-action-star"}
    # a single statement object (not a list) is legal IAM too
    single = json.dumps({"Version": "2012-10-17", "Statement": star})
    assert names("aws:sns/topicPolicy:TopicPolicy", {"policy": single}) == {"no-iam-action-star"}


def test_iam_scoped_actions_and_deny_star_pass() -> None:
    doc = iam_doc(
        {
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": "arn:aws:secretsmanager:x",
        },
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},  # key policies' root statement
        {
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    )
    assert names("aws:iam/rolePolicy:RolePolicy", {"policy": doc}) == set()
    assert names("aws:iam/rolePolicy:RolePolicy", {"policy": json.loads(doc)}) == set()


def test_unparseable_policy_document_is_reported() -> None:
    assert names("aws:iam/policy:Policy", {"policy": "{not json"}) == {"no-iam-action-star"}


def test_component_resources_are_not_inspected() -> None:
    star = iam_doc({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert names("spike-land-db:index:Database", {"policy": star}) == set()


# --- unknowns during preview and the stack name ---------------------------------------------------------


def test_unknown_values_surface_as_pulumi_policy_unknowns() -> None:
    # pulumi-policy turns UnknownValueError into an advisory "can't be known during preview" diagnostic;
    # the validators must let it through rather than treat the unknown as a value.
    props = unknown_checking_proxy({**GOOD_PRIMARY, "multiAz": UNKNOWN_BOOLEAN_VALUE})
    with pytest.raises(UnknownValueError):
        v.prod_multi_az(v.RDS_INSTANCE, props, True)
    # every other policy works through the proxy (Mapping, not dict)
    assert v.database_storage_encrypted(v.RDS_INSTANCE, props, True) == []


def test_stack_from_urn() -> None:
    assert v.stack_from_urn("urn:pulumi:prod::spike-land-db::aws:rds/instance:Instance::db") == "prod"
    with pytest.raises(ValueError, match="not a Pulumi URN"):
        v.stack_from_urn("arn:aws:rds:x")


# --- the pack itself, as `pulumi preview --policy-pack policy` runs it --------------------------------------


@dataclass
class Pack:
    """The policy pack running as the Pulumi CLI runs it: `python -m pulumi.policy <engine> policy` (runpy on
    the directory), serving the analyzer gRPC protocol on the port it prints."""

    stub: Any

    def info(self) -> Any:
        return self.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)

    def analyze(
        self, stack: str, typ: str, name: str, inputs: Mapping[str, Any]
    ) -> list[tuple[str, str, int]]:
        properties = struct_pb2.Struct()
        properties.update(wire(dict(inputs)))
        request = analyzer_pb2.AnalyzeRequest(
            type=typ,
            properties=properties,
            urn=f"urn:pulumi:{stack}::spike-land-db::{typ}::{name}",
            name=name,
        )
        response = self.stub.Analyze(request, timeout=30)
        return [(d.policyName, d.message, d.enforcementLevel) for d in response.diagnostics]


def wire(value: Any) -> Any:
    """Mock inputs in the engine's wire shape: they already carry secrets as signature objects; assets
    become signature objects too, the way the engine serializes them."""
    if isinstance(value, dict):
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire(v) for v in value]
    if isinstance(value, pulumi.RemoteAsset):
        return {SPECIAL_SIG_KEY: SPECIAL_ASSET_SIG, "uri": value.uri}
    if isinstance(value, pulumi.FileAsset):
        return {SPECIAL_SIG_KEY: SPECIAL_ASSET_SIG, "path": value.path}
    if isinstance(value, pulumi.StringAsset):
        return {SPECIAL_SIG_KEY: SPECIAL_ASSET_SIG, "text": value.text}
    if isinstance(value, pulumi.AssetArchive):
        return {SPECIAL_SIG_KEY: SPECIAL_ARCHIVE_SIG, "assets": wire(dict(value.assets))}
    if isinstance(value, pulumi.FileArchive):
        return {SPECIAL_SIG_KEY: SPECIAL_ARCHIVE_SIG, "path": value.path}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"no wire form for {type(value).__name__} in the mock inputs; add one here")


@pytest.fixture(scope="module")
def pack() -> Iterator[Pack]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(POLICY_DIR)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=POLICY_DIR.parent,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        port = proc.stdout.readline().decode().strip()
        if not port.isdigit():
            proc.kill()
            pytest.fail(f"the policy pack did not start: {proc.stderr.read().decode()[-2000:]}")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield Pack(analyzer_pb2_grpc.AnalyzerStub(channel))
        channel.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)


MANDATORY = 1  # pulumirpc.EnforcementLevel.MANDATORY


def test_the_pack_serves_every_validator_as_mandatory(pack: Pack) -> None:
    info = pack.info()
    assert info.name == "spike-land-db"
    assert [p.name for p in info.policies] == [p.name for p in v.POLICIES]
    assert {p.enforcementLevel for p in info.policies} == {MANDATORY}


def test_the_pack_applies_prod_rules_by_the_stack_in_the_urn(pack: Pack) -> None:
    single_az = {**GOOD_PRIMARY, "multiAz": False}
    assert pack.analyze("dev", v.RDS_INSTANCE, "db", single_az) == []
    [(policy, message, level)] = pack.analyze("prod", v.RDS_INSTANCE, "db", single_az)
    assert (policy, level) == ("prod-multi-az", MANDATORY)
    assert "[prod-multi-az] db: multiAz is not true" in message


# --- the real program, under mocks, for the real stack files ----------------------------------------------


def as_the_pack_sees_it(inputs: Mapping[str, Any]) -> Any:
    """Mock inputs -> what pulumi-policy hands a policy: secrets unwrapped by its own deserializer, then
    its unknown-checking proxy (a read-only Mapping, not a dict)."""
    return unknown_checking_proxy(deserialize_properties(dict(inputs)))


def program_violations(resources: list[Resource], *, prod: bool) -> list[str]:
    return [
        f"{r.typ} {r.name}: {message}"
        for r in resources
        for message in v.violations(r.typ, as_the_pack_sees_it(r.inputs), prod=prod)
    ]


@functools.cache
def declared(stack: str) -> list[Resource]:
    return run_program(stack)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_real_stacks_pass_every_policy(stack: str) -> None:
    resources = declared(stack)
    assert program_violations(resources, prod=stack == "prod") == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_scan_is_not_vacuous(stack: str) -> None:
    # the policies above must actually have met the resources they guard
    types = {r.typ for r in declared(stack)}
    assert {v.RDS_INSTANCE, v.SECRETS_MANAGER_SECRET, v.SNS_TOPIC, v.BACKUP_VAULT} <= types
    assert types & {v.SECURITY_GROUP, v.SECURITY_GROUP_RULE, v.VPC_INGRESS_RULE}
    withpolicy_documents = [
        r for r in declared(stack) if any(True for _ in v.policy_documents(as_the_pack_sees_it(r.inputs)))
    ]
    assert withpolicy_documents, "no resource with an IAM/resource policy document was scanned"


@pytest.mark.parametrize(
    ("overrides", "policy"),
    [
        ({"multiAz": False}, "prod-multi-az"),
        ({"deletionProtection": False}, "prod-deletion-protection"),
        ({"backupRetentionDays": 7}, "prod-backup-retention"),
    ],
)
def test_a_mutated_prod_stack_fails_naming_the_policy(overrides: dict[str, Any], policy: str) -> None:
    found = program_violations(run_program("prod", overrides), prod=True)
    assert found, f"prod with {overrides} passed every policy"
    assert all(f"[{policy}]" in message for message in found), found


def test_the_pack_process_passes_real_dev_and_fails_a_mutated_prod(pack: Pack) -> None:
    def diagnostics(stack: str, resources: list[Resource]) -> list[tuple[str, str, int]]:
        return [d for r in resources for d in pack.analyze(stack, r.typ, r.name, r.inputs)]

    assert diagnostics("dev", declared("dev")) == []
    assert diagnostics("prod", declared("prod")) == []
    found = diagnostics("prod", run_program("prod", {"multiAz": False}))
    assert [(policy, level) for policy, _, level in found] == [("prod-multi-az", MANDATORY)]
    assert "[prod-multi-az] database-primary: multiAz is not true" in found[0][1]


def test_the_same_settings_pass_on_dev() -> None:
    # dev is allowed to be single-AZ, short-lived and deletable
    resources = run_program("dev", {"multiAz": False, "deletionProtection": False, "backupRetentionDays": 1})
    assert program_violations(resources, prod=False) == []


def mutated(stack: str, typ: str, change: Any) -> tuple[Resource, list[str]]:
    """The first resource of `typ` the program declares, with `change(inputs)` applied, and its violations."""
    resource = next((r for r in declared(stack) if r.typ == typ), None)
    assert resource is not None, f"the {stack} program declares no {typ}"
    inputs = copy.deepcopy(deserialize_properties(dict(resource.inputs)))
    change(inputs)
    return resource, v.violations(typ, unknown_checking_proxy(inputs), prod=stack == "prod")


def test_a_real_primary_made_public_or_unencrypted_fails() -> None:
    _, found = mutated(
        "prod", v.RDS_INSTANCE, lambda i: i.update(publiclyAccessible=True, storageEncrypted=False)
    )
    assert {m[1 : m.index("]")] for m in found} == {"no-public-instance", "database-storage-encrypted"}


def test_a_real_secret_without_its_kms_key_fails() -> None:
    _, found = mutated("prod", v.SECRETS_MANAGER_SECRET, lambda i: i.pop("kmsKeyId"))
    assert [m[1 : m.index("]")] for m in found] == ["secret-encrypted"]


def test_a_real_ingress_rule_opened_to_the_world_fails() -> None:
    def open_rule(inputs: dict[str, Any]) -> None:
        inputs.pop("referencedSecurityGroupId", None)
        inputs.pop("cidrIpv4", None)
        inputs.update(cidrIpv6="::/0", ipProtocol="tcp", fromPort=6543.0, toPort=6543.0)

    _, found = mutated("prod", v.VPC_INGRESS_RULE, open_rule)
    assert len(found) == 1 and found[0].startswith(
        "[no-open-database-ingress] the rule admits ::/0 on port 6543"
    )


def test_a_real_role_policy_widened_to_action_star_fails() -> None:
    def widen(inputs: dict[str, Any]) -> None:
        document = json.loads(inputs["policy"])
        statements = document["Statement"]
        first = statements[0] if isinstance(statements, list) else statements
        first["Action"] = "*"
        inputs["policy"] = json.dumps(document)

    _, found = mutated("prod", "aws:iam/rolePolicy:RolePolicy", widen)
    assert len(found) == 1 and found[0].startswith("[no-iam-action-star] policy statement 0")


def test_the_pack_requirements_match_the_locked_versions() -> None:
    # the pack runs from policy/venv (policy/requirements.txt); tests run from .venv (uv.lock): same code
    lock = tomllib.loads((POLICY_DIR.parent / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    pins = dict(
        line.split("==", 1)
        for line in (POLICY_DIR / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins == {"pulumi": locked["pulumi"], "pulumi-policy": locked["pulumi-policy"]}
