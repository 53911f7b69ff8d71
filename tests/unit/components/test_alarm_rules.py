"""components.alarm_rules: thresholds from settings; the slow-query filter on real PostgreSQL log lines."""

from __future__ import annotations

import pytest

from components import alarm_rules
from components.alarm_rules import alarm_specs, thresholds
from dbctl.pgbouncer import capacity
from dbctl.stackconfig.slow_query import SLOW_QUERY_FILTER_PATTERN, filter_pattern_matches, tokenize_log_event
from tests.unit.harness import settings_for

GIB = 1024**3

# Real lines, written by PostgreSQL 15 with RDS's log_line_prefix (%t:%r:%u@%d:[%p]:) and
# log_min_duration_statement = 1s, then 100ms (captured from a local server; pids/ports as logged).
SLOW_SIMPLE = (
    "2026-11-25 05:52:44 UTC:127.0.0.1(58704):spike_admin@spike_land:[11494]:LOG:  "
    "duration: 1202.851 ms  statement: SELECT pg_sleep(1.2)"
)
SLOW_EXTENDED = (
    "2026-11-25 05:52:46 UTC:127.0.0.1(58704):spike_admin@spike_land:[11494]:LOG:  "
    "duration: 1101.963 ms  execute <unnamed>: SELECT pg_sleep($1)"
)
PARAMS_DETAIL = (
    "2026-11-25 05:52:46 UTC:127.0.0.1(58704):spike_admin@spike_land:[11494]:DETAIL:  parameters: $1 = '1.1'"
)
FAST = (
    "2026-11-25 05:52:46 UTC:127.0.0.1(49914):spike_admin@spike_land:[11551]:LOG:  "
    "duration: 150.868 ms  statement: SELECT pg_sleep(0.15)"
)
FAST_QUOTING_A_DURATION = (
    "2026-11-25 05:52:46 UTC:127.0.0.1(49914):spike_admin@spike_land:[11551]:LOG:  "
    "duration: 200.595 ms  statement: SELECT 'duration: 5000 ms' AS note, pg_sleep(0.2)"
)
SIGHUP = '2026-11-25 05:52:46 UTC::@:[11481]:LOG:  parameter "log_min_duration_statement" changed to "100ms"'
# Shapes RDS writes too: no client address (background/local), and an autovacuum/checkpoint line.
SLOW_NO_REMOTE = (
    "2026-11-25 06:01:02 UTC::spike_app@spike_land:[2201]:LOG:  duration: 65000.001 ms  statement: VACUUM"
)
CHECKPOINT = (
    "2026-11-25 06:01:02 UTC::@:[400]:LOG:  checkpoint complete: wrote 1000 buffers (6.1%); "
    "write=1000.5 s, sync=0.1 s, total=1001.0 s"
)
EXACTLY_ONE_SECOND = (
    "2026-11-25 06:01:02 UTC:10.0.1.5(1):a@b:[1]:LOG:  duration: 1000.000 ms  statement: SELECT 1"
)


@pytest.mark.parametrize("line", [SLOW_SIMPLE, SLOW_EXTENDED, SLOW_NO_REMOTE])
def test_slow_query_pattern_counts_statements_over_one_second(line: str) -> None:
    assert filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, line)


@pytest.mark.parametrize(
    "line", [FAST, FAST_QUOTING_A_DURATION, PARAMS_DETAIL, SIGHUP, CHECKPOINT, EXACTLY_ONE_SECOND, ""]
)
def test_slow_query_pattern_ignores_everything_else(line: str) -> None:
    assert not filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, line)


def test_pattern_is_the_space_delimited_form_cloudwatch_takes() -> None:
    assert SLOW_QUERY_FILTER_PATTERN == '[..., label="duration:", ms>1000, unit="ms", kind!="plan:", ...]'


def test_tokenizer_groups_quotes_and_brackets_and_collapses_spaces() -> None:
    assert tokenize_log_event('a  "b c"  [d e] f') == ["a", "b c", "d e", "f"]
    tokens = tokenize_log_event(SLOW_SIMPLE)
    assert tokens[3:6] == ["duration:", "1202.851", "ms"]


def test_evaluator_semantics() -> None:
    assert filter_pattern_matches("[a, b=x*, c>2]", "1 xyz 3")
    assert not filter_pattern_matches("[a, b=x*, c>2]", "1 xyz 2")
    assert not filter_pattern_matches("[a, b]", "1 2 3")  # without an ellipsis every field is accounted for
    assert filter_pattern_matches("[..., c!=4]", "1 2 3")
    assert not filter_pattern_matches("[..., c>1]", "1 2 three")  # a number comparison needs a number
    with pytest.raises(ValueError, match="not a space-delimited"):
        filter_pattern_matches("duration", "duration")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_connection_threshold_is_80_percent_of_the_class_formula(stack: str) -> None:
    s = settings_for(stack)
    t = thresholds(s)
    expected_max = capacity.max_connections(s.instance_class)
    assert t.max_connections == expected_max
    assert t.connections == int(expected_max * 0.8)
    assert t.connections / expected_max <= 0.8 < (t.connections + 1) / expected_max


def test_dev_and_prod_get_their_own_sizes() -> None:
    dev, prod = thresholds(settings_for("dev")), thresholds(settings_for("prod"))
    assert dev.connections < prod.connections
    assert dev.free_storage_bytes == 20 * GIB * 20 // 100
    assert prod.free_storage_bytes == 100 * GIB * 20 // 100
    assert prod.pgbouncer_desired_hosts == 2
    assert dev.pgbouncer_desired_hosts == 1


def test_explicit_max_connections_drives_the_threshold() -> None:
    t = thresholds(settings_for("prod", {"maxConnections": 500}))
    assert (t.max_connections, t.connections) == (500, 400)


def test_thresholds_follow_settings() -> None:
    s = settings_for(
        "prod",
        {
            "alarms.replicaLagSeconds": 45,
            "alarms.slowQueriesPer5Min": 25,
            "alarms.connectionsPercent": 90,
            "alarms.readLatencyMs": 35,
        },
    )
    specs = {spec.key: spec for spec in alarm_specs(s)}
    assert specs["replica-1-replica-lag"].threshold == 45
    assert specs["slow-queries"].threshold == 25
    assert specs["primary-read-latency"].threshold == pytest.approx(0.035)  # CloudWatch reports seconds
    assert specs["replica-1-write-latency"].threshold == pytest.approx(0.020)
    assert specs["primary-connections"].threshold == int(capacity.max_connections(s.instance_class) * 0.9)


def test_one_alarm_per_seed_item_per_instance() -> None:
    prod = {
        spec.key
        for spec in alarm_specs(settings_for("prod", {"replicaCount": 2, "pgbouncer.version": "1.25"}))
    }
    per_instance = ["connections", "cpu", "freeable-memory", "read-latency", "write-latency"]
    expected = {f"primary-{m}" for m in per_instance} | {"primary-free-storage", "slow-queries"}
    for n in (1, 2):
        expected |= {f"replica-{n}-{m}" for m in [*per_instance, "replica-lag"]}
    expected |= {"pgbouncer-unhealthy-hosts", "pgbouncer-healthy-hosts"}
    expected |= {f"pgbouncer-{p}-{k}" for p in ("spike-land", "spike-land-ro") for k in ("wait", "saturated")}
    assert prod == expected
    dev = {spec.key for spec in alarm_specs(settings_for("dev"))}
    assert not any(k.startswith("replica-") for k in dev)


def test_missing_data_choices() -> None:
    specs = {spec.key: spec for spec in alarm_specs(settings_for("prod"))}
    assert specs["replica-1-replica-lag"].treat_missing_data == "breaching"
    assert specs["slow-queries"].treat_missing_data == "notBreaching"
    assert specs["pgbouncer-healthy-hosts"].treat_missing_data == "breaching"
    assert specs["primary-cpu"].treat_missing_data == "missing"


def test_slow_query_metric_lives_in_the_stack_namespace() -> None:
    specs = {spec.key: spec for spec in alarm_specs(settings_for("dev"))}
    assert specs["slow-queries"].namespace == alarm_rules.custom_namespace("dev") == "SpikeLandDb/dev"
    assert specs["slow-queries"].statistic == "Sum"
    assert specs["slow-queries"].period == 300
