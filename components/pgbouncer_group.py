"""The PgBouncer hosts' Auto Scaling group: how many, how they are replaced, how a refresh rolls them.

- A fixed count (`pgbouncer.hostCount`) across the private subnets, judged by the NLB's health
  (`health_check_type = ELB`): a host whose PgBouncer stops answering is replaced.
- A launch lifecycle hook: a new host waits in Pending:Wait until its bootstrap (the user data) completes
  the hook: CONTINUE once PgBouncer runs, ABANDON on any failure (the default on timeout), and the group
  terminates it before it takes traffic.
- Instance refresh on a launch-template change: surge (max_healthy_percentage 200, min 100, max_size twice
  the count; the pool budget counts those hosts: dbctl.pgbouncer.capacity.hosts_at_surge), and roll back
  to the previous numbered template version when it fails.
- `pulumi up` waits for hostCount healthy targets (create and every update of the group) and fails after
  WAIT_FOR_CAPACITY_TIMEOUT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from dbctl.pgbouncer.capacity import REFRESH_MAX_HEALTHY_PERCENTAGE as REFRESH_MAX_HEALTHY
from dbctl.pgbouncer.capacity import hosts_at_surge
from dbctl.stackconfig.settings import StackSettings

# The boot-time budget (docs/pgbouncer.md, "Boot time"): launch to a healthy NLB target in about 80 s,
# estimated (only PgBouncer's start is measured, here). Up to the launch hook's completion (instance start,
# cloud-init, CA bundle, config, auth file, PgBouncer start, the hook call): about 40 s. A host has
# LAUNCH_HOOK_TIMEOUT for that, then the hook's default result abandons it (the ASG terminates it and
# launches another).
LAUNCH_HOOK = "spike-pgbouncer-bootstrap"
LAUNCH_HOOK_TIMEOUT = 300
# From InService (the hook completed) to a healthy target: registration and two 10 s checks, about 40 s.
# The grace period starts at InService (Auto Scaling user guide, "health check grace period": with a launch
# hook it may even be 0); we allow twice the estimate so a slow registration is not a replacement.
HEALTH_CHECK_GRACE = 90
# `pulumi up` waits this long for host_count healthy targets behind the NLB, then fails (instead of
# succeeding while the ASG replaces hosts whose bootstrap fails, in a loop): a host that uses all of its
# hook timeout and grace period, and one replacement that does too (2 x 390 s), rounded up.
WAIT_FOR_CAPACITY_TIMEOUT = "15m"


def group_name(stack: str) -> str:
    """The hosts' Auto Scaling group: a fixed name, so the user data can complete its launch hook (the
    group's ARN ends in it, which the instance role's CompleteLifecycleAction names)."""
    return f"spike-pgb-{stack}-hosts"


def host_group(
    name: str,
    s: StackSettings,
    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]],
    template: aws.ec2.LaunchTemplate,
    target_group_arn: pulumi.Input[str],
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.autoscaling.Group:
    """The group, named group_name(stack) (the user data completes its hook by that name)."""
    return aws.autoscaling.Group(
        name,
        name=group_name(s.stack),
        vpc_zone_identifiers=subnet_ids,
        desired_capacity=s.pgbouncer.host_count,
        min_size=s.pgbouncer.host_count,
        max_size=hosts_at_surge(s.pgbouncer.host_count, REFRESH_MAX_HEALTHY),
        health_check_type="ELB",
        health_check_grace_period=HEALTH_CHECK_GRACE,
        target_group_arns=[target_group_arn],
        # Create and update wait until every host passes the NLB's health check: a tier that never
        # comes up fails the deploy. The reason is on the host's console (docs/pgbouncer.md).
        wait_for_elb_capacity=s.pgbouncer.host_count,
        wait_for_capacity_timeout=WAIT_FOR_CAPACITY_TIMEOUT,
        launch_template=aws.autoscaling.GroupLaunchTemplateArgs(
            id=template.id, version=template.latest_version.apply(str)
        ),
        # A new host stays Pending:Wait until its bootstrap completes this hook: CONTINUE once PgBouncer
        # runs; ABANDON (the default on timeout) on any failure, and the group terminates it unused.
        initial_lifecycle_hooks=[
            aws.autoscaling.GroupInitialLifecycleHookArgs(
                name=LAUNCH_HOOK,
                lifecycle_transition="autoscaling:EC2_INSTANCE_LAUNCHING",
                default_result="ABANDON",
                heartbeat_timeout=LAUNCH_HOOK_TIMEOUT,
            )
        ],
        # Surge, never shrink: each replacement is healthy before the host it replaces goes (dev's single
        # host keeps the pooled endpoint up), and a refresh that cannot get there rolls back to the
        # previous launch template version (numbered, not $Latest: rollback needs that).
        instance_refresh=aws.autoscaling.GroupInstanceRefreshArgs(
            strategy="Rolling",
            preferences=aws.autoscaling.GroupInstanceRefreshPreferencesArgs(
                min_healthy_percentage=100,
                max_healthy_percentage=REFRESH_MAX_HEALTHY,
                auto_rollback=True,
                instance_warmup=str(HEALTH_CHECK_GRACE),
                skip_matching=False,
            ),
        ),
        tags=[
            aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=False) for k, v in tags.items()
        ],
        opts=opts,
    )


# What a refresh that did not reach healthy sends (Auto Scaling user guide, "Instance refresh example events
# and patterns"): a failed refresh, and each step of its rollback (auto_rollback). Rollback Succeeded is
# still a failure of the change: the hosts run the previous configuration. And a host the group could not
# launch at all (EventBridge events reference, "Amazon EC2 Auto Scaling events": EC2 Instance Launch
# Unsuccessful), such as an AMI whose key the service-linked role cannot use: the group retries it, and
# neither the NLB alarm nor `pulumi up` says why.
REFRESH_FAILURE_DETAIL_TYPES = (
    "EC2 Auto Scaling Instance Refresh Failed",
    "EC2 Auto Scaling Instance Refresh Rollback Started",
    "EC2 Auto Scaling Instance Refresh Rollback Succeeded",
    "EC2 Auto Scaling Instance Refresh Rollback Failed",
    "EC2 Instance Launch Unsuccessful",
)


def refresh_failure_event_pattern(stack: str) -> dict[str, object]:
    """The EventBridge pattern for this stack's hosts' refresh failures, rollbacks and failed launches: the
    alarm topic receives them (components/alarms.py routes them, its topic policy admits that rule only)."""
    return {
        "source": ["aws.autoscaling"],
        "detail-type": list(REFRESH_FAILURE_DETAIL_TYPES),
        "detail": {"AutoScalingGroupName": [group_name(stack)]},
    }
