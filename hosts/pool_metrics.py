#!/usr/bin/env python3
"""PgBouncer pool metrics to CloudWatch: one run reads SHOW POOLS and SHOW STATS and publishes them.

A systemd timer runs this file every 60 s on each PgBouncer host: `components/pgbouncer_userdata.py` embeds
it verbatim, as it does `hosts/pgbouncer_authfile.py`, so it is standalone: Python 3.9's standard
library (Amazon Linux 2023's system Python), `psql` for PgBouncer's admin console and the preinstalled AWS
CLI v2 with the instance role's credentials. Nothing here imports dbctl; dbctl's tests run this file.

- Several PgBouncer processes on the host (so_reuseport): each one's admin console over its own Unix
  socket (`--socket-dir`, once per process; TCP would reach any one of them), and the host's figures are
  their sum (max for the longest wait; the SHOW STATS averages weighted by each process's counts).
- It logs in as the user spike_monitor's secret names (spike_monitor_a or _b, both `stats_users`) over
  127.0.0.1 (or the sockets); user and password come from the role's Secrets Manager secret into this
  process's memory, and reach psql only in its environment (PGPASSWORD).
- Each pool (PgBouncer database: spike_land, spike_land_ro; the admin console is skipped) gives `METRICS`,
  each datum twice: with dimensions Stack, Pool, Host, and with Stack, Pool (what the alarms watch, the
  Maximum over the hosts).
- Any failure (PgBouncer unreachable, no credentials, CloudWatch refusing) is one line on stderr, the
  journal, naming what failed and never a secret; the exit status stays 0 so the timer keeps running and
  PgBouncer, which this never touches, keeps serving.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

PASSWORD_KEY = "password"  # noqa: S105 - dbctl.names.SECRET_PASSWORD_KEY (this file stays standalone)
USERNAME_KEY = "username"  # dbctl.names.SECRET_USERNAME_KEY: the active one of spike_monitor_a/_b
ADMIN_DB = "pgbouncer"
# (metric name, unit, source command, column, scale): SHOW POOLS per pool, SHOW STATS per database.
METRICS = (
    ("ClientsActive", "Count", "POOLS", "cl_active", 1.0),
    ("ClientsWaiting", "Count", "POOLS", "cl_waiting", 1.0),
    ("ServersActive", "Count", "POOLS", "sv_active", 1.0),
    ("ServersIdle", "Count", "POOLS", "sv_idle", 1.0),
    ("MaxWaitSeconds", "Seconds", "POOLS", "maxwait", 1.0),
    ("TransactionsPerSecond", "Count/Second", "STATS", "avg_xact_count", 1.0),
    ("AvgWaitTimeMs", "Milliseconds", "STATS", "avg_wait_time", 0.001),  # PgBouncer reports microseconds
    ("AvgQueryTimeMs", "Milliseconds", "STATS", "avg_query_time", 0.001),
)
# SHOW STATS averages, and the count each is an average over: over several processes, a weighted mean.
STATS_WEIGHTS = {"avg_wait_time": "avg_xact_count", "avg_query_time": "avg_query_count"}

Rows = list[dict[str, str]]
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class MetricsError(RuntimeError):
    """One step failed; the message says which and never holds a secret."""


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None) -> Any:
    return subprocess.run(
        list(argv), input=stdin, env=dict(env) if env is not None else None, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def monitor_credentials(secret_arn: str, region: str, run: Runner = _run) -> tuple[str, str]:
    """(user, password) of spike_monitor's secret: the active user a rotation switched to, and its password
    (read on every run, so a rotation needs nothing here)."""
    result = run(
        ["aws", "secretsmanager", "get-secret-value", "--region", region, "--secret-id", secret_arn,
         "--query", "SecretString", "--output", "text"],
    )  # fmt: skip
    if result.returncode != 0:
        raise MetricsError(f"cannot read secret {secret_arn}: {_last_line(result.stderr)}")
    try:
        secret = json.loads(result.stdout)
        password, user = secret[PASSWORD_KEY], secret[USERNAME_KEY]
    except (ValueError, KeyError, TypeError):
        raise MetricsError(f"secret {secret_arn} has no {PASSWORD_KEY!r} or {USERNAME_KEY!r} key") from None
    for key, value in ((PASSWORD_KEY, password), (USERNAME_KEY, user)):
        if not isinstance(value, str) or not value:
            raise MetricsError(f"secret {secret_arn} has an empty {key!r}")
    return user, password


def admin_rows(
    command: str, *, port: int, user: str, password: str, host: str = "127.0.0.1", run: Runner = _run
) -> Rows:
    """`SHOW POOLS` / `SHOW STATS` on PgBouncer's admin console at `host` (127.0.0.1, or a process's Unix
    socket directory), as CSV rows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=host,
        PGPORT=str(port),
        PGDATABASE=ADMIN_DB,
        PGUSER=user,
        PGPASSWORD=password,
        PGSSLMODE="prefer",
        PGCONNECT_TIMEOUT="5",
        PGAPPNAME="spike-pool-metrics",
    )
    result = run(["psql", "--no-psqlrc", "--csv", "--command", command], env=env)
    if result.returncode != 0:
        raise MetricsError(f"cannot read PgBouncer on {host}:{port} ({command}): {_last_line(result.stderr)}")
    return list(csv.DictReader(io.StringIO(result.stdout)))


def _number(row: Mapping[str, str], column: str) -> float:
    try:
        return float(row.get(column) or 0)
    except ValueError:
        return 0.0


def per_pool(pools: Rows, stats: Rows) -> dict[str, dict[str, float]]:
    """{pool: {metric: value}}: SHOW POOLS summed over a pool's users and processes (maxwait: the longest),
    SHOW STATS summed over processes (its averages: weighted by each process's count, see STATS_WEIGHTS)."""
    out: dict[str, dict[str, float]] = {}
    for row in pools:
        database = row.get("database", "")
        if not database or database == ADMIN_DB:
            continue
        values = out.setdefault(database, {})
        for metric, _, source, column, scale in METRICS:
            if source != "POOLS":
                continue
            value = _number(row, column) * scale
            if column == "maxwait":
                value += _number(row, "maxwait_us") / 1_000_000
                values[metric] = max(values.get(metric, 0.0), value)
            else:
                values[metric] = values.get(metric, 0.0) + value
    weighted: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in stats:
        database = row.get("database", "")
        if database not in out:
            continue
        for metric, _, source, column, scale in METRICS:
            if source != "STATS":
                continue
            value = _number(row, column) * scale
            if column in STATS_WEIGHTS:
                weighted.setdefault((database, metric), []).append(
                    (value, _number(row, STATS_WEIGHTS[column]))
                )
            else:
                out[database][metric] = out[database].get(metric, 0.0) + value
    for (database, metric), pairs in weighted.items():
        total = sum(weight for _, weight in pairs)
        mean = sum(v * w for v, w in pairs) / total if total else sum(v for v, _ in pairs) / len(pairs)
        out[database][metric] = mean
    return out


def metric_data(
    pools: Rows, stats: Rows, *, stack: str, host: str, timestamp: datetime.datetime
) -> list[dict[str, Any]]:
    """CloudWatch MetricData: each pool's metrics with (Stack, Pool, Host) and again with (Stack, Pool)."""
    units = {metric: unit for metric, unit, *_ in METRICS}
    data: list[dict[str, Any]] = []
    for pool, values in sorted(per_pool(pools, stats).items()):
        for metric, value in values.items():
            base = [{"Name": "Stack", "Value": stack}, {"Name": "Pool", "Value": pool}]
            for dimensions in ([*base, {"Name": "Host", "Value": host}], base):
                data.append(
                    {
                        "MetricName": metric,
                        "Dimensions": dimensions,
                        "Timestamp": timestamp.isoformat(),
                        "Value": value,
                        "Unit": units[metric],
                    }
                )
    return data


def publish(namespace: str, region: str, data: list[dict[str, Any]], run: Runner = _run) -> None:
    """PutMetricData through the AWS CLI (the request as JSON on stdin; at most 1000 datums a call)."""
    for start in range(0, len(data), 1000):
        request = json.dumps({"Namespace": namespace, "MetricData": data[start : start + 1000]})
        result = run(
            [
                "aws",
                "cloudwatch",
                "put-metric-data",
                "--region",
                region,
                "--cli-input-json",
                "file:///dev/stdin",
            ],
            stdin=request,
        )
        if result.returncode != 0:
            raise MetricsError(
                f"could not publish {len(data)} datums to {namespace}: {_last_line(result.stderr)}"
            )


def run_once(args: argparse.Namespace, run: Runner = _run) -> int:
    """One collection and publication; returns how many datums were published. Raises MetricsError."""
    user, password = monitor_credentials(args.monitor_secret, args.region, run)
    pools: Rows = []
    stats: Rows = []
    for host in getattr(args, "socket_dir", None) or ["127.0.0.1"]:
        login = {"port": args.port, "user": user, "password": password, "host": host, "run": run}
        pools += admin_rows("SHOW POOLS", **login)
        stats += admin_rows("SHOW STATS", **login)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)  # noqa: UP017 - Python 3.9
    data = metric_data(pools, stats, stack=args.stack, host=args.host, timestamp=now)
    publish(args.namespace, args.region, data, run)
    return len(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish PgBouncer's pool metrics to CloudWatch once.")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument(
        "--namespace", required=True, help="the stack's custom namespace, e.g. SpikeLandDb/prod"
    )
    parser.add_argument("--monitor-secret", required=True, metavar="ARN", help="spike_monitor's secret")
    parser.add_argument("--port", type=int, default=6543)
    parser.add_argument(
        "--socket-dir",
        action="append",
        metavar="DIR",
        help="a PgBouncer process's Unix socket directory; repeat for each (default: 127.0.0.1 only)",
    )
    parser.add_argument("--host", default=socket.gethostname(), help="the Host dimension (default: hostname)")
    args = parser.parse_args(argv)
    try:
        count = run_once(args)
    except (MetricsError, OSError, subprocess.SubprocessError) as exc:
        # Non-fatal by design: say so in the journal, keep the timer and PgBouncer going.
        print(f"spike-pool-metrics: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0
    print(f"spike-pool-metrics: published {count} datums to {args.namespace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
