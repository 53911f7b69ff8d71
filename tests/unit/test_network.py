"""Network hygiene under mocks, for the real stack files: the default security group and VPC flow logs."""

from __future__ import annotations

import pytest

from tests.unit.harness import of_type, one, run

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
