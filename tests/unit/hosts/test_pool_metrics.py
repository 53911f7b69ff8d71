"""hosts/pool_metrics.py's pure parts: rows to CloudWatch MetricData (checked against botocore's own model
of PutMetricData with a Stubber), publishing and its failure, and that the file stays a standalone
Python 3.9 script (the PgBouncer host runs it as is)."""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from hosts import pool_metrics

SOURCE = Path(pool_metrics.__file__)
NOW = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.timezone.utc)  # noqa: UP017
POOLS = [
    {"database": "pgbouncer", "user": "pgbouncer", "cl_active": "1", "cl_waiting": "0", "sv_active": "0",
     "sv_idle": "0", "maxwait": "0", "maxwait_us": "0"},
    {"database": "spike_land", "user": "spike_app", "cl_active": "7", "cl_waiting": "3", "sv_active": "20",
     "sv_idle": "0", "maxwait": "2", "maxwait_us": "500000"},
    {"database": "spike_land", "user": "spike_monitor", "cl_active": "1", "cl_waiting": "0", "sv_active": "1",
     "sv_idle": "1", "maxwait": "0", "maxwait_us": "250000"},
    {"database": "spike_land_ro", "user": "spike_readonly", "cl_active": "2", "cl_waiting": "0",
     "sv_active": "1", "sv_idle": "4", "maxwait": "0", "maxwait_us": "0"},
]  # fmt: skip
STATS = [
    {"database": "spike_land", "avg_xact_count": "120", "avg_wait_time": "1500", "avg_query_time": "2500"},
    {"database": "spike_land_ro", "avg_xact_count": "4", "avg_wait_time": "0", "avg_query_time": "900"},
    {"database": "pgbouncer", "avg_xact_count": "1", "avg_wait_time": "0", "avg_query_time": "0"},
]


def test_pools_are_summed_per_database_and_the_admin_console_is_left_out() -> None:
    values = pool_metrics.per_pool(POOLS, STATS)
    assert set(values) == {"spike_land", "spike_land_ro"}
    land = values["spike_land"]
    assert (land["ClientsActive"], land["ClientsWaiting"], land["ServersActive"], land["ServersIdle"]) == (
        8,
        3,
        21,
        1,
    )
    assert land["MaxWaitSeconds"] == 2.5  # the longest wait of the pool's users, seconds + microseconds
    assert (land["TransactionsPerSecond"], land["AvgWaitTimeMs"], land["AvgQueryTimeMs"]) == (120, 1.5, 2.5)


def test_metric_data_is_a_valid_put_metric_data_request_with_both_dimension_sets() -> None:
    data = pool_metrics.metric_data(POOLS, STATS, stack="prod", host="ip-10-40-0-5", timestamp=NOW)
    assert len(data) == 2 * 2 * len(pool_metrics.METRICS)
    client = boto3.client(
        "cloudwatch", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    request = json.loads(json.dumps({"Namespace": "SpikeLandDb/prod", "MetricData": data}))
    with Stubber(client) as stub:
        stub.add_response("put_metric_data", {}, request)
        client.put_metric_data(**request)  # botocore validates every field against the service model
        stub.assert_no_pending_responses()
    waiting = [d for d in data if d["MetricName"] == "ClientsWaiting" and d["Value"] == 3]
    assert [[x["Name"] for x in d["Dimensions"]] for d in waiting] == [
        ["Stack", "Pool", "Host"],
        ["Stack", "Pool"],
    ]
    assert waiting[0]["Dimensions"][1] == {"Name": "Pool", "Value": "spike_land"}


class FakeRun:
    """Records each command; answers the AWS CLI and psql like the host's would."""

    def __init__(self, *, publish_rc: int = 0) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.publish_rc = publish_rc

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kw))
        if argv[:2] == ["aws", "secretsmanager"]:
            # After a rotation the secret names spike_monitor_b: the run logs in as the user it names.
            secret = {"username": "spike_monitor_b", "password": "pw-secret-1"}
            return subprocess.CompletedProcess(argv, 0, json.dumps(secret), "")
        if argv[0] == "psql":
            rows = POOLS if "SHOW POOLS" in argv else STATS
            text = ",".join(rows[1]) + "\n" + "\n".join(",".join(r.get(k, "") for k in rows[1]) for r in rows)
            return subprocess.CompletedProcess(argv, 0, text + "\n", "")
        err = "An error occurred (AccessDenied) when calling the PutMetricData operation: denied\n"
        return subprocess.CompletedProcess(argv, self.publish_rc, "", err if self.publish_rc else "")


ARGS = argparse.Namespace(
    stack="prod", region="eu-west-1", namespace="SpikeLandDb/prod", monitor_secret="arn:x",
    port=6543, host="h1",
)  # fmt: skip


def test_one_run_reads_as_spike_monitor_and_keeps_the_password_off_command_lines() -> None:
    run = FakeRun()
    assert pool_metrics.run_once(ARGS, run) == 2 * 2 * len(pool_metrics.METRICS)
    psql = [(argv, kw) for argv, kw in run.calls if argv[0] == "psql"]
    assert [argv[-1] for argv, _ in psql] == ["SHOW POOLS", "SHOW STATS"]
    for _, kw in psql:
        env = kw["env"]
        assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
            "127.0.0.1",
            "6543",
            "spike_monitor_b",
            "pgbouncer",
        )
        assert env["PGPASSWORD"] == "pw-secret-1"
    assert all("pw-secret-1" not in " ".join(argv) for argv, _ in run.calls)
    [(_, publish_kw)] = [(a, k) for a, k in run.calls if a[:2] == ["aws", "cloudwatch"]]
    assert json.loads(publish_kw["stdin"])["Namespace"] == "SpikeLandDb/prod"
    assert "pw-secret-1" not in publish_kw["stdin"]


def test_a_refused_publish_is_one_error_naming_cloudwatchs_reason() -> None:
    with pytest.raises(
        pool_metrics.MetricsError, match=r"could not publish 32 datums to SpikeLandDb/prod: .*AccessDenied"
    ):
        pool_metrics.run_once(ARGS, FakeRun(publish_rc=255))


def test_the_file_is_a_standalone_python_3_9_script() -> None:
    tree = ast.parse(SOURCE.read_text(), feature_version=(3, 9))
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"dbctl", "components", "psycopg", "boto3", "botocore", "click"}, imported
