"""auto_explain: the plan of a statement slower than the slow-query threshold lands in the same server log,
and the slow-query metric filter still counts that statement once, not twice.

A cluster of its own with RDS's log_line_prefix and the stack's log_min_duration_statement (100 ms); the
throwaway cluster preloads auto_explain with the alarm's threshold (dbctl.cluster), as the parameter group
does (dbctl/stackconfig/parameters.py).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest

from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.postgres.config import AUTO_EXPLAIN_MIN_DURATION_MS
from dbctl.postgres.install import preload_libraries
from dbctl.stackconfig.slow_query import (
    SLOW_QUERY_FILTER_PATTERN,
    SLOW_QUERY_THRESHOLD_MS,
    filter_pattern_matches,
)
from tests.integration.postgres.test_slow_query_filter import RDS_LOG_LINE_PREFIX

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def explaining_cluster() -> Iterator[Cluster]:
    if "auto_explain" not in preload_libraries():
        pytest.fail(
            "auto_explain (PostgreSQL contrib) is missing from this server: install postgresql-contrib"
        )
    with throwaway_cluster("dbctl-test-explain-") as cluster:
        cluster.set_parameter("log_line_prefix", RDS_LOG_LINE_PREFIX)
        cluster.set_parameter("log_min_duration_statement", "100ms")
        yield cluster


def test_local_threshold_is_the_alarms() -> None:
    assert AUTO_EXPLAIN_MIN_DURATION_MS == SLOW_QUERY_THRESHOLD_MS


def _new_lines(cluster: Cluster, offset: int, marker: str) -> list[str]:
    for _ in range(50):  # the logger may flush a moment after the statement returns
        text = cluster.log_file.read_text(errors="replace")[offset:]
        if text.count(marker) >= 3:  # the statement line, the plan's Query Text, and the fast one
            return text.splitlines()
        time.sleep(0.1)
    return cluster.log_file.read_text(errors="replace")[offset:].splitlines()


def test_a_slow_plan_is_logged_and_the_statement_counted_once(explaining_cluster: Cluster) -> None:
    marker = f"m{secrets.token_hex(4)}"
    offset = len(explaining_cluster.log_file.read_text(errors="replace"))
    with psycopg.connect(explaining_cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"SELECT pg_sleep(1.2), 'slow-{marker}'")
        conn.execute(f"SELECT pg_sleep(0.15), 'fast-{marker}'")
    lines = _new_lines(explaining_cluster, offset, marker)
    plan_at = [
        i for i, line in enumerate(lines) if "LOG:" in line and "duration:" in line and "plan:" in line
    ]
    assert len(plan_at) == 1, lines  # only the slow statement's plan (the fast one is under 1 s)
    assert any(f"slow-{marker}" in line and "Query Text:" in line for line in lines[plan_at[0] :]), lines
    counted = [line for line in lines if filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, line)]
    assert len(counted) == 1 and f"slow-{marker}" in counted[0], counted
