"""A Lambda function in the VPC's private subnets, as the restore validation and the rotation use one.

- Its own security group, with no rules: the caller admits it where it goes (`components/sg_rules.py`).
- An execution role assumable by Lambda only, with AWS's managed AWSLambdaVPCAccessExecutionRole (ENIs in
  the private subnets, its own log group), plus the caller's inline policy for what the function does.
- Its log group `/aws/lambda/<function name>` (retention, optionally the stack key), created before the
  function so Lambda does not create one that keeps logs forever.
- The function: python3.13 on arm64, `handler.handler`, the caller's code, environment, timeout and memory.

Both callers declared these resources themselves before this component existed. Each child keeps its
logical name (`<name>`, `<name>-vpc` for the role's attachment, where `<name>` is the caller's `<x>-fn`)
and its physical names, and carries an alias to the caller (`moved_from`) as its old parent, so the engine
matches it with the resource the deployed stack has instead of replacing it.

`code_archive` packages a handler with the region's RDS CA bundle and the locked dependencies (one build
serves both functions: lambdas/build.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pulumi
import pulumi_aws as aws

from components.pgbouncer import ca_bundle_url
from components.provider import account_of
from lambdas import build

VPC_EXECUTION_POLICY: Final = "service-role/AWSLambdaVPCAccessExecutionRole"
LOG_RETENTION_DAYS: Final = 90
ARCHITECTURE: Final = "arm64"
HANDLER: Final = "handler.handler"
ROLE_NAME_PREFIX_MAX: Final = 38  # IAM's name_prefix limit


def code_archive(
    handler: Path,
    region: str,
    deps: Path,
    extra: Mapping[str, pulumi.Asset | pulumi.Archive] | None = None,
) -> pulumi.Archive:
    """handler.py, the region's RDS CA bundle, `extra` and the locked dependencies in `deps` (the build's
    `deps/`, `lambdas.build.current_build()`)."""
    entries: dict[str, pulumi.Asset | pulumi.Archive] = {
        "handler.py": pulumi.FileAsset(str(handler)),
        "rds-ca-bundle.pem": pulumi.RemoteAsset(ca_bundle_url(region)),
        **(extra or {}),
    }
    for path in sorted(deps.iterdir()):
        if path.name in ("bin", "__pycache__"):
            continue
        entries[path.name] = pulumi.FileArchive(str(path)) if path.is_dir() else pulumi.FileAsset(str(path))
    return pulumi.AssetArchive(entries)


@dataclass(frozen=True)
class VpcFunctionArgs:
    provider: aws.Provider
    function_name: str  # the Lambda's name; also its log group's and its security group's Name tag
    description: str  # the function's
    security_group_description: str
    role_name_prefix: str  # cut to IAM's limit
    policy: pulumi.Input[str]  # the role's inline policy (JSON): what the function may do
    code: pulumi.Archive
    timeout: int
    memory_size: int
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    environment: Mapping[str, pulumi.Input[str]]
    # The component that declared these resources itself before this one existed: their old parent.
    moved_from: pulumi.Resource
    # The stack key (docs/verification.md: KMS on every log group); required, so no function forgets it.
    log_kms_key_arn: pulumi.Input[str]


class VpcFunction(pulumi.ComponentResource):
    security_group_id: pulumi.Output[str]
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: VpcFunctionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:VpcFunction", name, None, opts)
        child = pulumi.ResourceOptions(
            parent=self, provider=args.provider, aliases=[pulumi.Alias(parent=args.moved_from)]
        )
        partition, _ = account_of(args.provider)

        sg = aws.ec2.SecurityGroup(
            name,
            vpc_id=args.vpc_id,
            description=args.security_group_description,
            tags={"Name": args.function_name},
            opts=child,
        )
        role = aws.iam.Role(
            name,
            name_prefix=args.role_name_prefix[:ROLE_NAME_PREFIX_MAX],
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-vpc",
            role=role.name,
            policy_arn=f"arn:{partition}:iam::aws:policy/{VPC_EXECUTION_POLICY}",
            opts=child,
        )
        aws.iam.RolePolicy(name, role=role.id, policy=args.policy, opts=child)
        log_group = aws.cloudwatch.LogGroup(
            name,
            name=f"/aws/lambda/{args.function_name}",
            retention_in_days=LOG_RETENTION_DAYS,
            kms_key_id=args.log_kms_key_arn,
            opts=child,
        )
        function = aws.lambda_.Function(
            name,
            name=args.function_name,
            description=args.description,
            role=role.arn,
            runtime=build.RUNTIME,
            architectures=[ARCHITECTURE],
            handler=HANDLER,
            code=args.code,
            timeout=args.timeout,
            memory_size=args.memory_size,
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(
                subnet_ids=args.subnet_ids, security_group_ids=[sg.id]
            ),
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(args.environment)),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[log_group])),
        )

        self.security_group_id = sg.id
        self.function_name = function.name
        self.function_arn = function.arn
        self.log_group_name = log_group.name
        self.register_outputs(
            {
                "security_group_id": self.security_group_id,
                "function_arn": self.function_arn,
                "log_group_name": self.log_group_name,
            }
        )
