"""Instance class -> max_connections, and the PgBouncer connection budget."""

import pytest

from dbctl.pgbouncer.capacity import (
    DEFAULT_HEADROOM,
    GIB,
    INSTANCE_MEMORY_GIB,
    RDS_BYTES_PER_CONNECTION,
    PoolBudgetError,
    PoolTarget,
    UnknownInstanceClassError,
    check_layout,
    check_pool_budget,
    db_instance_class_memory,
    instance_memory_bytes,
    max_connections,
    pool_targets,
)


@pytest.mark.parametrize(
    ("instance_class", "gib"),
    [
        ("db.t4g.micro", 1),
        ("db.t3.medium", 4),
        ("db.t4g.2xlarge", 32),
        ("db.m6g.large", 8),
        ("db.m7g.4xlarge", 64),
        ("db.m5.16xlarge", 256),
        ("db.r6g.large", 16),
        ("db.r7g.2xlarge", 64),
        ("db.r6i.16xlarge", 512),
    ],
)
def test_memory_table_matches_aws(instance_class: str, gib: int) -> None:
    assert instance_memory_bytes(instance_class) == gib * GIB


def test_table_covers_the_families_and_sizes_we_deploy() -> None:
    for family in ("t3", "t4g"):
        for size in ("micro", "small", "medium", "large", "xlarge", "2xlarge"):
            assert f"db.{family}.{size}" in INSTANCE_MEMORY_GIB
    for family in ("m5", "m6g", "m6i", "m7g", "r5", "r6g", "r6i", "r7g"):
        for size in ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"):
            assert f"db.{family}.{size}" in INSTANCE_MEMORY_GIB


def test_db_instance_class_memory_is_below_nominal() -> None:
    for instance_class in INSTANCE_MEMORY_GIB:
        nominal = instance_memory_bytes(instance_class)
        assert 0.7 * nominal < db_instance_class_memory(instance_class) < nominal


@pytest.mark.parametrize(
    ("instance_class", "expected"),
    [
        ("db.t4g.micro", 82),
        ("db.t3.small", 192),
        ("db.t4g.medium", 413),  # observed on RDS: 413
        ("db.m6g.large", 855),  # observed on 8 GiB classes: 856
        ("db.r6g.large", 1738),
        ("db.r6g.xlarge", 3504),
        ("db.r6g.2xlarge", 5000),  # the cap
        ("db.r7g.16xlarge", 5000),
    ],
)
def test_max_connections_follows_the_rds_formula(instance_class: str, expected: int) -> None:
    assert max_connections(instance_class) == expected
    assert expected == min(db_instance_class_memory(instance_class) // RDS_BYTES_PER_CONNECTION, 5000)


def test_unknown_class_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownInstanceClassError, match=r"unknown RDS instance class 'db\.x9\.huge'.*db\.t4g\.micro"
    ):
        max_connections("db.x9.huge")


def test_budget_within_limits_reports_spare() -> None:
    # prod-like: two PgBouncer hosts, a replica, so one pool on the primary.
    budget = check_pool_budget(
        max_connections=max_connections("db.r6g.large"),
        default_pool_size=20,
        reserve_pool_size=5,
        pools=1,
        pgbouncer_hosts=2,
    )
    assert budget.pooled == 50
    assert budget.headroom == DEFAULT_HEADROOM
    assert budget.spare == 1738 - 50 - DEFAULT_HEADROOM


def test_dev_seed_settings_fit_the_smallest_class() -> None:
    # dev: one host, no replica (both pools on the primary) on a db.t4g.micro.
    budget = check_pool_budget(
        max_connections=max_connections("db.t4g.micro"),
        default_pool_size=20,
        reserve_pool_size=5,
        pools=2,
        pgbouncer_hosts=1,
    )
    assert budget.pooled == 50
    assert budget.spare >= 0


def test_exactly_at_the_limit_is_allowed_one_more_is_refused() -> None:
    def spare(limit: int) -> int:
        return check_pool_budget(
            max_connections=limit,
            default_pool_size=20,
            reserve_pool_size=5,
            pools=2,
            pgbouncer_hosts=1,
            headroom=10,
        ).spare

    assert spare(60) == 0
    with pytest.raises(PoolBudgetError) as caught:
        spare(59)
    message = str(caught.value)
    assert "= 50 server connections" in message
    assert "max_connections 59 - 10 headroom = 49" in message
    assert "defaultPoolSize" in message and "fewer PgBouncer hosts" in message


def test_a_layout_that_would_exhaust_a_micro_is_refused() -> None:
    with pytest.raises(PoolBudgetError, match=r"2 host\(s\) x 1 process\(es\) x 2 pool\(s\)"):
        check_pool_budget(
            max_connections=max_connections("db.t4g.micro"),
            default_pool_size=20,
            reserve_pool_size=5,
            pools=2,
            pgbouncer_hosts=2,
        )


def test_nonsense_inputs_are_refused() -> None:
    with pytest.raises(PoolBudgetError, match="hosts must be at least 1"):
        check_pool_budget(
            max_connections=100, default_pool_size=1, reserve_pool_size=0, pools=1, pgbouncer_hosts=0
        )


def test_without_a_replica_both_pools_fill_the_primary() -> None:
    assert pool_targets(500, []) == [PoolTarget("the primary", 500, 2)]


def test_every_replica_is_a_target_holding_the_whole_read_pool() -> None:
    targets = pool_targets(855, [855, 413])
    assert targets == [
        PoolTarget("the primary", 855, 1),
        PoolTarget("replica 1", 855, 1),
        PoolTarget("replica 2", 413, 1),
    ]
    budgets = check_layout(targets, default_pool_size=100, reserve_pool_size=5, pgbouncer_hosts=2)
    assert [b.pooled for b in budgets] == [210, 210, 210]
    assert [b.spare for b in budgets] == [855 - 15 - 210, 855 - 15 - 210, 413 - 15 - 210]


def test_a_layout_that_would_overfill_one_replica_names_it() -> None:
    targets = pool_targets(855, [855, 192])
    # 2 hosts x 1 pool x 95 = 190 fits the primary and replica 1, not replica 2's 192 - 15.
    with pytest.raises(PoolBudgetError, match=r"190 server connections to replica 2, .*192 - 15"):
        check_layout(targets, default_pool_size=90, reserve_pool_size=5, pgbouncer_hosts=2)
