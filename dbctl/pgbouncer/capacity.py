"""Connection capacity, pure: RDS instance class -> max_connections, and PgBouncer's budget against it.

RDS PostgreSQL's default is `max_connections = LEAST({DBInstanceClassMemory/9531392}, 5000)`.
DBInstanceClassMemory is not the class's nominal memory: AWS documents it as the memory left after
what the operating system and the RDS processes on the instance take, but does not publish that
amount. We model it as nominal memory minus (256 MiB + 2 % of nominal), fitted to published
`SHOW max_connections` readings (t2.small 198, t2.medium 413, t2.large 856, r4.large 1660: this model
gives 192, 413, 855, 1655). It errs low, which is the safe side for a budget that must not exhaust
the database.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

GIB: Final = 1024**3
MIB: Final = 1024**2
RDS_BYTES_PER_CONNECTION: Final = 9_531_392
RDS_MAX_CONNECTIONS_CAP: Final = 5000
# The model of what RDS keeps for the OS and its own processes (see the module docstring).
RESERVED_FIXED_BYTES: Final = 256 * MIB
RESERVED_FRACTION: Final = 0.02

_BURSTABLE_GIB: Final = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
# vCPUs per size; m families carry 4 GiB per vCPU, r families 8 GiB (AWS instance type tables).
_VCPUS: Final = {
    "large": 2,
    "xlarge": 4,
    "2xlarge": 8,
    "4xlarge": 16,
    "8xlarge": 32,
    "12xlarge": 48,
    "16xlarge": 64,
}
_GIB_PER_VCPU: Final = {
    **dict.fromkeys(("m5", "m6g", "m6i", "m7g"), 4),
    **dict.fromkeys(("r5", "r6g", "r6i", "r7g"), 8),
}

INSTANCE_MEMORY_GIB: Final[Mapping[str, int]] = {
    **{f"db.{family}.{size}": gib for family in ("t3", "t4g") for size, gib in _BURSTABLE_GIB.items()},
    **{
        f"db.{family}.{size}": per_vcpu * vcpus
        for family, per_vcpu in _GIB_PER_VCPU.items()
        for size, vcpus in _VCPUS.items()
    },
}

# vCPUs of the Graviton EC2 types a PgBouncer host may be (AWS's instance type tables): the default number
# of PgBouncer processes per host, one per vCPU. Burstable t4g has 2 up to large; the others 1 per size step
# from medium (Graviton has no SMT: a vCPU is a core).
_T4G_VCPUS: Final = {"nano": 2, "micro": 2, "small": 2, "medium": 2, "large": 2, "xlarge": 4, "2xlarge": 8}
_GRAVITON_VCPUS: Final = {"medium": 1, "large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}
EC2_VCPUS: Final[Mapping[str, int]] = {
    **{f"t4g.{size}": n for size, n in _T4G_VCPUS.items()},
    **{
        f"{family}.{size}": n
        for family in ("c6g", "c7g", "m6g", "m7g", "r6g", "r7g")
        for size, n in _GRAVITON_VCPUS.items()
    },
}


class UnknownInstanceTypeError(ValueError):
    """An EC2 instance type missing from EC2_VCPUS."""


def instance_vcpus(instance_type: str) -> int:
    """vCPUs of a PgBouncer host's EC2 type such as `c7g.large` (2)."""
    vcpus = EC2_VCPUS.get(instance_type)
    if vcpus is None:
        raise UnknownInstanceTypeError(
            f"the vCPU count of {instance_type} is not in dbctl/pgbouncer/capacity.py, so the number of "
            "PgBouncer processes (one per vCPU) is unknown; set pgbouncer.processes"
        )
    return vcpus


# Connections kept out of PgBouncer's reach (per database instance), so a full pool never locks out:
HEADROOM_SUPERUSER_RESERVED: Final = 3  # superuser_reserved_connections (PostgreSQL's default, kept by RDS)
HEADROOM_RDS: Final = 2  # rds_superuser_reserved_connections: RDS's own management connections
HEADROOM_MIGRATIONS: Final = 2  # dbctl migrate: its session plus the advisory-lock holder
HEADROOM_MONITORING: Final = 3  # spike_monitor direct checks, CloudWatch/Performance Insights agents
HEADROOM_OPERATOR: Final = 5  # a human with psql during an incident
DEFAULT_HEADROOM: Final = (
    HEADROOM_SUPERUSER_RESERVED + HEADROOM_RDS + HEADROOM_MIGRATIONS + HEADROOM_MONITORING + HEADROOM_OPERATOR
)


# Rotation (dbctl.rotation) overlaps two login users per pooled role, <role>_a and <role>_b: PgBouncer then
# keeps two pools (one per user) for each database entry. The budget below counts database pools, not user
# pools: each entry's max_db_connections (default_pool_size + reserve_pool_size) caps all its users' server
# connections together, and PgBouncer evicts an idle connection of one user's pool when another user's pool
# needs the slot. So the overlap adds no server connection; each user's CONNECTION LIMIT (dbctl.roles) is the
# whole per-server pool, since either user may hold all of it.
USERS_PER_POOLED_ROLE: Final = 2


# An instance refresh of the PgBouncer hosts launches each replacement before it terminates the host it
# replaces (the group's MaxHealthyPercentage, components/pgbouncer.py): for a while the group runs up to
# this percentage of its hosts, every one with full pools. The budget counts them all.
REFRESH_MAX_HEALTHY_PERCENTAGE: Final = 200


def hosts_at_surge(host_count: int, max_healthy_percentage: int = REFRESH_MAX_HEALTHY_PERCENTAGE) -> int:
    """The most PgBouncer hosts running at once: host_count, surging to max_healthy_percentage of it while
    an instance refresh replaces them (the Auto Scaling group's max_size)."""
    return -(-host_count * max_healthy_percentage // 100)


class UnknownInstanceClassError(ValueError):
    """An instance class missing from INSTANCE_MEMORY_GIB."""


class PoolBudgetError(ValueError):
    """PgBouncer could open more server connections than the database allows."""


def instance_memory_bytes(instance_class: str) -> int:
    """Nominal memory of an RDS instance class such as `db.t4g.micro`, in bytes."""
    gib = INSTANCE_MEMORY_GIB.get(instance_class)
    if gib is None:
        raise UnknownInstanceClassError(
            f"unknown RDS instance class {instance_class!r}; known: "
            f"{', '.join(sorted(INSTANCE_MEMORY_GIB))}. "
            "Pick one of these, or add the class with its memory to dbctl/pgbouncer/capacity.py"
        )
    return gib * GIB


def db_instance_class_memory(instance_class: str) -> int:
    """Our model of RDS's DBInstanceClassMemory: nominal memory minus what RDS reserves (bytes)."""
    nominal = instance_memory_bytes(instance_class)
    return nominal - RESERVED_FIXED_BYTES - int(nominal * RESERVED_FRACTION)


def max_connections(instance_class: str) -> int:
    """RDS's default max_connections: LEAST(DBInstanceClassMemory/9531392, 5000)."""
    return min(db_instance_class_memory(instance_class) // RDS_BYTES_PER_CONNECTION, RDS_MAX_CONNECTIONS_CAP)


@dataclass(frozen=True)
class PoolBudget:
    """What PgBouncer can open against one database instance, and what that instance allows."""

    max_connections: int
    pooled: int
    headroom: int

    @property
    def spare(self) -> int:
        """Connections left after PgBouncer's worst case and the headroom (never negative when checked)."""
        return self.max_connections - self.headroom - self.pooled


def check_pool_budget(
    *,
    max_connections: int,
    default_pool_size: int,
    reserve_pool_size: int,
    pools: int,
    pgbouncer_hosts: int,
    processes: int = 1,
    headroom: int = DEFAULT_HEADROOM,
    target: str = "the primary",
) -> PoolBudget:
    """Refuse a PgBouncer layout whose worst case exceeds `max_connections - headroom` on one instance.

    `pools` is how many database pools point at this instance from one PgBouncer host (each capped at
    default_pool_size + reserve_pool_size by max_db_connections); `pgbouncer_hosts` is the number of
    PgBouncer hosts (use the Auto Scaling group's maximum, which a replacement can briefly reach);
    `processes` the PgBouncer processes per host: each caps its own pools, so each can fill them.
    """
    for name, value in (
        ("default_pool_size", default_pool_size),
        ("pools", pools),
        ("hosts", pgbouncer_hosts),
        ("processes", processes),
    ):
        if value < 1:
            raise PoolBudgetError(f"{name} must be at least 1, got {value}")
    if reserve_pool_size < 0 or headroom < 0:
        raise PoolBudgetError("reserve_pool_size and headroom must not be negative")
    per_pool = default_pool_size + reserve_pool_size
    pooled = pgbouncer_hosts * processes * pools * per_pool
    budget = PoolBudget(max_connections=max_connections, pooled=pooled, headroom=headroom)
    if budget.spare < 0:
        raise PoolBudgetError(
            f"PgBouncer could open {pgbouncer_hosts} host(s) x {processes} process(es) x {pools} pool(s) x "
            f"({default_pool_size} "
            f"default_pool_size + {reserve_pool_size} reserve_pool_size) = {pooled} server connections to "
            f"{target}, but it allows max_connections {max_connections} - {headroom} headroom = "
            f"{max_connections - headroom}. Lower pgbouncer defaultPoolSize or reservePoolSize, run fewer "
            "PgBouncer hosts or processes, or choose a larger instance class"
        )
    return budget


@dataclass(frozen=True)
class PoolTarget:
    """One database instance PgBouncer's pools point at: its name, its max_connections, and how many capped
    database pools (per PgBouncer host) can fill it."""

    name: str
    max_connections: int
    pools: int


def pool_targets(primary_max_connections: int, replica_max_connections: Sequence[int]) -> list[PoolTarget]:
    """Where the write pool and the read pool point, per instance.

    No replica: both pools on the primary. Replicas: the write pool on the primary, and the read pool on
    every replica, each counted with the **whole** read pool. PgBouncer's host list only picks the host of
    each new server connection (round-robin) and max_db_connections caps the entry across all its hosts, so
    while one replica is down, restarting or slow to accept, every connection the pool opens lands on the
    others: pool/N is the average, the whole pool the worst case one replica must hold."""
    if not replica_max_connections:
        return [PoolTarget("the primary", primary_max_connections, 2)]
    return [
        PoolTarget("the primary", primary_max_connections, 1),
        *(PoolTarget(f"replica {i}", m, 1) for i, m in enumerate(replica_max_connections, 1)),
    ]


def check_layout(
    targets: Sequence[PoolTarget],
    *,
    default_pool_size: int,
    reserve_pool_size: int,
    pgbouncer_hosts: int,
    processes: int = 1,
    headroom: int = DEFAULT_HEADROOM,
) -> list[PoolBudget]:
    """check_pool_budget for every instance of the layout; the first one overfilled is the error."""
    return [
        check_pool_budget(
            max_connections=t.max_connections,
            default_pool_size=default_pool_size,
            reserve_pool_size=reserve_pool_size,
            pools=t.pools,
            pgbouncer_hosts=pgbouncer_hosts,
            processes=processes,
            headroom=headroom,
            target=t.name,
        )
        for t in targets
    ]
