"""Parameter groups for observability and maintenance: pg_cron, auto_explain, autovacuum (issue 13).

Under mocks over the real stack files, per stack; plus the settings that drive them and their errors."""

from __future__ import annotations

import pytest

from dbctl.stackconfig.parameters import primary_parameters
from dbctl.stackconfig.settings import MonitoringSettings, SettingsError
from dbctl.stackconfig.slow_query import (
    SLOW_QUERY_FILTER_PATTERN,
    SLOW_QUERY_THRESHOLD_MS,
    filter_pattern_matches,
)
from tests.unit.harness import Resource, named, of_type, run, settings_for

STACKS = ("dev", "prod")
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"


def params(group: Resource) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["value"], p.get("applyMethod", "immediate")) for p in group.inputs["parameters"]}


def groups(stack: str) -> dict[str, dict[str, tuple[str, str]]]:
    r = run(stack)
    found = {g.name: params(g) for g in of_type(r.resources, PARAMETER_GROUP)}
    assert named(of_type(r.resources, PARAMETER_GROUP), "database-primary")
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_every_parameter_group_preloads_pg_cron_and_auto_explain(stack: str) -> None:
    for name, p in groups(stack).items():
        libraries = p["shared_preload_libraries"][0].split(",")
        assert {"pg_stat_statements", "pg_cron", "auto_explain"} <= set(libraries), name
        assert p["shared_preload_libraries"][1] == "pending-reboot"
        assert p["cron.database_name"] == (settings_for(stack).database_name, "pending-reboot")
        # auto_explain's threshold is the slow-query alarm's; sampling and ANALYZE off by default.
        assert p["auto_explain.log_min_duration"] == (str(SLOW_QUERY_THRESHOLD_MS), "immediate")
        assert p["auto_explain.sample_rate"][0] == "1"
        assert p["auto_explain.log_analyze"][0] == "0"
        # Autovacuum is tuned, not turned off.
        assert "autovacuum" not in p or p["autovacuum"][0] == "1"
        assert float(p["autovacuum_vacuum_scale_factor"][0]) < 0.2
        assert float(p["autovacuum_analyze_scale_factor"][0]) < 0.1


def test_prod_has_a_replica_group_that_preloads_them_too() -> None:
    assert set(groups("prod")) == {"database-primary", "database-replica"}


def test_auto_explain_settings_reach_the_parameter_group() -> None:
    r = run("dev", {"monitoring": {"autoExplainSampleRate": 0.25, "autoExplainLogAnalyze": True}})
    p = params(named(of_type(r.resources, PARAMETER_GROUP), "database-primary"))
    assert p["auto_explain.sample_rate"][0] == "0.25"
    assert p["auto_explain.log_analyze"][0] == "1"


def test_cron_database_follows_the_database_name() -> None:
    p = {x.name: x.value for x in primary_parameters(100, database_name="other_db")}
    assert p["cron.database_name"] == "other_db"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"monitoring.autoExplainSampleRate": 0},
            "spike-land-db:monitoring.autoExplainSampleRate = 0 is invalid",
        ),
        ({"monitoring.autoExplainSampleRate": 1.5}, "less than or equal to 1"),
        ({"monitoring.autoExplainLogAnalyze": "sometimes"}, "spike-land-db:monitoring.autoExplainLogAnalyze"),
        ({"monitoring.autoExplain": 1}, "spike-land-db:monitoring.autoExplain is not a known setting"),
    ],
)
def test_bad_monitoring_settings_name_the_key(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        settings_for("dev", overrides)


def test_defaults_are_no_sampling_and_no_analyze() -> None:
    assert MonitoringSettings() == MonitoringSettings(
        auto_explain_sample_rate=1.0, auto_explain_log_analyze=False
    )


def test_the_slow_query_filter_skips_auto_explains_plan_line() -> None:
    prefix = "2026-11-25 06:01:02 UTC:10.0.1.5(1):spike_app@spike_land:[7]:LOG:  "
    assert filter_pattern_matches(
        SLOW_QUERY_FILTER_PATTERN, prefix + "duration: 1202.1 ms  statement: SELECT 1"
    )
    assert not filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, prefix + "duration: 1202.1 ms  plan:")
