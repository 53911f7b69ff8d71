"""The slow-query metric filter against lines a real PostgreSQL writes with RDS's log_line_prefix.

A cluster of its own (the shared one keeps its log format): log_line_prefix = '%t:%r:%u@%d:[%p]:' as on RDS,
log_min_duration_statement = 100ms as in the stack's parameter group. Statements of ~150 ms and ~1.2 s are
both logged; the pattern must count exactly the slow ones.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest

from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.stackconfig.slow_query import SLOW_QUERY_FILTER_PATTERN, filter_pattern_matches

RDS_LOG_LINE_PREFIX = "%t:%r:%u@%d:[%p]:"


@pytest.fixture(scope="module")
def rds_logging_cluster() -> Iterator[Cluster]:
    with throwaway_cluster("dbctl-test-slowlog-") as cluster:
        cluster.set_parameter("log_line_prefix", RDS_LOG_LINE_PREFIX)
        cluster.set_parameter("log_min_duration_statement", "100ms")
        yield cluster


def _log_lines(cluster: Cluster, marker: str) -> list[str]:
    for _ in range(50):  # the logger may flush a moment after the statement returns
        lines = [line for line in cluster.log_file.read_text(errors="replace").splitlines() if marker in line]
        if lines:
            return lines
        time.sleep(0.1)
    return []


def test_pattern_counts_only_statements_over_one_second(rds_logging_cluster: Cluster) -> None:
    marker = f"m{secrets.token_hex(4)}"
    with psycopg.connect(rds_logging_cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"SELECT pg_sleep(1.2), 'slow-simple-{marker}'")
        conn.execute(f"SELECT pg_sleep(0.15), 'fast-{marker}', 'duration: 5000 ms'")
    lines = _log_lines(rds_logging_cluster, marker)
    duration_lines = [line for line in lines if "duration:" in line and "LOG:" in line]
    assert len(duration_lines) >= 2, lines  # both fast and slow got logged (threshold 100 ms)
    slow = [line for line in duration_lines if filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, line)]
    fast = [line for line in duration_lines if not filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, line)]
    assert len(slow) == 1 and f"slow-simple-{marker}" in slow[0]
    assert len(fast) == 1 and f"fast-{marker}" in fast[0]
    assert all(line.split(" UTC:", 1)[1].count(":[") == 1 for line in duration_lines)  # the RDS prefix shape


def test_extended_protocol_statements_are_counted(rds_logging_cluster: Cluster) -> None:
    marker = f"m{secrets.token_hex(4)}"
    with psycopg.connect(rds_logging_cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s), %s::text", (1.1, marker))
    # The parameters go to a DETAIL line; the duration line names the prepared statement.
    all_lines = rds_logging_cluster.log_file.read_text(errors="replace").splitlines()
    detail = [i for i, line in enumerate(all_lines) if "DETAIL:" in line and marker in line]
    assert detail, all_lines[-5:]
    duration_line = all_lines[detail[-1] - 1]
    assert "execute" in duration_line
    assert filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, duration_line)
    assert not filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, all_lines[detail[-1]])
