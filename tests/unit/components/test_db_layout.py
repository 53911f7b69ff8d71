"""Pure helpers behind the database component: subnet arithmetic and parameter-group contents."""

import pytest

from components.subnets import private_subnet_cidrs
from dbctl.stackconfig.parameters import primary_parameters, replica_parameters


def test_private_subnets_are_disjoint_blocks_of_the_vpc() -> None:
    assert private_subnet_cidrs("10.40.0.0/16", 3) == ["10.40.0.0/20", "10.40.16.0/20", "10.40.32.0/20"]
    assert private_subnet_cidrs("10.1.2.0/24", 2) == ["10.1.2.0/28", "10.1.2.16/28"]


def test_too_many_subnets_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 16"):
        private_subnet_cidrs("10.40.0.0/16", 17)


def test_static_parameters_wait_for_a_reboot() -> None:
    static = {
        "shared_preload_libraries",
        "max_connections",
        "pg_stat_statements.max",
        "track_activity_query_size",
        "cron.database_name",
    }
    for p in primary_parameters(100):
        assert (p.apply_method == "pending-reboot") == (p.name in static), p.name


def test_replica_parameters_extend_the_primary_and_are_unique() -> None:
    primary = {p.name: p.value for p in primary_parameters(300)}
    replica = {p.name: p.value for p in replica_parameters(300, 30_000)}
    assert len(replica) == len(replica_parameters(300, 30_000))
    assert primary.items() <= replica.items()
    assert replica["hot_standby_feedback"] == "1" and replica["max_standby_streaming_delay"] == "30000"
