"""Every AWS name the program generates fits its AWS limit, with the longest stack name settings allow.

A `name_prefix` / `bucket_prefix` becomes the prefix plus a 26-character unique suffix (terraform-plugin-sdk
`id.UniqueIDSuffixLength`, which pulumi-aws uses), so a prefix may be at most the name limit minus 26:
terraform-provider-aws validates an S3 `bucket_prefix` as `StringLenBetween(0, 63-id.UniqueIDSuffixLength)`
and an IAM role's as `roleNamePrefixMaxLen = 64 - id.UniqueIDSuffixLength`. The load balancer and target
group take a `name_prefix` of at most 6 characters. Name limits are AWS's (API references of each service).
"""

from __future__ import annotations

from typing import Any

import pytest

from dbctl.stackconfig.settings import STACK_NAME, STACK_NAME_MAX
from tests.unit.harness import Resource, run

UNIQUE_SUFFIX = 26
LONGEST = "longest-stack-name1"

# Resource type -> the longest name AWS accepts for it.
NAME_LIMITS: dict[str, int] = {
    "aws:s3/bucket:Bucket": 63,
    "aws:iam/role:Role": 64,
    "aws:iam/instanceProfile:InstanceProfile": 128,
    "aws:cloudwatch/eventRule:EventRule": 64,
    "aws:ec2/launchTemplate:LaunchTemplate": 128,
    "aws:ec2/securityGroup:SecurityGroup": 255,
    "aws:autoscaling/group:Group": 255,
    "aws:lb/targetGroup:TargetGroup": 32,
    "aws:lb/loadBalancer:LoadBalancer": 32,
    "aws:rds/parameterGroup:ParameterGroup": 255,
    "aws:rds/subnetGroup:SubnetGroup": 255,
    "aws:rds/eventSubscription:EventSubscription": 255,
    "aws:rds/instance:Instance": 63,  # DB instance identifier
    "aws:secretsmanager/secret:Secret": 512,
    "aws:kms/alias:Alias": 256,
    "aws:sns/topic:Topic": 256,
    "aws:cloudwatch/metricAlarm:MetricAlarm": 255,
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": 512,
    "aws:cloudwatch/dashboard:Dashboard": 255,
    "aws:cloudwatch/logGroup:LogGroup": 512,
    "aws:lambda/function:Function": 64,  # Lambda API reference, CreateFunction FunctionName
    "aws:backup/vault:Vault": 50,
    "aws:backup/plan:Plan": 50,
    "aws:backup/selection:Selection": 50,
    "aws:backup/restoreTestingPlan:RestoreTestingPlan": 50,
    "aws:backup/restoreTestingSelection:RestoreTestingSelection": 50,
    "aws:sqs/queue:Queue": 80,  # SQS API reference, CreateQueue QueueName
    # Image Builder API reference (CreateComponent, CreateImageRecipe, ...): name pattern of 1-128 chars.
    "aws:imagebuilder/component:Component": 128,
    "aws:imagebuilder/imageRecipe:ImageRecipe": 128,
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": 128,
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": 128,
    "aws:imagebuilder/imagePipeline:ImagePipeline": 128,
    "aws:kms/grant:Grant": 256,  # KMS API reference, CreateGrant Name
}
PREFIX_LIMITS = {"aws:lb/targetGroup:TargetGroup": 6, "aws:lb/loadBalancer:LoadBalancer": 6}
# Other inputs that name something, with their own limits.
OTHER_NAMES = {("aws:rds/instance:Instance", "finalSnapshotIdentifier"): 255}
NAME_INPUTS = ("name", "namePrefix", "bucketPrefix", "identifier", "dashboardName")


def generated_names(resources: list[Resource]) -> list[tuple[str, str, str, int]]:
    """(resource, input, value, limit) for every name the program sets, with the limit it must meet."""
    found = []
    for r in resources:
        if not r.typ.startswith("aws:"):
            continue
        inputs: dict[str, Any] = r.inputs
        for key in NAME_INPUTS:
            value = inputs.get(key)
            if not isinstance(value, str):
                continue
            assert r.typ in NAME_LIMITS, f"{r.typ} ({r.name}) sets {key}: add its AWS name limit here"
            limit = NAME_LIMITS[r.typ]
            if key.endswith("Prefix"):
                limit = PREFIX_LIMITS.get(r.typ, limit - UNIQUE_SUFFIX)
            found.append((r.name, key, value, limit))
        for (typ, key), limit in OTHER_NAMES.items():
            if r.typ == typ and isinstance(inputs.get(key), str):
                found.append((r.name, key, inputs[key], limit))
    return found


def test_the_longest_stack_name_is_one_settings_allow() -> None:
    assert len(LONGEST) == STACK_NAME_MAX and STACK_NAME.fullmatch(LONGEST)


@pytest.mark.parametrize(
    ("stack_file", "overrides"),
    [
        ("dev", {}),
        ("prod", {"profile": "prod"}),
        # Everything optional switched on: two replicas, DR copies, a pager.
        (
            "prod",
            {
                "profile": "prod",
                "replicaCount": 2,
                "pgbouncer.version": "1.25",
                "alarms.pagerHttpsEndpoint": "https://pager.example/x",
            },
        ),
    ],
)
def test_every_generated_name_fits_its_aws_limit(
    stack_file: str, overrides: dict[str, object], request: pytest.FixtureRequest
) -> None:
    if overrides.get("pgbouncer.version") == "1.25":
        request.getfixturevalue("pinned_pgbouncer_1_25")
    r = run(stack_file, overrides, stack_name=LONGEST)
    names = generated_names(r.resources)
    assert any(LONGEST in value for _, _, value, _ in names)  # the stack name really is in them
    too_long = [
        f"{res}.{key} = {value!r} ({len(value)} > {limit})"
        for res, key, value, limit in names
        if len(value) > limit
    ]
    assert too_long == []
