"""RDS instance-class arithmetic, pure: memory per class and the max_connections it gets.

RDS PostgreSQL's default is `LEAST({DBInstanceClassMemory/9531392}, 5000)`. We set max_connections
explicitly (same value on primary and replicas, because a hot standby refuses to start with fewer
connections than its primary), so the PgBouncer pool sizing and the connections alarm know the number.
"""

from typing import Final

GIB: Final = 1024**3
RDS_BYTES_PER_CONNECTION: Final = 9_531_392
RDS_MAX_CONNECTIONS_CAP: Final = 5000

_SIZES_GIB: Final = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
# Memory per vCPU-size step for the general-purpose (m), memory-optimised (r) and burstable (t) families.
_FAMILY_MEMORY_GIB: Final[dict[str, dict[str, int]]] = {
    # burstable: micro 1, small 2, medium 4, large 8, xlarge 16, 2xlarge 32
    **{f: dict(_SIZES_GIB) for f in ("t3", "t4g")},
    # general purpose: large 8, xlarge 16, 2xlarge 32, 4xlarge 64, 8xlarge 128
    **{
        f: {"large": 8, "xlarge": 16, "2xlarge": 32, "4xlarge": 64, "8xlarge": 128}
        for f in ("m5", "m6g", "m6i", "m7g", "m7i", "m8g")
    },
    # memory optimised: large 16, xlarge 32, 2xlarge 64, 4xlarge 128, 8xlarge 256
    **{
        f: {"large": 16, "xlarge": 32, "2xlarge": 64, "4xlarge": 128, "8xlarge": 256}
        for f in ("r5", "r6g", "r6i", "r7g", "r7i", "r8g")
    },
}


def memory_gib(instance_class: str) -> int | None:
    """Memory of `db.<family>.<size>` in GiB, or None when the class is not in the table."""
    parts = instance_class.split(".")
    if len(parts) != 3 or parts[0] != "db":
        return None
    return _FAMILY_MEMORY_GIB.get(parts[1], {}).get(parts[2])


def max_connections_for(instance_class: str) -> int | None:
    """RDS's default max_connections for the class (its formula on nominal memory), or None if unknown."""
    gib = memory_gib(instance_class)
    if gib is None:
        return None
    return min(gib * GIB // RDS_BYTES_PER_CONNECTION, RDS_MAX_CONNECTIONS_CAP)
