"""Alarms: one encrypted SNS topic that wakes a human, the alarms from `alarm_rules`, events, a dashboard.

- Topic: encrypted with a KMS key of its own (not the stack's data key): CloudWatch, EventBridge and RDS
  event notifications publish to it as AWS services, so the key policy must let those service principals
  use it; a dedicated key keeps that grant away from the key that protects the data and secrets. The
  topic policy keeps the account owner's rights and lets exactly those services publish, scoped to this
  account (and to this stack's EventBridge rule).
- Subscriptions: every address in `alarms.emails` (each must confirm once: docs/operations.md) and, when
  set, `alarms.pagerHttpsEndpoint` (kept secret in state: such URLs usually carry a routing key).
- Metric alarms: `alarm_rules.alarm_specs(settings)`, each with the topic as ALARM and OK action. The
  PgBouncer alarms need the NLB and target group ARN suffixes; without them they are left out (logged).
- Slow queries: a metric filter on the primary's exported `postgresql` log group (declared, with retention
  and KMS, by `components/database.py` before the instance exists).
- RDS event subscription for the primary and replicas; an EventBridge rule for AWS Backup job, copy and
  restore (including restore-test) failures; one for the PgBouncer hosts' group: an instance refresh that
  failed or rolled back, and a launch that failed (`pgbouncer_group.refresh_failure_event_pattern`).
- A CloudWatch dashboard per stack (`alarm_rules.dashboard_body`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import pulumi
import pulumi_aws as aws

from components import alarm_rules
from components.kms import key_policy
from components.pgbouncer_group import refresh_failure_event_pattern
from components.provider import account_of
from dbctl.stackconfig import slow_query
from dbctl.stackconfig.settings import StackSettings

RDS_EVENT_CATEGORIES: Final = ("backup", "failure", "failover", "low storage", "maintenance", "notification")
BACKUP_FAILED_STATES: Final = ("FAILED", "ABORTED", "EXPIRED")
BACKUP_EVENT_TYPES: Final = ("Backup Job State Change", "Copy Job State Change", "Restore Job State Change")
# Service principals that publish to the topic (and so must be able to use its key).
PUBLISHERS: Final = ("cloudwatch.amazonaws.com", "events.amazonaws.com", "events.rds.amazonaws.com")


def backup_failure_event_pattern() -> dict[str, object]:
    """EventBridge pattern: any AWS Backup backup, copy or restore (restore tests too) that did not finish.

    Backup and copy job events carry `detail.state`, restore job events `detail.status` (as in the AWS Backup
    API), hence the `$or`.
    """
    return {
        "source": ["aws.backup"],
        "detail-type": list(BACKUP_EVENT_TYPES),
        "$or": [
            {"detail": {"state": list(BACKUP_FAILED_STATES)}},
            {"detail": {"status": list(BACKUP_FAILED_STATES)}},
        ],
    }


@dataclass(frozen=True)
class AlarmsArgs:
    settings: StackSettings
    provider: aws.Provider
    primary_identifier: pulumi.Input[str]
    replica_identifiers: Sequence[pulumi.Input[str]] = field(default_factory=tuple)
    # From the PgBouncer tier; None leaves its two target-health alarms out.
    nlb_arn_suffix: pulumi.Input[str] | None = None
    target_group_arn_suffix: pulumi.Input[str] | None = None


class Alarms(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]
    alarm_names: list[pulumi.Output[str]]
    dashboard_name: pulumi.Output[str]

    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:Alarms", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        partition, account = account_of(args.provider)
        prefix = f"spike-land-{s.stack}"
        if len(args.replica_identifiers) != s.replica_count:
            raise ValueError(
                f"Alarms got {len(args.replica_identifiers)} replica identifiers for replicaCount "
                f"{s.replica_count}; pass database.replicas' identifiers"
            )

        key = aws.kms.Key(
            f"{name}-topic-key",
            description=f"{prefix}: the database alarm topic (SNS server-side encryption)",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=key_policy(
                partition,
                account,
                {
                    # Publishing to an encrypted topic needs a data key; the topic policy decides
                    # what these services may publish where.
                    "Sid": "AlarmPublishers",
                    "Effect": "Allow",
                    "Principal": {"Service": list(PUBLISHERS)},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                },
            ),
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-topic-key", name=f"alias/{prefix}-db-alarms", target_key_id=key.key_id, opts=child
        )

        topic = aws.sns.Topic(
            f"{name}-topic", name=f"{prefix}-db-alarms", kms_master_key_id=key.arn, opts=child
        )
        self.topic_arn = topic.arn

        backup_rule = aws.cloudwatch.EventRule(
            f"{name}-backup-failures",
            # EventBridge rule names end at 64 characters; the provider appends 26 to a prefix.
            name_prefix=f"{prefix}-backup-",
            description=f"{prefix}: AWS Backup backup, copy and restore (test) jobs that failed",
            event_pattern=json.dumps(backup_failure_event_pattern()),
            opts=child,
        )

        # A PgBouncer refresh that cannot reach healthy (it fails, or rolls back) and a host that cannot
        # launch: `pulumi up` may have returned already (a rollback finishes later), so the topic says so.
        refresh_rule = aws.cloudwatch.EventRule(
            f"{name}-pgbouncer-refresh",
            name_prefix=f"{prefix}-pgbref-",  # 64 - 26 characters, as the backup rule's
            description=f"{prefix}: PgBouncer host refresh failed or rolled back, or a host failed to launch",
            event_pattern=json.dumps(refresh_failure_event_pattern(s.stack)),
            opts=child,
        )

        source_ids: list[pulumi.Input[str]] = [args.primary_identifier, *args.replica_identifiers]
        policy = aws.sns.TopicPolicy(
            f"{name}-topic",
            arn=topic.arn,
            policy=pulumi.Output.all(
                topic.arn, backup_rule.arn, refresh_rule.arn, pulumi.Output.all(*source_ids)
            ).apply(
                lambda a: json.dumps(
                    _topic_policy(
                        a[0], EventRules(backup=a[1], refresh=a[2]), partition, account, s.region, a[3]
                    )
                )
            ),
            opts=child,
        )
        after_policy = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[policy]))

        for i, email in enumerate(s.alarms.emails):
            aws.sns.TopicSubscription(
                f"{name}-email-{i}", topic=topic.arn, protocol="email", endpoint=email, opts=child
            )
        if s.alarms.pager_https_endpoint is not None:
            aws.sns.TopicSubscription(
                f"{name}-pager",
                topic=topic.arn,
                protocol="https",
                endpoint=pulumi.Output.secret(s.alarms.pager_https_endpoint),
                opts=child,
            )

        aws.cloudwatch.EventTarget(
            f"{name}-backup-failures", rule=backup_rule.name, arn=topic.arn, opts=after_policy
        )
        aws.cloudwatch.EventTarget(
            f"{name}-pgbouncer-refresh", rule=refresh_rule.name, arn=topic.arn, opts=after_policy
        )

        aws.rds.EventSubscription(
            f"{name}-rds-events",
            name_prefix=f"{prefix}-db-",
            sns_topic=topic.arn,
            source_type="db-instance",
            source_ids=source_ids,
            event_categories=list(RDS_EVENT_CATEGORIES),
            enabled=True,
            opts=after_policy,
        )

        aws.cloudwatch.LogMetricFilter(
            f"{name}-slow-queries",
            name=f"{prefix}-slow-queries",
            log_group_name=pulumi.Output.concat("/aws/rds/instance/", args.primary_identifier, "/postgresql"),
            pattern=slow_query.SLOW_QUERY_FILTER_PATTERN,
            metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                name=alarm_rules.SLOW_QUERY_METRIC,
                namespace=alarm_rules.custom_namespace(s.stack),
                value="1",
                unit="Count",
            ),
            opts=child,
        )

        pgbouncer_dims: dict[str, pulumi.Input[str]] | None = None
        if args.nlb_arn_suffix is not None and args.target_group_arn_suffix is not None:
            pgbouncer_dims = {
                "LoadBalancer": args.nlb_arn_suffix,
                "TargetGroup": args.target_group_arn_suffix,
            }

        def dimensions(target: str) -> dict[str, pulumi.Input[str]] | None:
            if target.startswith(alarm_rules.POOL_TARGET_PREFIX):  # hosts/pool_metrics.py's (Stack, Pool)
                return {"Stack": s.stack, "Pool": target.removeprefix(alarm_rules.POOL_TARGET_PREFIX)}
            if target == "primary":
                return {"DBInstanceIdentifier": args.primary_identifier}
            if target.startswith("replica-"):
                return {"DBInstanceIdentifier": args.replica_identifiers[int(target.split("-")[1]) - 1]}
            return pgbouncer_dims

        alarms: list[aws.cloudwatch.MetricAlarm] = []
        for spec in alarm_rules.alarm_specs(s):
            if spec.key == "slow-queries":
                dims = None  # the log metric has no dimensions
            else:
                dims = dimensions(spec.target)
                if dims is None:
                    pulumi.log.warn(f"{spec.key}: no NLB/target group given, alarm left out", resource=self)
                    continue
            alarms.append(
                aws.cloudwatch.MetricAlarm(
                    f"{name}-{spec.key}",
                    name=f"{prefix}-{spec.key}",
                    alarm_description=spec.description,
                    namespace=spec.namespace,
                    metric_name=spec.metric,
                    dimensions=dims,
                    statistic=spec.statistic,
                    comparison_operator=spec.comparison,
                    threshold=spec.threshold,
                    period=spec.period,
                    evaluation_periods=spec.evaluation_periods,
                    datapoints_to_alarm=spec.datapoints_to_alarm,
                    treat_missing_data=spec.treat_missing_data,
                    alarm_actions=[topic.arn],
                    ok_actions=[topic.arn],
                    opts=after_policy,
                )
            )
        self.alarm_names = [a.name for a in alarms]

        dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=f"{prefix}-db",
            dashboard_body=pulumi.Output.all(
                primary=args.primary_identifier,
                replicas=pulumi.Output.all(*args.replica_identifiers),
                nlb=args.nlb_arn_suffix,
                tg=args.target_group_arn_suffix,
                arns=pulumi.Output.all(*[a.arn for a in alarms]),
            ).apply(
                lambda v: json.dumps(
                    alarm_rules.dashboard_body(
                        s,
                        primary_id=v["primary"],
                        replica_ids=v["replicas"],
                        nlb_arn_suffix=v["nlb"],
                        target_group_arn_suffix=v["tg"],
                        alarm_arns=v["arns"],
                    )
                )
            ),
            opts=child,
        )
        self.dashboard_name = dashboard.dashboard_name

        self.register_outputs({"topic_arn": self.topic_arn, "dashboard_name": self.dashboard_name})


def db_instance_arn(partition: str, region: str, account: str, identifier: str) -> str:
    """An RDS DB instance's ARN: what RDS sends as aws:SourceArn when it publishes one of its events."""
    return f"arn:{partition}:rds:{region}:{account}:db:{identifier}"


@dataclass(frozen=True)
class EventRules:
    """The ARNs of this stack's EventBridge rules that publish to the topic."""

    backup: str
    refresh: str


def _topic_policy(
    topic_arn: str,
    rules: EventRules,
    partition: str,
    account: str,
    region: str,
    db_identifiers: Sequence[str],
) -> dict[str, object]:
    """The owner keeps full control; CloudWatch alarms, RDS events and our two EventBridge rules may publish.

    RDS publishes an event notification with aws:SourceArn set to the resource that raised the event (the
    RDS user guide's "Granting permissions to publish notifications to an Amazon SNS topic": `...:db:<id>`),
    not the event subscription's ARN, so the statement admits exactly this stack's DB instances.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Owner",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
                "Action": [
                    "SNS:GetTopicAttributes",
                    "SNS:SetTopicAttributes",
                    "SNS:AddPermission",
                    "SNS:RemovePermission",
                    "SNS:DeleteTopic",
                    "SNS:Subscribe",
                    "SNS:ListSubscriptionsByTopic",
                    "SNS:Publish",
                ],
                "Resource": topic_arn,
            },
            {
                "Sid": "CloudWatchAlarms",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": "SNS:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": f"arn:{partition}:cloudwatch:{region}:{account}:alarm:*"},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            },
            {
                "Sid": "RdsEventSubscriptions",
                "Effect": "Allow",
                "Principal": {"Service": "events.rds.amazonaws.com"},
                "Action": "SNS:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "ArnEquals": {
                        "aws:SourceArn": [
                            db_instance_arn(partition, region, account, i) for i in db_identifiers
                        ]
                    },
                    "StringEquals": {"aws:SourceAccount": account},
                },
            },
            _rule_may_publish("BackupFailureRule", topic_arn, rules.backup),
            _rule_may_publish("PgBouncerRefreshFailureRule", topic_arn, rules.refresh),
        ],
    }


def _rule_may_publish(sid: str, topic_arn: str, rule_arn: str) -> dict[str, object]:
    """EventBridge may publish to the topic for this one rule (it sends the rule's ARN as aws:SourceArn)."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "SNS:Publish",
        "Resource": topic_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }
