"""Alarm rules, pure: what each CloudWatch alarm watches and its threshold, from settings and capacity.

No Pulumi here: `components/alarms.py` turns these specs into resources, and the tests check the numbers
without mocks. One spec per seed item ("Monitoring Setup with Alerting") plus the resource alarms:

- connection exhaustion: DatabaseConnections > `connectionsPercent` (80 %) of the max_connections the
  instances run with (`settings.effective_max_connections`: the RDS formula for the class unless set);
- replication lag: ReplicaLag > `replicaLagSeconds` (30 s) on each replica;
- database size: FreeStorageSpace < `freeStoragePercent` (20 %) of the storage size the stack declares.
  Not of the autoscaling ceiling: FreeStorageSpace is free space of the *current* volume, which starts far
  below the ceiling (prod: 100 of 1000 GB), so "free < 20 % of the ceiling" would be in ALARM from day one.
  Below the ceiling, autoscaling grows the volume when free space drops under 10 %; this alarm fires first
  (at 20 % of the declared size), and clears once autoscaling has grown the volume. At the ceiling, RDS's
  low-storage events (in the event subscription) report 90 % consumed;
- slow query increase: more than `slowQueriesPer5min` (10) statements over 1 s in 5 minutes, counted by a
  log metric filter on the exported `postgresql` log (see `SLOW_QUERY_FILTER_PATTERN`);
- CPUUtilization, FreeableMemory, ReadLatency, WriteLatency on the primary and every replica;
- the PgBouncer tier: NLB UnHealthyHostCount > 0 and HealthyHostCount < the desired host count.

`treat_missing_data`, per alarm:
- RDS instance metrics: `missing` (keep the last state). RDS publishes them every minute while the instance
  runs; gaps come from reboots, failovers and stops, which the RDS event subscription reports itself, so
  guessing "breaching" or "not breaching" would only make the alarm flap;
- ReplicaLag: `breaching`. A replica that stops reporting lag is a replica that is not replicating;
- slow queries: `notBreaching`. The metric filter only emits data when a log line matches: no data means
  no slow statement;
- PgBouncer HealthyHostCount: `breaching` (no data means no NLB/targets to count); UnHealthyHostCount:
  `notBreaching` (no data means nothing unhealthy was counted).

The slow-query log filter and its Python evaluator live in dbctl/stackconfig/slow_query.py (dbctl preflight
and the local stack use them too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from dbctl.core import names
from dbctl.stackconfig.settings import StackSettings
from dbctl.stackconfig.slow_query import SLOW_QUERY_THRESHOLD_MS

MIB: Final = 1024**2
GIB: Final = 1024**3

RDS_NAMESPACE: Final = "AWS/RDS"
NLB_NAMESPACE: Final = "AWS/NetworkELB"
SLOW_QUERY_METRIC: Final = "SlowQueries"
# PgBouncer's pools, as hosts/pool_metrics.py names them in the Pool dimension (its databases).
POOLS: Final = (names.DATABASE_NAME, names.READ_POOL_DATABASE)
POOL_TARGET_PREFIX: Final = "pool:"

Comparison = Literal[
    "GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold", "LessThanOrEqualToThreshold"
]
MissingData = Literal["missing", "breaching", "notBreaching", "ignore"]


def custom_namespace(stack: str) -> str:
    """The CloudWatch namespace of this stack's own metrics (the slow-query count)."""
    return f"SpikeLandDb/{stack}"


@dataclass(frozen=True)
class AlarmSpec:
    """One CloudWatch metric alarm, independent of Pulumi.

    `target` says what the dimensions point at: "primary", "replica-<n>" (1-based) or "pgbouncer"
    (the NLB and its target group); `components/alarms.py` fills in the identifiers.
    """

    key: str
    target: str
    namespace: str
    metric: str
    statistic: Literal["Average", "Maximum", "Minimum", "Sum"]
    comparison: Comparison
    threshold: float
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing_data: MissingData
    description: str


@dataclass(frozen=True)
class Thresholds:
    """Every number the alarms use, derived from settings (and the instance class)."""

    max_connections: int
    connections_percent: float
    connections: int
    replica_lag_seconds: float
    free_storage_percent: float
    free_storage_bytes: int
    slow_queries_per_5min: int
    cpu_percent: float
    freeable_memory_bytes: int
    read_latency_seconds: float
    write_latency_seconds: float
    pgbouncer_desired_hosts: int


def thresholds(settings: StackSettings) -> Thresholds:
    a = settings.alarms
    max_conn = settings.effective_max_connections
    return Thresholds(
        max_connections=max_conn,
        connections_percent=a.connections_percent,
        # "above 80 %": the largest whole number of connections that is still within the limit.
        connections=math.floor(max_conn * a.connections_percent / 100),
        replica_lag_seconds=a.replica_lag_seconds,
        free_storage_percent=a.free_storage_percent,
        free_storage_bytes=int(settings.allocated_storage_gb * GIB * a.free_storage_percent / 100),
        slow_queries_per_5min=a.slow_queries_per_5min,
        cpu_percent=a.cpu_percent,
        freeable_memory_bytes=a.freeable_memory_mb * MIB,
        read_latency_seconds=a.read_latency_ms / 1000,
        write_latency_seconds=a.write_latency_ms / 1000,
        pgbouncer_desired_hosts=settings.pgbouncer.host_count,
    )


def _instance_specs(target: str, t: Thresholds, *, replica: bool) -> list[AlarmSpec]:
    where = "the replica " + target if replica else "the primary"
    specs = [
        AlarmSpec(
            key=f"{target}-connections",
            target=target,
            namespace=RDS_NAMESPACE,
            metric="DatabaseConnections",
            statistic="Maximum",
            comparison="GreaterThanThreshold",
            threshold=t.connections,
            period=60,
            evaluation_periods=5,
            datapoints_to_alarm=5,
            treat_missing_data="missing",
            description=(
                f"Connections on {where} above {t.connections} ({t.connections_percent:g} % of "
                f"max_connections {t.max_connections}) for 5 minutes. Action: check PgBouncer pool sizes "
                "and clients holding connections (pg_stat_activity), or scale the instance class."
            ),
        ),
        AlarmSpec(
            key=f"{target}-cpu",
            target=target,
            namespace=RDS_NAMESPACE,
            metric="CPUUtilization",
            statistic="Average",
            comparison="GreaterThanThreshold",
            threshold=t.cpu_percent,
            period=300,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data="missing",
            description=(
                f"CPU on {where} above {t.cpu_percent:g} % for 15 minutes. Action: find expensive queries "
                "(pg_stat_statements, Performance Insights)."
            ),
        ),
        AlarmSpec(
            key=f"{target}-freeable-memory",
            target=target,
            namespace=RDS_NAMESPACE,
            metric="FreeableMemory",
            statistic="Minimum",
            comparison="LessThanThreshold",
            threshold=t.freeable_memory_bytes,
            period=300,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data="missing",
            description=(
                f"Freeable memory on {where} below {t.freeable_memory_bytes // MIB} MiB for 15 minutes. "
                "Action: look for memory-hungry queries (work_mem) or scale the instance class."
            ),
        ),
        AlarmSpec(
            key=f"{target}-read-latency",
            target=target,
            namespace=RDS_NAMESPACE,
            metric="ReadLatency",
            statistic="Average",
            comparison="GreaterThanThreshold",
            threshold=t.read_latency_seconds,
            period=300,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data="missing",
            description=(
                f"Disk read latency on {where} above {t.read_latency_seconds * 1000:g} ms for 15 minutes. "
                "Action: check IOPS/throughput against the gp3 limits and queries doing large scans."
            ),
        ),
        AlarmSpec(
            key=f"{target}-write-latency",
            target=target,
            namespace=RDS_NAMESPACE,
            metric="WriteLatency",
            statistic="Average",
            comparison="GreaterThanThreshold",
            threshold=t.write_latency_seconds,
            period=300,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data="missing",
            description=(
                f"Disk write latency on {where} above {t.write_latency_seconds * 1000:g} ms for 15 minutes. "
                "Action: check IOPS/throughput against the gp3 limits and write-heavy jobs."
            ),
        ),
    ]
    if replica:
        specs.append(
            AlarmSpec(
                key=f"{target}-replica-lag",
                target=target,
                namespace=RDS_NAMESPACE,
                metric="ReplicaLag",
                statistic="Maximum",
                comparison="GreaterThanThreshold",
                threshold=t.replica_lag_seconds,
                period=60,
                evaluation_periods=3,
                datapoints_to_alarm=3,
                treat_missing_data="breaching",
                description=(
                    f"Replication lag on {where} above {t.replica_lag_seconds:g} s for 3 minutes. "
                    "Action: check network and disk I/O on the replica, and long queries holding replay."
                ),
            )
        )
    else:
        specs.append(
            AlarmSpec(
                key=f"{target}-free-storage",
                target=target,
                namespace=RDS_NAMESPACE,
                metric="FreeStorageSpace",
                statistic="Minimum",
                comparison="LessThanThreshold",
                threshold=t.free_storage_bytes,
                period=300,
                evaluation_periods=2,
                datapoints_to_alarm=2,
                treat_missing_data="missing",
                description=(
                    f"Free storage on the primary below {t.free_storage_bytes / GIB:g} GiB "
                    f"({t.free_storage_percent:g} % of the declared size) for 10 minutes. Action: clean up "
                    "or archive, check storage autoscaling events, raise maxAllocatedStorageGb."
                ),
            )
        )
    return specs


def pool_specs(settings: StackSettings) -> list[AlarmSpec]:
    """Per PgBouncer pool, on the (Stack, Pool) metrics hosts/pool_metrics.py publishes (Maximum over hosts).

    Missing data is not breaching: PgBouncer lists a pool only once a client used it, and a host that
    cannot publish says so in its journal (the NLB health alarms cover a host that is down)."""
    m = settings.monitoring
    size = settings.pgbouncer.default_pool_size
    minutes = m.pool_saturated_minutes
    kinds: list[tuple[str, str, Comparison, float, int, str]] = [
        (
            "wait",
            "MaxWaitSeconds",
            "GreaterThanThreshold",
            m.pool_max_wait_seconds,
            3,
            f"waited more than {m.pool_max_wait_seconds:g} s for a server connection, 3 minutes running. "
            "Action: dbctl report (slow queries, connections); raise pgbouncer.defaultPoolSize if the "
            "database has connections to spare.",
        ),
        (
            "saturated",
            "ServersActive",
            "GreaterThanOrEqualToThreshold",
            size,
            minutes,
            f"had all {size} server connections (default_pool_size) active on a host for {minutes} minutes. "
            "Action: look for long transactions (dbctl report), then a bigger pool or more hosts.",
        ),
    ]
    return [
        AlarmSpec(
            key=f"pgbouncer-{pool.replace('_', '-')}-{kind}",
            target=POOL_TARGET_PREFIX + pool,
            namespace=custom_namespace(settings.stack),
            metric=metric,
            statistic="Maximum",
            comparison=comparison,
            threshold=threshold,
            period=60,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            treat_missing_data="notBreaching",
            description=f"PgBouncer pool {pool} {what}",
        )
        for pool in POOLS
        for kind, metric, comparison, threshold, periods, what in kinds
    ]


def alarm_specs(settings: StackSettings) -> list[AlarmSpec]:
    """Every metric alarm the stack gets, primary first, then each replica, slow queries, PgBouncer."""
    t = thresholds(settings)
    specs = _instance_specs("primary", t, replica=False)
    for n in range(1, settings.replica_count + 1):
        specs += _instance_specs(f"replica-{n}", t, replica=True)
    specs.append(
        AlarmSpec(
            key="slow-queries",
            target="primary",
            namespace=custom_namespace(settings.stack),
            metric=SLOW_QUERY_METRIC,
            statistic="Sum",
            comparison="GreaterThanThreshold",
            threshold=t.slow_queries_per_5min,
            period=300,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            treat_missing_data="notBreaching",
            description=(
                f"More than {t.slow_queries_per_5min} statements over {SLOW_QUERY_THRESHOLD_MS} ms in "
                "5 minutes on the primary. Action: review query plans (EXPLAIN ANALYZE), add indexes."
            ),
        )
    )
    specs += pool_specs(settings)
    specs += [
        AlarmSpec(
            key="pgbouncer-unhealthy-hosts",
            target="pgbouncer",
            namespace=NLB_NAMESPACE,
            metric="UnHealthyHostCount",
            statistic="Maximum",
            comparison="GreaterThanThreshold",
            threshold=0,
            period=60,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data="notBreaching",
            description=(
                "A PgBouncer host has failed the NLB health check for 3 minutes. Action: check the host's "
                "pgbouncer service (SSM Session Manager) and the Auto Scaling group's activity."
            ),
        ),
        AlarmSpec(
            key="pgbouncer-healthy-hosts",
            target="pgbouncer",
            namespace=NLB_NAMESPACE,
            metric="HealthyHostCount",
            statistic="Minimum",
            comparison="LessThanThreshold",
            threshold=t.pgbouncer_desired_hosts,
            period=60,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            treat_missing_data="breaching",
            description=(
                f"Fewer than {t.pgbouncer_desired_hosts} healthy PgBouncer host(s) behind the NLB for "
                "3 minutes. Action: check the Auto Scaling group and the hosts' pgbouncer service."
            ),
        ),
    ]
    return specs


# --- the dashboard ----------------------------------------------------------------------------------------


def _rds_metric(metric: str, ident: str, label: str, stat: str) -> list[object]:
    return [RDS_NAMESPACE, metric, "DBInstanceIdentifier", ident, {"label": label, "stat": stat}]


def dashboard_body(
    settings: StackSettings,
    *,
    primary_id: str,
    replica_ids: Sequence[str],
    nlb_arn_suffix: str | None,
    target_group_arn_suffix: str | None,
    alarm_arns: Sequence[str],
) -> dict[str, object]:
    """The CloudWatch dashboard (JSON body as a dict): the metrics the alarms watch, with their thresholds."""
    t = thresholds(settings)
    instances = [(primary_id, "primary"), *((r, f"replica-{i}") for i, r in enumerate(replica_ids, 1))]

    def graph(
        title: str, metrics: list[list[object]], line: tuple[str, float] | None = None
    ) -> dict[str, object]:
        props: dict[str, object] = {
            "title": title,
            "region": settings.region,
            "view": "timeSeries",
            "stacked": False,
            "period": 60,
            "metrics": metrics,
        }
        if line is not None:
            props["annotations"] = {"horizontal": [{"label": line[0], "value": line[1]}]}
        return {"type": "metric", "width": 12, "height": 6, "properties": props}

    widgets: list[dict[str, object]] = [
        {
            "type": "alarm",
            "width": 24,
            "height": 4,
            "properties": {
                "title": f"spike-land-{settings.stack} database alarms",
                "alarms": list(alarm_arns),
            },
        },
        graph(
            "Database connections",
            [_rds_metric("DatabaseConnections", i, n, "Maximum") for i, n in instances],
            (f"alarm ({t.connections_percent:g} % of max_connections)", t.connections),
        ),
        graph(
            "CPU utilization (%)",
            [_rds_metric("CPUUtilization", i, n, "Average") for i, n in instances],
            ("alarm", t.cpu_percent),
        ),
        graph(
            "Free storage (bytes)",
            [_rds_metric("FreeStorageSpace", primary_id, "primary", "Minimum")],
            ("alarm", t.free_storage_bytes),
        ),
        graph(
            "Freeable memory (bytes)",
            [_rds_metric("FreeableMemory", i, n, "Minimum") for i, n in instances],
            ("alarm", t.freeable_memory_bytes),
        ),
        graph(
            "Disk latency (s)",
            [
                _rds_metric(m, i, f"{n} {m}", "Average")
                for i, n in instances
                for m in ("ReadLatency", "WriteLatency")
            ],
        ),
        graph(
            f"Slow statements (> {SLOW_QUERY_THRESHOLD_MS} ms) per 5 min",
            [[custom_namespace(settings.stack), SLOW_QUERY_METRIC, {"stat": "Sum", "period": 300}]],
            ("alarm", t.slow_queries_per_5min),
        ),
    ]
    if replica_ids:
        widgets.append(
            graph(
                "Replica lag (s)",
                [
                    _rds_metric("ReplicaLag", r, f"replica-{i}", "Maximum")
                    for i, r in enumerate(replica_ids, 1)
                ],
                ("alarm", t.replica_lag_seconds),
            )
        )
    if nlb_arn_suffix and target_group_arn_suffix:
        dims = ["LoadBalancer", nlb_arn_suffix, "TargetGroup", target_group_arn_suffix]
        widgets.append(
            graph(
                "PgBouncer hosts behind the NLB",
                [
                    [NLB_NAMESPACE, "HealthyHostCount", *dims, {"stat": "Minimum", "label": "healthy"}],
                    [NLB_NAMESPACE, "UnHealthyHostCount", *dims, {"stat": "Maximum", "label": "unhealthy"}],
                ],
                ("desired", t.pgbouncer_desired_hosts),
            )
        )
    # PgBouncer's pools (hosts/pool_metrics.py), the Maximum over the hosts, with the alarms' lines.
    ns, m = custom_namespace(settings.stack), settings.monitoring

    def pools(metric: str) -> list[list[object]]:
        return [
            [ns, metric, "Stack", settings.stack, "Pool", p, {"stat": "Maximum", "label": p}] for p in POOLS
        ]

    widgets += [
        graph("PgBouncer clients waiting", pools("ClientsWaiting")),
        graph(
            "PgBouncer longest client wait (s)", pools("MaxWaitSeconds"), ("alarm", m.pool_max_wait_seconds)
        ),
        graph(
            "PgBouncer server connections active",
            pools("ServersActive"),
            ("default_pool_size", settings.pgbouncer.default_pool_size),
        ),
        graph("PgBouncer transactions per second", pools("TransactionsPerSecond")),
    ]
    return {"widgets": widgets}
