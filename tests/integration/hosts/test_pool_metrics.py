"""hosts/pool_metrics.py as the PgBouncer host runs it: a standalone script, real psql against a real
PgBouncer (the local stack) as spike_monitor, and a stub `aws` on PATH standing in for Secrets Manager and
CloudWatch. The request it sends is checked against botocore's model of PutMetricData (Stubber)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from dbctl.core import names
from dbctl.local.stack import existing_stack
from dbctl.postgres.install import find_binary
from dbctl.postgres.osproc import free_port
from hosts import pool_metrics
from tests.integration.local.test_local import LocalStack, stack  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.integration

# The stub CLI: the secret from $STUB_SECRET, put-metric-data's stdin into $STUB_OUT, exit $STUB_RC.
STUB_AWS = """#!/bin/sh
case "$1 $2" in
  "secretsmanager get-secret-value") cat "$STUB_SECRET" ;;
  "cloudwatch put-metric-data")
    cat > "$STUB_OUT"
    if [ "$STUB_RC" != 0 ]; then echo "An error occurred (AccessDenied) when calling PutMetricData" >&2; fi
    exit "$STUB_RC" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def run_publisher(
    s: LocalStack, tmp_path: Path, *, port: int | None = None, rc: int = 0
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    aws = bin_dir / "aws"
    aws.write_text(STUB_AWS)
    aws.chmod(aws.stat().st_mode | stat.S_IXUSR)
    if not (bin_dir / "psql").exists():
        (bin_dir / "psql").symlink_to(find_binary("psql"))
    monitor = existing_stack(s.paths).creds[names.MONITOR_ROLE]
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(monitor.as_secret()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        STUB_SECRET=str(secret),
        STUB_OUT=str(tmp_path / "request.json"),
        STUB_RC=str(rc),
    )
    return subprocess.run(
        [sys.executable, str(Path(pool_metrics.__file__)), "--stack", "test", "--region", "eu-west-1",
         "--namespace", "SpikeLandDb/test", "--monitor-secret", "arn:aws:secretsmanager:eu-west-1:1:secret:m",
         "--port", str(port or s.pgbouncer_port), "--host", "host-1"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip


def test_publishes_the_real_pools_as_a_valid_put_metric_data(stack: LocalStack, tmp_path: Path) -> None:  # noqa: F811
    with stack.connect("DATABASE_URL") as app:  # a pool exists once a client has used it
        app.execute("SELECT 1")
    result = run_publisher(stack, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("spike-pool-metrics: published "), result.stdout + result.stderr
    request = json.loads((tmp_path / "request.json").read_text())
    client = boto3.client(
        "cloudwatch", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(client) as stub:
        stub.add_response("put_metric_data", {}, request)
        client.put_metric_data(**request)
    assert request["Namespace"] == "SpikeLandDb/test"
    land = [
        d for d in request["MetricData"] if {"Name": "Pool", "Value": names.DATABASE_NAME} in d["Dimensions"]
    ]
    assert {d["MetricName"] for d in land} == {m[0] for m in pool_metrics.METRICS}
    active = [d for d in land if d["MetricName"] == "ServersActive" or d["MetricName"] == "ServersIdle"]
    assert sum(d["Value"] for d in active) >= 2  # the app's server connection, counted in both dimension sets
    assert not [d for d in request["MetricData"] if {"Name": "Pool", "Value": "pgbouncer"} in d["Dimensions"]]
    password = existing_stack(stack.paths).creds[names.MONITOR_ROLE].password
    assert password not in result.stdout + result.stderr + json.dumps(request)


def test_a_refused_publish_is_logged_and_not_fatal(stack: LocalStack, tmp_path: Path) -> None:  # noqa: F811
    result = run_publisher(stack, tmp_path, rc=255)
    assert result.returncode == 0
    assert "could not publish" in result.stderr and "AccessDenied" in result.stderr
    assert existing_stack(stack.paths).creds[names.MONITOR_ROLE].password not in result.stderr


def test_an_unreachable_pgbouncer_is_logged_and_not_fatal(stack: LocalStack, tmp_path: Path) -> None:  # noqa: F811
    result = run_publisher(stack, tmp_path, port=free_port())
    assert result.returncode == 0
    assert "cannot read PgBouncer on 127.0.0.1:" in result.stderr
    assert not (tmp_path / "request.json").exists()
