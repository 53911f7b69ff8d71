"""The Alarms component under Pulumi mocks, for the real dev and prod stack files."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from components import alarm_rules
from components.alarms import BACKUP_FAILED_STATES, RDS_EVENT_CATEGORIES
from components.pgbouncer_group import group_name, refresh_failure_event_pattern
from dbctl.pgbouncer import capacity
from dbctl.stackconfig import slow_query
from tests.unit.harness import Resource, RunResult, named, of_type, one, run, settings_for

STACKS = ["dev", "prod"]
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
GIB = 1024**3


@cache
def result(stack: str, overrides: tuple[tuple[str, object], ...] = ()) -> RunResult:
    return run(stack, dict(overrides))


def alarms(r: RunResult) -> dict[str, Resource]:
    """The Alarms component's alarms (restore validation has its own two: test_restore_validation.py)."""
    return {
        a.name.removeprefix("alarms-"): a for a in of_type(r.resources, ALARM) if a.name.startswith("alarms-")
    }


def instance(r: RunResult, name: str) -> Resource:
    return named(of_type(r.resources, "aws:rds/instance:Instance"), name)


def topic(r: RunResult) -> Resource:
    return one(r.resources, "aws:sns/topic:Topic")


def topic_policy(r: RunResult) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(one(r.resources, "aws:sns/topicPolicy:TopicPolicy").inputs["policy"])
    return policy


@pytest.mark.parametrize("stack", STACKS)
def test_topic_is_encrypted_with_its_own_key_that_the_publishers_may_use(stack: str) -> None:
    r = result(stack)
    key = named(of_type(r.resources, "aws:kms/key:Key"), "alarms-topic-key")
    assert topic(r).inputs["kmsMasterKeyId"] == key.state["arn"]
    assert key.state["arn"] != r.outputs["kms_key_arn"]  # not the data key
    assert key.inputs["enableKeyRotation"] is True
    statements = json.loads(key.inputs["policy"])["Statement"]
    publishers = next(st for st in statements if st["Sid"] == "AlarmPublishers")
    assert set(publishers["Principal"]["Service"]) == {
        "cloudwatch.amazonaws.com",
        "events.amazonaws.com",
        "events.rds.amazonaws.com",
    }
    assert publishers["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert r.outputs["alarm_topic_arn"] == topic(r).state["arn"]


@pytest.mark.parametrize("stack", STACKS)
def test_topic_policy_lets_exactly_the_publishers_in(stack: str) -> None:
    r = result(stack)
    policy = topic_policy(r)
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    assert by_sid["CloudWatchAlarms"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert by_sid["RdsEventSubscriptions"]["Principal"] == {"Service": "events.rds.amazonaws.com"}
    # RDS sends the ARN of the DB instance that raised the event as aws:SourceArn (RDS user guide).
    instances = of_type(r.resources, "aws:rds/instance:Instance")
    assert by_sid["RdsEventSubscriptions"]["Condition"] == {
        "ArnEquals": {"aws:SourceArn": [db.state["arn"] for db in instances]},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }
    assert all(":db:" in db.state["arn"] for db in instances) and len(instances) == (
        2 if stack == "prod" else 1
    )
    rule = named(of_type(r.resources, "aws:cloudwatch/eventRule:EventRule"), "alarms-backup-failures")
    assert by_sid["BackupFailureRule"]["Condition"] == {"ArnEquals": {"aws:SourceArn": rule.state["arn"]}}
    assert all(st["Resource"] == topic(r).state["arn"] for st in policy["Statement"])


@pytest.mark.parametrize("stack", STACKS)
def test_emails_from_settings_are_subscribed(stack: str) -> None:
    r = result(stack)
    subs = of_type(r.resources, "aws:sns/topicSubscription:TopicSubscription")
    emails = sorted(s.inputs["endpoint"] for s in subs if s.inputs["protocol"] == "email")
    assert emails == sorted(settings_for(stack).alarms.emails) == ["db-alerts@spike.land"]
    assert all(s.inputs["topic"] == topic(r).state["arn"] for s in subs)


def test_a_pager_endpoint_gets_an_https_subscription() -> None:
    url = "https://events.pagerduty.example/integration/abc123/enqueue"
    r = result("dev", (("alarms.pagerHttpsEndpoint", url),))
    subs = of_type(r.resources, "aws:sns/topicSubscription:TopicSubscription")
    assert [
        (s.inputs["protocol"], s.inputs["endpoint"]) for s in subs if s.inputs["protocol"] == "https"
    ] == [("https", url)]


@pytest.mark.parametrize("stack", STACKS)
def test_every_alarm_exists_with_its_threshold_and_notifies_the_topic_on_alarm_and_ok(stack: str) -> None:
    r = result(stack)
    found = alarms(r)
    specs = {spec.key: spec for spec in alarm_rules.alarm_specs(settings_for(stack))}
    assert set(found) == set(specs)
    arn = topic(r).state["arn"]
    for key, spec in specs.items():
        a = found[key].inputs
        assert a["name"] == f"spike-land-{stack}-{key}"
        assert a["threshold"] == pytest.approx(spec.threshold)
        assert a["comparisonOperator"] == spec.comparison
        assert a["metricName"] == spec.metric and a["namespace"] == spec.namespace
        assert a["treatMissingData"] == spec.treat_missing_data
        assert a["alarmActions"] == [arn] and a["okActions"] == [arn]


@pytest.mark.parametrize("stack", STACKS)
def test_connection_alarm_is_80_percent_of_the_formula_for_the_instance_class(stack: str) -> None:
    r = result(stack)
    a = alarms(r)["primary-connections"].inputs
    expected = int(capacity.max_connections(settings_for(stack).instance_class) * 80 // 100)
    assert a["threshold"] == expected
    assert a["dimensions"] == {"DBInstanceIdentifier": r.outputs["primary_instance_id"]}
    assert a["metricName"] == "DatabaseConnections" and a["comparisonOperator"] == "GreaterThanThreshold"


def test_thresholds_are_sized_per_stack() -> None:
    dev, prod = alarms(result("dev")), alarms(result("prod"))
    assert dev["primary-connections"].inputs["threshold"] < prod["primary-connections"].inputs["threshold"]
    assert dev["primary-free-storage"].inputs["threshold"] == pytest.approx(20 * GIB * 0.2)
    assert prod["primary-free-storage"].inputs["threshold"] == pytest.approx(100 * GIB * 0.2)
    assert prod["pgbouncer-healthy-hosts"].inputs["threshold"] == 2
    assert dev["pgbouncer-healthy-hosts"].inputs["threshold"] == 1


@pytest.mark.usefixtures("pinned_pgbouncer_1_25")
def test_prod_replica_lag_alarm_on_each_replica() -> None:
    r = result("prod", (("replicaCount", 2), ("pgbouncer.version", "1.25")))
    found = alarms(r)
    for n in (1, 2):
        a = found[f"replica-{n}-replica-lag"].inputs
        replica = instance(r, f"database-replica-{n}")
        assert a["dimensions"] == {"DBInstanceIdentifier": replica.inputs["identifier"]}
        assert a["threshold"] == 30 and a["metricName"] == "ReplicaLag"
        for metric in ("cpu", "freeable-memory", "read-latency", "write-latency"):
            assert found[f"replica-{n}-{metric}"].inputs["dimensions"] == a["dimensions"]


def test_dev_has_the_same_alarms_minus_replicas() -> None:
    dev, prod = set(alarms(result("dev"))), set(alarms(result("prod")))
    assert dev == {k for k in prod if not k.startswith("replica-")}


@pytest.mark.parametrize("stack", STACKS)
def test_slow_query_filter_counts_the_primary_postgresql_log(stack: str) -> None:
    r = result(stack)
    f = named(
        of_type(r.resources, "aws:cloudwatch/logMetricFilter:LogMetricFilter"), "alarms-slow-queries"
    ).inputs
    log_group = f"/aws/rds/instance/{r.outputs['primary_instance_id']}/postgresql"
    assert f["logGroupName"] == log_group
    assert f["pattern"] == slow_query.SLOW_QUERY_FILTER_PATTERN
    declared = {g.inputs["name"]: g.inputs for g in of_type(r.resources, "aws:cloudwatch/logGroup:LogGroup")}
    assert declared[log_group]["kmsKeyId"] == r.outputs["kms_key_arn"]
    assert declared[log_group]["retentionInDays"] == settings_for(stack).log_retention_days
    transform = f["metricTransformation"]
    a = alarms(r)["slow-queries"].inputs
    assert (a["namespace"], a["metricName"]) == (transform["namespace"], transform["name"])
    assert transform["value"] == "1"
    assert a["threshold"] == 10 and a["period"] == 300 and a["statistic"] == "Sum"


def test_slow_query_logging_reaches_the_filter() -> None:
    # The filter counts lines PostgreSQL writes only when log_min_duration_statement <= 1000 ms.
    params = named(
        of_type(result("prod").resources, "aws:rds/parameterGroup:ParameterGroup"), "database-primary"
    )
    values = {p["name"]: p["value"] for p in params.inputs["parameters"]}
    assert 0 <= int(values["log_min_duration_statement"]) <= slow_query.SLOW_QUERY_THRESHOLD_MS


@pytest.mark.parametrize("stack", STACKS)
def test_rds_events_for_every_instance_go_to_the_topic(stack: str) -> None:
    r = result(stack)
    sub = one(r.resources, "aws:rds/eventSubscription:EventSubscription").inputs
    ids = [r.outputs["primary_instance_id"]] + [
        instance(r, f"database-replica-{n}").inputs["identifier"]
        for n in range(1, settings_for(stack).replica_count + 1)
    ]
    assert sub["sourceType"] == "db-instance"
    assert sub["sourceIds"] == ids
    assert set(sub["eventCategories"]) == set(RDS_EVENT_CATEGORIES)
    assert {"backup", "failure", "failover", "low storage", "maintenance", "notification"} == set(
        RDS_EVENT_CATEGORIES
    )
    assert sub["snsTopic"] == topic(r).state["arn"]


@pytest.mark.parametrize("stack", STACKS)
def test_backup_and_restore_test_failures_go_to_the_topic(stack: str) -> None:
    r = result(stack)
    rule = named(of_type(r.resources, "aws:cloudwatch/eventRule:EventRule"), "alarms-backup-failures")
    pattern = json.loads(rule.inputs["eventPattern"])
    assert pattern["source"] == ["aws.backup"]
    assert "Backup Job State Change" in pattern["detail-type"]
    assert "Restore Job State Change" in pattern["detail-type"]
    # Backup/copy job events say detail.state, restore job events detail.status: both are matched.
    assert pattern["$or"] == [
        {"detail": {"state": list(BACKUP_FAILED_STATES)}},
        {"detail": {"status": list(BACKUP_FAILED_STATES)}},
    ]
    assert set(BACKUP_FAILED_STATES) == {"FAILED", "ABORTED", "EXPIRED"}
    target = named(of_type(r.resources, "aws:cloudwatch/eventTarget:EventTarget"), "alarms-backup-failures")
    assert target.inputs["arn"] == topic(r).state["arn"]


@pytest.mark.parametrize("stack", STACKS)
def test_one_dashboard_per_stack_shows_the_alarmed_metrics(stack: str) -> None:
    r = result(stack)
    board = one(r.resources, "aws:cloudwatch/dashboard:Dashboard")
    assert board.inputs["dashboardName"] == r.outputs["dashboard_name"] == f"spike-land-{stack}-db"
    body: dict[str, Any] = json.loads(board.inputs["dashboardBody"])
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(a.state["arn"] for a in alarms(r).values())
    text = json.dumps(body)
    for metric in (
        "DatabaseConnections",
        "CPUUtilization",
        "FreeStorageSpace",
        "SlowQueries",
        "HealthyHostCount",
    ):
        assert metric in text
    assert r.outputs["primary_instance_id"] in text
    assert ("ReplicaLag" in text) == (settings_for(stack).replica_count > 0)


RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"


@pytest.mark.parametrize("stack", STACKS)
def test_pgbouncer_refresh_failures_rollbacks_and_failed_launches_go_to_the_topic(stack: str) -> None:
    r = result(stack)
    rule = named(of_type(r.resources, RULE), "alarms-pgbouncer-refresh")
    pattern = json.loads(rule.inputs["eventPattern"])
    assert pattern == refresh_failure_event_pattern(stack)
    assert pattern["detail"] == {"AutoScalingGroupName": [group_name(stack)]}
    # The group the tier declares is the one the pattern names.
    (group,) = of_type(r.resources, "aws:autoscaling/group:Group")
    assert group.inputs["name"] == group_name(stack)
    assert rule.inputs["namePrefix"] == f"spike-land-{stack}-pgbref-"
    assert len(rule.inputs["namePrefix"]) <= 64 - 26
    target = named(of_type(r.resources, TARGET), "alarms-pgbouncer-refresh")
    assert target.inputs["rule"] == rule.state["name"]
    assert target.inputs["arn"] == topic(r).state["arn"]


@pytest.mark.parametrize("stack", STACKS)
def test_the_topic_admits_eventbridge_only_for_this_stacks_two_rules(stack: str) -> None:
    r = result(stack)
    refresh = named(of_type(r.resources, RULE), "alarms-pgbouncer-refresh")
    policy = topic_policy(r)
    (statement,) = [st for st in policy["Statement"] if st["Sid"] == "PgBouncerRefreshFailureRule"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "SNS:Publish"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": refresh.state["arn"]}}
    # EventBridge gets in by rule ARN only, never unconditioned, and only for the alarms' own rules.
    eventbridge = [st for st in policy["Statement"] if st["Principal"] == {"Service": "events.amazonaws.com"}]
    admitted = {st["Condition"]["ArnEquals"]["aws:SourceArn"] for st in eventbridge}
    rules = {x.state["arn"] for x in of_type(r.resources, RULE) if x.name.startswith("alarms-")}
    assert admitted == rules and len(rules) == 2


@pytest.mark.parametrize("stack", STACKS)
def test_eventbridge_may_use_the_topic_key_to_publish(stack: str) -> None:
    """EventBridge publishing to an encrypted topic needs kms:GenerateDataKey and kms:Decrypt on its key."""
    r = result(stack)
    key = named(of_type(r.resources, "aws:kms/key:Key"), "alarms-topic-key")
    assert topic(r).inputs["kmsMasterKeyId"] == key.state["arn"]
    allowed = [
        st
        for st in json.loads(key.inputs["policy"])["Statement"]
        if st["Effect"] == "Allow" and "events.amazonaws.com" in st["Principal"].get("Service", [])
    ]
    actions = {a for st in allowed for a in st["Action"]}
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= actions


@pytest.mark.parametrize("stack", STACKS)
def test_every_alarm_rule_is_routed_to_the_topic_and_admitted_by_it(stack: str) -> None:
    """The route check: drop a rule's target, its topic-policy statement or the refresh rule: this fails."""
    r = result(stack)
    rules = {x.state["name"]: x for x in of_type(r.resources, RULE) if x.name.startswith("alarms-")}
    patterns = [json.loads(x.inputs["eventPattern"]) for x in rules.values()]
    assert refresh_failure_event_pattern(stack) in patterns
    targets = {t.inputs["rule"]: t for t in of_type(r.resources, TARGET) if t.name.startswith("alarms-")}
    assert set(targets) == set(rules)
    assert all(t.inputs["arn"] == topic(r).state["arn"] for t in targets.values())
    # No RoleArn: SNS targets go by the topic policy (with a role, delivery to an encrypted topic may fail).
    assert not any("roleArn" in t.inputs for t in targets.values())
    policy = json.dumps(topic_policy(r))
    assert all(rule.state["arn"] in policy for rule in rules.values())


def test_the_documented_failed_launch_event_matches_the_pattern() -> None:
    """AWS's example "EC2 Instance Launch Unsuccessful" event (EC2 Auto Scaling event reference)."""
    pattern = refresh_failure_event_pattern("dev")
    event = {
        "detail-type": "EC2 Instance Launch Unsuccessful",
        "source": "aws.autoscaling",
        "detail": {"StatusCode": "Failed", "AutoScalingGroupName": group_name("dev"), "Cause": "..."},
    }
    assert event["source"] in pattern["source"]  # type: ignore[operator]
    assert event["detail-type"] in pattern["detail-type"]  # type: ignore[operator]
    assert event["detail"]["AutoScalingGroupName"] in pattern["detail"]["AutoScalingGroupName"]  # type: ignore[index]
    assert "EC2 Instance Launch Successful" not in pattern["detail-type"]  # type: ignore[operator]
