"""pgbouncer.processes: one PgBouncer process per vCPU by default, counted in the pool budget, over the real
stack files (tests/unit/harness.py), refused before any resource when wrong."""

import pytest

from dbctl.pgbouncer import capacity
from dbctl.stackconfig.settings import SettingsError
from tests.unit.harness import failing_run, settings_for


def test_prod_runs_one_process_per_vcpu_of_its_c7g_large_and_dev_one() -> None:
    prod = settings_for("prod")
    assert (prod.pgbouncer.instance_type, prod.pgbouncer.processes) == ("c7g.large", 2)
    assert capacity.instance_vcpus("c7g.large") == 2
    assert settings_for("dev").pgbouncer.processes == 1


@pytest.mark.parametrize(
    ("instance_type", "vcpus"), [("t4g.small", 2), ("c7g.medium", 1), ("c7g.xlarge", 4), ("m7g.2xlarge", 8)]
)
def test_the_default_follows_the_instance_type(instance_type: str, vcpus: int) -> None:
    s = settings_for("prod", {"pgbouncer.instanceType": instance_type, "pgbouncer.defaultPoolSize": 10})
    assert s.pgbouncer.processes == vcpus


def test_an_explicit_count_wins_and_a_string_of_digits_is_a_count() -> None:
    assert settings_for("prod", {"pgbouncer.processes": 1}).pgbouncer.processes == 1
    assert settings_for("prod", {"pgbouncer.processes": "3"}).pgbouncer.processes == 3


def test_an_unknown_instance_type_without_a_count_is_refused_with_the_fix_before_any_resource() -> None:
    error, declared = failing_run("prod", {"pgbouncer.instanceType": "x2gd.large"})
    assert isinstance(error, SettingsError)
    message = str(error)
    assert "spike-land-db:pgbouncer.processes" in message and "x2gd.large" in message
    assert message.endswith("set pgbouncer.processes") and message.count("\n") == 0
    assert declared == []
    s = settings_for("prod", {"pgbouncer.instanceType": "x2gd.large", "pgbouncer.processes": 2})
    assert s.pgbouncer.processes == 2


@pytest.mark.parametrize(
    ("value", "problem"),
    [(0, "greater than or equal to 1"), (True, "must be a whole number"), (1.5, "must be a whole number"),
     ("two", "must be a whole number"), (129, "less than or equal to 128")],
)  # fmt: skip
def test_processes_is_a_strict_count(value: object, problem: str) -> None:
    with pytest.raises(SettingsError, match=rf"spike-land-db:pgbouncer\.processes = .*{problem}"):
        settings_for("prod", {"pgbouncer.processes": value})


def test_several_processes_on_a_pgbouncer_without_peers_are_refused_before_any_resource() -> None:
    error, declared = failing_run("prod", {"pgbouncer.version": "1.18"})
    assert isinstance(error, SettingsError)
    assert "2 processes need pgbouncer.version >= 1.19" in str(error)
    assert "set pgbouncer.processes to 1" in str(error)
    assert declared == []
    assert (
        settings_for("prod", {"pgbouncer.version": "1.18", "pgbouncer.processes": 1}).pgbouncer.processes == 1
    )


def test_the_budget_counts_every_process_of_every_host() -> None:
    dev = settings_for("dev")
    budget = dev.effective_max_connections - capacity.DEFAULT_HEADROOM
    per_pool = dev.pgbouncer.default_pool_size + dev.pgbouncer.reserve_pool_size
    # One host and its replacement during a refresh, two pools on the primary (no replica): one process
    # fits, two do not.
    assert 2 * 2 * per_pool <= budget < 2 * 2 * 2 * per_pool
    error, declared = failing_run("dev", {"pgbouncer.processes": 2})
    assert isinstance(error, SettingsError)
    shown = "2 host(s) x 2 process(es) x 2 pool(s) x (12 default_pool_size + 3 reserve_pool_size)"
    assert f"{shown} = {8 * per_pool}" in str(error)
    assert "fewer PgBouncer hosts or processes" in str(error)
    assert declared == []
