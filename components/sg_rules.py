"""One TCP port from one security group to another: the source's egress rule and the target's ingress rule;
and HTTPS from a group to anywhere (`https_out`).

Both halves are needed (every group here starts with no egress), so they are declared together. Each half
keeps its own resource name and description, as the callers had them, so their URNs do not change.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

HTTPS = 443


def allow_tcp(
    *,
    port: int,
    source: pulumi.Input[str],
    target: pulumi.Input[str],
    egress: tuple[str, str],
    ingress: tuple[str, str],
    opts: pulumi.ResourceOptions,
) -> list[pulumi.Resource]:
    """`egress` and `ingress` are (resource name, rule description) for the source's and the target's rule.
    Returns both rules (something that must wait until the path is open depends on them)."""
    (egress_name, egress_description), (ingress_name, ingress_description) = egress, ingress
    out = aws.vpc.SecurityGroupEgressRule(
        egress_name,
        security_group_id=source,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        referenced_security_group_id=target,
        description=egress_description,
        opts=opts,
    )
    into = aws.vpc.SecurityGroupIngressRule(
        ingress_name,
        security_group_id=target,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        referenced_security_group_id=source,
        description=ingress_description,
        opts=opts,
    )
    return [out, into]


def https_out(
    name: str, *, source: pulumi.Input[str], description: str, opts: pulumi.ResourceOptions
) -> list[pulumi.Resource]:
    """HTTPS from a group to anywhere: AWS APIs through the VPC's own egress (NAT or endpoints), for an
    adopted VPC whose interface endpoints this stack does not manage."""
    rule = aws.vpc.SecurityGroupEgressRule(
        name,
        security_group_id=source,
        ip_protocol="tcp",
        from_port=HTTPS,
        to_port=HTTPS,
        cidr_ipv4="0.0.0.0/0",
        description=description,
        opts=opts,
    )
    return [rule]
