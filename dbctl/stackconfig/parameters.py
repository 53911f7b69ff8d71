"""The RDS parameter groups' contents, pure: one line of reason per non-default setting.

Static parameters (they need a restart) carry `pending-reboot`; RDS refuses `immediate` for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dbctl.core import names
from dbctl.stackconfig.settings import MonitoringSettings
from dbctl.stackconfig.slow_query import SLOW_QUERY_THRESHOLD_MS

ApplyMethod = Literal["immediate", "pending-reboot"]


@dataclass(frozen=True)
class Parameter:
    name: str
    value: str
    apply_method: ApplyMethod = "immediate"


# Loaded at server start (static): per-statement statistics, the weekly VACUUM's scheduler, slow plans.
PRELOAD_LIBRARIES = ("pg_stat_statements", "pg_cron", "auto_explain")


def primary_parameters(
    max_connections: int,
    *,
    database_name: str = names.DATABASE_NAME,
    monitoring: MonitoringSettings | None = None,
) -> list[Parameter]:
    """The primary's parameters (the replicas start from the same list, see replica_parameters)."""
    m = monitoring or MonitoringSettings()
    return [
        # TLS only: plaintext connections are refused, whatever the client asks.
        Parameter("rds.force_ssl", "1"),
        Parameter("ssl_min_protocol_version", "TLSv1.2"),
        # New passwords hashed as SCRAM-SHA-256 (we also set verifiers directly; md5 never again).
        Parameter("password_encryption", "scram-sha-256"),
        # Per-statement statistics for the slow-query review, pg_cron for the weekly VACUUM ANALYZE
        # (dbctl/schema/maintenance.py) and auto_explain for slow plans; loaded at start, so static.
        Parameter("shared_preload_libraries", ",".join(PRELOAD_LIBRARIES), "pending-reboot"),
        # pg_cron's jobs and metadata live in the app's database (the only one; static).
        Parameter("cron.database_name", database_name, "pending-reboot"),
        # The plan of every statement slower than the slow-query alarm's threshold (1 s), in the same
        # exported postgresql log, right after its duration line. Sampling and ANALYZE figures are settings
        # (monitoring.autoExplainSampleRate, monitoring.autoExplainLogAnalyze; docs/settings.md).
        Parameter("auto_explain.log_min_duration", str(SLOW_QUERY_THRESHOLD_MS)),
        Parameter("auto_explain.sample_rate", f"{m.auto_explain_sample_rate:g}"),
        Parameter("auto_explain.log_analyze", "1" if m.auto_explain_log_analyze else "0"),
        # Autovacuum stays on, earlier on big tables: vacuum at 5 % dead rows (default 20 %), analyze at
        # 2 % changed (default 10 %), and after 5 % inserted (default 20 %) so insert-only tables get
        # their visibility map set; the weekly VACUUM ANALYZE is the safety net, not the plan.
        Parameter("autovacuum_vacuum_scale_factor", "0.05"),
        Parameter("autovacuum_analyze_scale_factor", "0.02"),
        Parameter("autovacuum_vacuum_insert_scale_factor", "0.05"),
        # Every autovacuum run longer than 10 s is logged, with what it removed.
        Parameter("log_autovacuum_min_duration", "10000"),
        # Also count statements run inside functions and procedures.
        Parameter("pg_stat_statements.track", "all"),
        # Not utility statements: with track=all it records the ALTER ROLE … PASSWORD '<verifier>' that
        # dbctl runs nested in a DO block, and spike_monitor reads it through pg_monitor (superuser-only
        # GUC, so RDS's admin cannot turn it off per session; tests/integration/schema/test_secrets.py).
        Parameter("pg_stat_statements.track_utility", "0"),
        # Keep more distinct statements than the default 5000 before evicting (static).
        Parameter("pg_stat_statements.max", "10000", "pending-reboot"),
        # I/O timing in pg_stat_statements and EXPLAIN (ANALYZE): cheap on Nitro instances.
        Parameter("track_io_timing", "1"),
        # Long Prisma queries are cut at 1 kB in pg_stat_activity; keep 4 kB (static).
        Parameter("track_activity_query_size", "4096", "pending-reboot"),
        # The seed's slow-query log: every statement slower than 100 ms, with its duration.
        Parameter("log_min_duration_statement", "100"),
        # The seed's audit ask: log all DDL (CREATE/ALTER/DROP). Passwords arrive as verifiers, never plain.
        Parameter("log_statement", "ddl"),
        # Who connected from where: with failed authentication (always logged as FATAL), this is the
        # seed's "log failed authentication attempts" trail.
        Parameter("log_connections", "1"),
        Parameter("log_disconnections", "1"),
        # Lock waits longer than deadlock_timeout (1 s): the usual cause of sudden slowness.
        Parameter("log_lock_waits", "1"),
        # Sorts and hashes spilling more than 10 MB to disk: a sign work_mem is too small.
        Parameter("log_temp_files", "10240"),
        # A session idle inside an open transaction holds locks and blocks vacuum: end it after 60 s.
        Parameter("idle_in_transaction_session_timeout", "60000"),
        # Explicit, equal on primary and replicas (a hot standby refuses to start with fewer than its
        # primary); PgBouncer's pool budget and the connections alarm use the same number (static).
        Parameter("max_connections", str(max_connections), "pending-reboot"),
    ]


def replica_parameters(
    max_connections: int,
    max_standby_delay_ms: int,
    *,
    database_name: str = names.DATABASE_NAME,
    monitoring: MonitoringSettings | None = None,
) -> list[Parameter]:
    """The replicas': the primary's list plus standby conflict handling (pg_cron waits while in recovery)."""
    return [
        *primary_parameters(max_connections, database_name=database_name, monitoring=monitoring),
        # Tell the primary which rows replica queries still need, so vacuum does not remove them and
        # long analytics queries are not cancelled; the cost is some bloat on the primary while they run.
        Parameter("hot_standby_feedback", "1"),
        # When a replay conflict remains, wait at most the replica-lag alarm threshold (30 s) before
        # cancelling the replica query, rather than letting lag grow without bound.
        Parameter("max_standby_streaming_delay", str(max_standby_delay_ms)),
        Parameter("max_standby_archive_delay", str(max_standby_delay_ms)),
    ]
