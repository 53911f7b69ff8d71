"""The VpcFunction component under Pulumi mocks, for the real dev and prod stack files: the restore
validation's and the rotation's functions moved under it without the engine replacing anything.

Before VpcFunction, RestoreValidation and Rotation declared the security group, role, role policy
attachment, inline policy, log group and function themselves. A deployed stack knows those resources by
URNs whose parent is that component; each moved child must carry an alias naming exactly that URN, and
keep its logical name and the physical names and arguments it was deployed with (the values below are
what the mocks saw before the move).
"""

from __future__ import annotations

import pytest

from components.vpc_function import VPC_EXECUTION_POLICY
from tests.unit.harness import Resource, RunResult, named, of_type, run

STACKS = ["dev", "prod"]
PROJECT_URN = "spike-land-db"
VPC_FUNCTION = "spike-land-db:index:VpcFunction"
SG = "aws:ec2/securityGroup:SecurityGroup"
ROLE = "aws:iam/role:Role"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
POLICY = "aws:iam/rolePolicy:RolePolicy"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
FUNCTION = "aws:lambda/function:Function"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"

# caller component name -> (its type, the function's name suffix, SG description, role name prefix suffix,
# timeout, whether its log group uses the stack key)
CALLERS = {
    "restore-validation": (
        "spike-land-db:index:RestoreValidation",
        "restore-validation",
        "restore validation function",
        "restore-val-",
        300,
        True,
    ),
    "rotation": (
        "spike-land-db:index:Rotation",
        "rotation",
        "credential rotation function",
        "rotation-",
        600,
        True,  # since issue 22: in place on a deployed stack (CloudWatch Logs AssociateKmsKey)
    ),
}


def old_urn(stack: str, caller_type: str, typ: str, name: str) -> str:
    """The URN a child had when the caller (a component under the stack) declared it itself."""
    return f"urn:pulumi:{stack}::{PROJECT_URN}::{caller_type}${typ}::{name}"


def children(r: RunResult, parent: Resource) -> list[Resource]:
    return [x for x in r.resources if x.parent == parent.urn]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_every_moved_child_keeps_its_urn_through_an_alias(stack: str, caller: str) -> None:
    r = run(stack)
    caller_type = CALLERS[caller][0]
    component = named(of_type(r.resources, VPC_FUNCTION), f"{caller}-fn")
    caller_resource = named(of_type(r.resources, caller_type), caller)
    assert component.parent == caller_resource.urn
    moved = {(x.typ, x.name): x for x in children(r, component)}
    fn = f"{caller}-fn"
    assert set(moved) == {
        (SG, fn),
        (ROLE, fn),
        (ATTACHMENT, f"{fn}-vpc"),
        (POLICY, fn),
        (LOG_GROUP, fn),
        (FUNCTION, fn),
    }
    registered = {x.urn for x in r.resources}
    for (typ, name), child in moved.items():
        was = old_urn(stack, caller_type, typ, name)
        assert was in child.aliases, (typ, name, child.aliases)
        assert child.urn != was and was not in registered  # moved, and nothing else took the old URN
        assert child.provider_name == "aws"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_the_moved_children_keep_their_physical_names_and_arguments(stack: str, caller: str) -> None:
    r = run(stack)
    _, function_suffix, sg_description, role_suffix, timeout, stack_key = CALLERS[caller]
    prefix = f"spike-land-{stack}"
    function_name = f"{prefix}-{function_suffix}"
    fn = f"{caller}-fn"
    sg = named(of_type(r.resources, SG), fn)
    assert sg.inputs["description"] == f"{prefix} {sg_description}"
    assert sg.inputs["tags"] == {"Name": function_name}
    assert sg.inputs["vpcId"] == r.outputs["vpc_id"]
    role = named(of_type(r.resources, ROLE), fn)
    assert role.inputs["namePrefix"] == f"{prefix}-{role_suffix}"
    assert '"lambda.amazonaws.com"' in role.inputs["assumeRolePolicy"]
    attachment = named(of_type(r.resources, ATTACHMENT), f"{fn}-vpc")
    assert attachment.inputs == {
        "role": role.state["name"],
        "policyArn": f"arn:aws:iam::aws:policy/{VPC_EXECUTION_POLICY}",
    }
    assert named(of_type(r.resources, POLICY), fn).inputs["role"] == role.state["name"]
    log_group = named(of_type(r.resources, LOG_GROUP), fn)
    assert log_group.inputs["name"] == f"/aws/lambda/{function_name}"
    assert log_group.inputs["retentionInDays"] == 90
    assert ("kmsKeyId" in log_group.inputs) is stack_key
    function = named(of_type(r.resources, FUNCTION), fn)
    assert function.inputs["name"] == function_name
    assert function.inputs["role"] == role.state["arn"]
    assert (function.inputs["timeout"], function.inputs["memorySize"]) == (timeout, 256)
    assert function.inputs["handler"] == "handler.handler" and function.inputs["architectures"] == ["arm64"]
    to_db = named(of_type(r.resources, EGRESS), f"{fn}-to-db")  # the caller's rule on the function's group
    assert function.inputs["vpcConfig"] == {
        "subnetIds": r.outputs["subnet_ids"],
        "securityGroupIds": [to_db.inputs["securityGroupId"]],
    }
    assert function.inputs["environment"]["variables"]  # each caller's own (tested with the caller)
