"""Restore validation: the function that checks what each restore test restored, and its wiring.

- EventBridge rule: `aws.backup` / `Restore Job State Change` with `detail.status` COMPLETED and
  `detail.restoreTestingPlanArn` this stack's plan -> the function (lambdas/restore_validation/handler.py),
  which re-reads the job and ignores any other plan's.
- Function: python3.13 on arm64, in the private subnets with its own security group; the database SG admits
  it on 5432 (a rule added here), and it reaches AWS APIs through the interface endpoints (HTTPS to the
  endpoints SG, admitted here too). AWS Backup and RDS API endpoints are added here when the network creates
  endpoints (the network's list serves the PgBouncer hosts and has neither).
- IAM: DescribeRestoreJob / PutRestoreValidationResult on "*" in the stack's region (`aws:RequestedRegion`:
  AWS Backup has no restore-job resource type to scope them to; the function checks the job's plan),
  DescribeDBInstances, GetSecretValue on
  the migrator's secret only, kms:Decrypt on the stack key only through Secrets Manager, VPC/logs basics.
- A FAILED validation reaches the alarm topic: a metric filter on the function's JSON result line
  (`validationStatus` FAILED, in the stack's namespace `SpikeLandDb/<stack>`) and an alarm on it; a second
  alarm on the function's Errors (crashed or timed out before it could report); a third on the
  dead-letter queue (an SQS queue, stack key), where Lambda puts an event still failing after its two
  asynchronous retries (`FunctionEventInvokeConfig` on-failure destination).
- Code: handler.py, the RDS CA bundle (fetched at deploy, as the PgBouncer tier does) and psycopg from
  lambdas/build.py's locked arm64 build (`code_archive`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pulumi
import pulumi_aws as aws

from components import vpc_function
from components.alarm_rules import custom_namespace
from components.kms import use_via, use_via_secrets_manager
from components.provider import account_of
from components.sg_rules import allow_tcp, https_out
from components.vpc_function import VpcFunction, VpcFunctionArgs
from dbctl.core.names import POSTGRES_PORT
from dbctl.stackconfig.settings import StackSettings
from lambdas import build

HTTPS: Final = 443
API_ENDPOINT_SERVICES: Final = ("backup", "rds")
TIMEOUT_S: Final = 300
ASYNC_RETRIES: Final = 2  # Lambda's own for an asynchronous invocation (EventBridge's), then the queue
DEAD_LETTER_RETENTION_S: Final = 14 * 24 * 3600  # SQS's longest
MEMORY_MB: Final = 256
FAILED_METRIC: Final = "RestoreValidationFailed"
# Actions without resource-level permissions (no restore-job ARN type): granted on "*" in the stack's region.
RESTORE_JOB_ACTIONS: Final = ("backup:DescribeRestoreJob", "backup:PutRestoreValidationResult")


def completed_restore_pattern(plan_arn: str) -> dict[str, object]:
    return {
        "source": ["aws.backup"],
        "detail-type": ["Restore Job State Change"],
        "detail": {"status": ["COMPLETED"], "restoreTestingPlanArn": [plan_arn]},
    }


def code_archive(region: str, deps: Path) -> pulumi.Archive:
    """handler.py, the region's RDS CA bundle and the locked dependencies."""
    return vpc_function.code_archive(build.HANDLER, region, deps)


@dataclass(frozen=True)
class RestoreValidationArgs:
    settings: StackSettings
    provider: aws.Provider
    code: pulumi.Archive
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    db_security_group_id: pulumi.Input[str]
    endpoints_security_group_id: pulumi.Input[str] | None  # None: the VPC gives egress another way
    restore_testing_plan_arn: pulumi.Input[str]
    migrator_secret_arn: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    source_address: pulumi.Input[str]
    source_port: pulumi.Input[int]
    alarm_topic_arn: pulumi.Input[str]


class RestoreValidation(pulumi.ComponentResource):
    function_arn: pulumi.Output[str]
    rule_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: RestoreValidationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spike-land-db:index:RestoreValidation", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        partition, account = account_of(args.provider)
        prefix = f"spike-land-{s.stack}"

        # An event the function still fails on after Lambda's retries (it crashed, timed out, or could not
        # report) lands here instead of vanishing; an alarm says so. Lambda sends it with the function's
        # role, encrypted with the stack key through SQS.
        dead_letters = aws.sqs.Queue(
            f"{name}-dead-letters",
            name=f"{prefix}-restore-validation-dlq",
            kms_master_key_id=args.kms_key_arn,
            message_retention_seconds=DEAD_LETTER_RETENTION_S,
            opts=child,
        )
        function = VpcFunction(
            f"{name}-fn",
            VpcFunctionArgs(
                provider=args.provider,
                function_name=f"{prefix}-restore-validation",
                description=f"{prefix}: checks each restore test's instance against the source",
                security_group_description=f"{prefix} restore validation function",
                role_name_prefix=f"{prefix}-restore-val-",
                policy=pulumi.Output.json_dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                # AWS Backup defines no restore-job resource type: these two actions take
                                # only "*" (Service Authorization Reference). The region condition bounds
                                # them; the function checks each job's plan itself.
                                "Sid": "RestoreJobs",
                                "Effect": "Allow",
                                "Action": list(RESTORE_JOB_ACTIONS),
                                "Resource": "*",
                                "Condition": {"StringEquals": {"aws:RequestedRegion": s.region}},
                            },
                            {
                                "Sid": "RestoredInstance",
                                "Effect": "Allow",
                                "Action": ["rds:DescribeDBInstances"],
                                "Resource": f"arn:{partition}:rds:{s.region}:{account}:db:*",
                            },
                            {
                                "Sid": "MigratorSecret",
                                "Effect": "Allow",
                                "Action": ["secretsmanager:GetSecretValue"],
                                "Resource": args.migrator_secret_arn,
                            },
                            use_via_secrets_manager(args.kms_key_arn, s.region, ["kms:Decrypt"]),
                            {
                                "Sid": "DeadLetters",
                                "Effect": "Allow",
                                "Action": ["sqs:SendMessage"],
                                "Resource": dead_letters.arn,
                            },
                            use_via(
                                "sqs",
                                args.kms_key_arn,
                                s.region,
                                ["kms:GenerateDataKey", "kms:Decrypt"],
                                "DeadLetterKeyViaSqs",
                            ),
                        ],
                    }
                ),
                code=args.code,
                timeout=TIMEOUT_S,
                memory_size=MEMORY_MB,
                vpc_id=args.vpc_id,
                subnet_ids=args.subnet_ids,
                environment={
                    "RESTORE_TESTING_PLAN_ARN": args.restore_testing_plan_arn,
                    "CREDENTIALS_SECRET_ARN": args.migrator_secret_arn,
                    "SOURCE_HOST": args.source_address,
                    "SOURCE_PORT": pulumi.Output.from_input(args.source_port).apply(str),
                    "DATABASE_NAME": s.database_name,
                    "MIN_ROW_FRACTION": str(s.backups.restore_validation_min_fraction),
                },
                moved_from=self,
                # What it logs names tables and counts: the stack key, as the rest.
                log_kms_key_arn=args.kms_key_arn,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        sg_id = function.security_group_id
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-async",
            function_name=function.function_name,
            maximum_retry_attempts=ASYNC_RETRIES,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=dead_letters.arn
                )
            ),
            # The role's SendMessage must exist first (Lambda checks the destination's permissions).
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[function])),
        )

        allow_tcp(
            port=POSTGRES_PORT,
            source=sg_id,
            target=args.db_security_group_id,
            egress=(
                f"{name}-fn-to-db",
                "the source primary and the restored instance (both in the database SG)",
            ),
            ingress=(f"{name}-db-from-fn", "restore validation function"),
            opts=child,
        )
        if args.endpoints_security_group_id is not None:
            allow_tcp(
                port=HTTPS,
                source=sg_id,
                target=args.endpoints_security_group_id,
                egress=(f"{name}-fn-to-endpoints", "AWS APIs through the interface endpoints"),
                ingress=(f"{name}-endpoints-from-fn", "restore validation function"),
                opts=child,
            )
            subnets = pulumi.Output.from_input(args.subnet_ids)
            endpoint_subnets = (
                subnets if s.network.endpoints_in_every_az else subnets.apply(lambda ids: ids[:1])
            )
            for service in API_ENDPOINT_SERVICES:
                aws.ec2.VpcEndpoint(
                    f"{name}-{service}",
                    vpc_id=args.vpc_id,
                    service_name=f"com.amazonaws.{s.region}.{service}",
                    vpc_endpoint_type="Interface",
                    subnet_ids=endpoint_subnets,
                    security_group_ids=[args.endpoints_security_group_id],
                    private_dns_enabled=True,
                    tags={"Name": f"{prefix}-{service}"},
                    opts=child,
                )
        else:
            https_out(
                f"{name}-fn-https",
                source=sg_id,
                description="AWS APIs through the VPC egress (NAT or endpoints)",
                opts=child,
            )

        rule = aws.cloudwatch.EventRule(
            f"{name}-completed",
            name_prefix=f"{prefix}-rvalid-",  # EventBridge: 64 - 26 for the suffix
            description=f"{prefix}: restore tests that completed -> the validation function",
            event_pattern=pulumi.Output.from_input(args.restore_testing_plan_arn).apply(
                lambda arn: json.dumps(completed_restore_pattern(arn))
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(f"{name}-completed", rule=rule.name, arn=function.function_arn, opts=child)
        aws.lambda_.Permission(
            f"{name}-from-events",
            action="lambda:InvokeFunction",
            function=function.function_name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )

        aws.cloudwatch.LogMetricFilter(
            f"{name}-failed",
            log_group_name=function.log_group_name,
            pattern='{ $.validationStatus = "FAILED" }',
            metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                # The stack's own namespace: a constant one would be shared by every stack in the account
                # (dev's failures firing prod's alarm), as the pool and slow-query metrics are not.
                name=FAILED_METRIC,
                namespace=custom_namespace(s.stack),
                value="1",
                unit="Count",
            ),
            opts=child,
        )

        def alarm(
            key: str,
            what: str,
            namespace: str,
            metric: str,
            dimensions: dict[str, pulumi.Input[str]],
            statistic: str = "Sum",
        ) -> None:
            aws.cloudwatch.MetricAlarm(
                f"{name}-{key}",
                name=f"{prefix}-restore-validation-{key}",
                alarm_description=f"{prefix}: {what}",
                namespace=namespace,
                metric_name=metric,
                dimensions=dimensions or None,
                statistic=statistic,
                period=300,
                evaluation_periods=1,
                threshold=1,
                comparison_operator="GreaterThanOrEqualToThreshold",
                treat_missing_data="notBreaching",
                alarm_actions=[args.alarm_topic_arn],
                opts=child,
            )

        alarm(
            "failed",
            "a restore test's validation FAILED (the restore job says why)",
            custom_namespace(s.stack),
            FAILED_METRIC,
            {},
        )
        alarm(
            "errors",
            "the restore validation function crashed or timed out before reporting",
            "AWS/Lambda",
            "Errors",
            {"FunctionName": function.function_name},
        )
        alarm(
            "dead-letters",
            "a restore-test event the function failed on after its retries is in the dead-letter queue",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": dead_letters.name},
            statistic="Maximum",
        )

        self.function_arn = function.function_arn
        self.rule_arn = rule.arn
        self.register_outputs({"function_arn": self.function_arn, "rule_arn": self.rule_arn})
