"""PgBouncer pool metrics on AWS, under mocks over the real stack files (issue 13): the host runs the
publisher from a timer, its role may put metrics only into the stack's namespace, the pool alarms notify
the topic, and the dashboard shows the pools."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest

from components import pgbouncer_image_document as doc
from components import pgbouncer_userdata as ud
from components.alarm_rules import custom_namespace
from dbctl.stackconfig.settings import SettingsError
from tests.unit.harness import RunResult, of_type, one, run, settings_for

STACKS = ("dev", "prod")
POOLS = ("spike_land", "spike_land_ro")


def alarms(r: RunResult) -> dict[str, dict[str, Any]]:
    return {
        a.inputs["name"]: a.inputs for a in of_type(r.resources, "aws:cloudwatch/metricAlarm:MetricAlarm")
    }


def user_data(r: RunResult) -> bytes:
    """The PgBouncer launch template's user data as EC2 receives it (gzip)."""
    lt = one(
        [x for x in r.resources if x.name.startswith("pgbouncer")], "aws:ec2/launchTemplate:LaunchTemplate"
    )
    return base64.b64decode(lt.inputs["userData"])


@pytest.mark.parametrize("stack", STACKS)
def test_pool_alarms_watch_the_custom_namespace_and_notify_the_topic(stack: str) -> None:
    r = run(stack)
    s = settings_for(stack)
    topic = one(r.resources, "aws:sns/topic:Topic").state["arn"]
    found = alarms(r)
    for pool in POOLS:
        key = pool.replace("_", "-")
        wait = found[f"spike-land-{stack}-pgbouncer-{key}-wait"]
        assert (wait["namespace"], wait["metricName"], wait["statistic"]) == (
            custom_namespace(stack),
            "MaxWaitSeconds",
            "Maximum",
        )
        assert wait["dimensions"] == {"Stack": stack, "Pool": pool}
        assert wait["threshold"] == s.monitoring.pool_max_wait_seconds == 10
        assert wait["comparisonOperator"] == "GreaterThanThreshold" and wait["period"] == 60
        saturated = found[f"spike-land-{stack}-pgbouncer-{key}-saturated"]
        assert saturated["metricName"] == "ServersActive" and saturated["dimensions"] == wait["dimensions"]
        assert saturated["threshold"] == s.pgbouncer.default_pool_size
        assert saturated["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert saturated["evaluationPeriods"] == saturated["datapointsToAlarm"] == 5
        for a in (wait, saturated):
            assert a["alarmActions"] == [topic] and a["okActions"] == [topic]
            assert a["treatMissingData"] == "notBreaching"


def test_thresholds_are_settings() -> None:
    r = run("dev", {"monitoring": {"poolMaxWaitSeconds": 2.5, "poolSaturatedMinutes": 3}})
    found = alarms(r)
    assert found["spike-land-dev-pgbouncer-spike-land-wait"]["threshold"] == 2.5
    assert found["spike-land-dev-pgbouncer-spike-land-ro-saturated"]["evaluationPeriods"] == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"monitoring.poolMaxWaitSeconds": 0}, "spike-land-db:monitoring.poolMaxWaitSeconds = 0 is invalid"),
        (
            {"monitoring.poolSaturatedMinutes": 0},
            "spike-land-db:monitoring.poolSaturatedMinutes = 0 is invalid",
        ),
        ({"monitoring.poolSaturatedMinutes": 61}, "less than or equal to 60"),
    ],
)
def test_bad_pool_thresholds_name_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        settings_for("dev", overrides)


@pytest.mark.parametrize("stack", STACKS)
def test_the_instance_role_may_put_metrics_only_into_the_stacks_namespace(stack: str) -> None:
    r = run(stack)
    [policy] = [
        p
        for p in of_type(r.resources, "aws:iam/rolePolicy:RolePolicy")
        if p.name.startswith("pgbouncer") and not p.name.startswith("pgbouncer-image")
    ]
    puts = [
        s
        for s in json.loads(policy.inputs["policy"])["Statement"]
        if "cloudwatch:PutMetricData" in s["Action"]
    ]
    assert puts == [
        {
            "Sid": "PutPoolMetrics",
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": ["*"],
            "Condition": {"StringEquals": {"cloudwatch:namespace": f"SpikeLandDb/{stack}"}},
        }
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_the_dashboard_shows_the_pools(stack: str) -> None:
    r = run(stack)
    body = json.loads(one(r.resources, "aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    graphs = {w["properties"]["title"]: w["properties"] for w in body["widgets"] if w["type"] == "metric"}
    waits = graphs["PgBouncer longest client wait (s)"]
    assert [m[:6] for m in waits["metrics"]] == [
        [custom_namespace(stack), "MaxWaitSeconds", "Stack", stack, "Pool", pool] for pool in POOLS
    ]
    assert waits["annotations"]["horizontal"][0]["value"] == 10
    for title in ("PgBouncer clients waiting", "PgBouncer server connections active"):
        assert title in graphs


@pytest.mark.parametrize("stack", STACKS)
def test_each_host_runs_the_publisher_every_minute(stack: str) -> None:
    r = run(stack)
    raw = user_data(r)
    script = gzip.decompress(raw).decode()
    # The publisher, run by a timer as a oneshot service; the script is the image's (InstallHostFiles).
    assert doc.HOST_SCRIPTS["pool_metrics.py"] == doc.METRICS_PATH and "SPIKE_POOL_METRICS" not in script
    assert "OnUnitActiveSec=60s" in script and f"systemctl enable --now {ud.METRICS_UNIT}.timer" in script
    monitor_arn = r.outputs["role_secret_arns"]["spike_monitor"]
    assert f"--namespace SpikeLandDb/{stack} --monitor-secret {monitor_arn} --port 6543" in script
    assert "dnf " not in script  # psql is the image's too (doc.PSQL_PACKAGE)
    assert len(raw) <= ud.USER_DATA_LIMIT
    print(f"{stack}: user data {len(script)} bytes, {len(raw)} gzipped (limit {ud.USER_DATA_LIMIT})")
