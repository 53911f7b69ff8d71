"""Network hygiene under mocks, for the real stack files: the default security group and VPC flow logs."""

from __future__ import annotations

import json
import re

import pytest

from tests.unit.harness import ACCOUNT_ID, Resource, RunResult, named, of_type, one, run, settings_for

STACKS = ("dev", "prod")
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
EXISTING = {
    "network": {
        "mode": "existing",
        "vpcId": "vpc-0123456789abcdef0",
        "subnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
    }
}


@pytest.mark.parametrize("stack", STACKS)
def test_the_created_vpcs_default_security_group_is_taken_over_with_no_rules(stack: str) -> None:
    r = run(stack)
    one(r.resources, "aws:ec2/vpc:Vpc")
    group = one(r.resources, DEFAULT_SG)
    assert group.inputs["vpcId"] == r.outputs["vpc_id"]
    # No rule at all: the provider strips AWS's self-referencing ingress and all-egress rules on adoption.
    assert group.inputs.get("ingress", []) == [] and group.inputs.get("egress", []) == []


def test_an_adopted_vpcs_default_security_group_is_left_to_its_owner() -> None:
    r = run("prod", EXISTING)
    assert of_type(r.resources, DEFAULT_SG) == []


FLOW_LOG = "aws:ec2/flowLog:FlowLog"


def _flow_log_resources(r: RunResult) -> tuple[Resource, Resource, Resource, Resource]:
    flow = one(r.resources, FLOW_LOG)
    group = named(r.resources, "flow-logs-group")
    role = one([x for x in r.resources if x.name == "flow-logs-delivery"], "aws:iam/role:Role")
    policy = one([x for x in r.resources if x.name == "flow-logs-delivery"], "aws:iam/rolePolicy:RolePolicy")
    return flow, group, role, policy


@pytest.mark.parametrize("overrides", [{}, EXISTING], ids=["created-vpc", "adopted-vpc"])
def test_prod_logs_rejected_flows_to_an_encrypted_group_with_the_stacks_retention(
    overrides: dict[str, object],
) -> None:
    r = run("prod", overrides)
    s = settings_for("prod", overrides)
    flow, group, role, policy = _flow_log_resources(r)
    assert flow.inputs["vpcId"] == r.outputs["vpc_id"]
    assert flow.inputs["trafficType"] == "REJECT"
    assert flow.inputs["logDestinationType"] == "cloud-watch-logs"
    assert flow.inputs["logDestination"] == group.state["arn"]
    assert flow.inputs["iamRoleArn"] == role.state["arn"]
    assert group.inputs["kmsKeyId"] == r.outputs["kms_key_arn"]
    assert group.inputs["retentionInDays"] == s.log_retention_days == 90
    # Only this account's flow-logs service may assume the delivery role, and it may write only there.
    (trust,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT_ID}
    assert trust["Condition"]["ArnLike"]["aws:SourceArn"].endswith(f":{ACCOUNT_ID}:vpc-flow-log/*")
    statements = {st["Sid"]: st for st in json.loads(policy.inputs["policy"])["Statement"]}
    assert statements["WriteFlowLogStreams"]["Resource"] == group.state["arn"] + ":log-stream:*"
    assert statements["ListFlowLogStreams"]["Resource"] == group.state["arn"]
    # Each action only on ARNs of the resource type it takes (parliament's RESOURCE_MISMATCH otherwise).
    for st in statements.values():
        for action in st["Action"]:
            pattern = LOGS_RESOURCE_TYPES[action]
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert all(re.fullmatch(pattern, arn) for arn in resources), (action, resources)


# The ARN each CloudWatch Logs action the delivery role uses takes (Service Authorization Reference,
# "Actions, resources, and condition keys for Amazon CloudWatch Logs": CreateLogStream and PutLogEvents
# log-stream*, DescribeLogStreams log-group*, DescribeLogGroups none, so "*").
_GROUP = r"arn:aws:logs:[a-z0-9-]+:\d{12}:log-group:[^:]+"
LOGS_RESOURCE_TYPES = {
    "logs:CreateLogStream": _GROUP + r":log-stream:[^:]+",
    "logs:PutLogEvents": _GROUP + r":log-stream:[^:]+",
    "logs:DescribeLogStreams": _GROUP,
    "logs:DescribeLogGroups": r"\*",
}


def test_the_stack_key_lets_cloudwatch_logs_encrypt_the_flow_log_group() -> None:
    r = run("prod")
    _, group, _, _ = _flow_log_resources(r)
    key = named(of_type(r.resources, "aws:kms/key:Key"), "credentials-key")
    statement = next(st for st in json.loads(key.inputs["policy"])["Statement"] if "Logs" in st["Sid"])
    allowed = statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert group.state["arn"] in allowed


def test_dev_has_no_flow_logs_unless_switched_on() -> None:
    assert of_type(run("dev").resources, FLOW_LOG) == []
    r = run("dev", {"network.flowLogs": True, "network.flowLogTraffic": "ALL"})
    flow, group, _, _ = _flow_log_resources(r)
    assert flow.inputs["trafficType"] == "ALL"
    assert group.inputs["retentionInDays"] == 14


def test_prod_can_switch_flow_logs_off() -> None:
    r = run("prod", {"network.flowLogs": False})
    assert of_type(r.resources, FLOW_LOG) == []
    assert not [x for x in r.resources if x.name.startswith("flow-logs")]
