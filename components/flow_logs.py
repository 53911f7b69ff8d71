"""VPC flow logs: rejected traffic (or all of it) to a KMS-encrypted CloudWatch Logs group with the stack's
retention, delivered by a role only the flow-logs service of this account may assume.

On when `network.flowLogs` is true (prod's default), for the created or the adopted VPC. A rejected flow is
what a security group or network ACL dropped: a misconfigured app, or something probing the database tier.
The group is encrypted with the stack's KMS key, whose policy lets CloudWatch Logs use it for exactly this
group (`components/credentials.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.provider import account_of
from dbctl.stackconfig.settings import StackSettings

# Aggregate flows over 10 minutes (the default, and the cheaper of the two intervals EC2 offers).
AGGREGATION_SECONDS = 600


def flow_log_group_name(stack: str) -> str:
    """The flow-log group of a stack (the KMS key policy names it before the group exists)."""
    return f"/spike-land/{stack}/vpc-flow-logs"


@dataclass(frozen=True)
class FlowLogsArgs:
    settings: StackSettings
    provider: aws.Provider
    vpc_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]


class FlowLogs(pulumi.ComponentResource):
    log_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: FlowLogsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:FlowLogs", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        partition, account = account_of(args.provider)
        prefix = f"spike-land-{s.stack}"

        group = aws.cloudwatch.LogGroup(
            f"{name}-group",
            name=flow_log_group_name(s.stack),
            retention_in_days=s.log_retention_days,
            kms_key_id=args.kms_key_arn,
            opts=child,
        )
        flow_log_arns = f"arn:{partition}:ec2:{s.region}:{account}:vpc-flow-log/*"
        # The VPC user guide's trust policy for flow-log delivery, with its confused-deputy conditions.
        role = aws.iam.Role(
            f"{name}-delivery",
            description=f"{prefix}: VPC flow logs deliver to {flow_log_group_name(s.stack)}",
            assume_role_policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                            "Condition": {
                                "StringEquals": {"aws:SourceAccount": account},
                                "ArnLike": {"aws:SourceArn": flow_log_arns},
                            },
                        }
                    ],
                }
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-delivery",
            role=role.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        # One statement per resource type the actions take (Service Authorization
                        # Reference, CloudWatch Logs): CreateLogStream and PutLogEvents a log-stream,
                        # DescribeLogStreams a log-group. `group.arn` has no ":*" (the provider strips it).
                        {
                            "Sid": "WriteFlowLogStreams",
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": pulumi.Output.concat(group.arn, ":log-stream:*"),
                        },
                        {
                            "Sid": "ListFlowLogStreams",
                            "Effect": "Allow",
                            "Action": ["logs:DescribeLogStreams"],
                            "Resource": group.arn,
                        },
                        {
                            # Listing groups has no resource-level permission.
                            "Sid": "FindTheGroup",
                            "Effect": "Allow",
                            "Action": ["logs:DescribeLogGroups"],
                            "Resource": "*",
                        },
                    ],
                }
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-vpc",
            vpc_id=args.vpc_id,
            traffic_type=s.network.flow_log_traffic,
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=AGGREGATION_SECONDS,
            tags={"Name": f"{prefix}-vpc"},
            opts=child,
        )
        self.log_group_name = group.name
        self.register_outputs({"log_group_name": group.name})
