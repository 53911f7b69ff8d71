"""Subnet arithmetic, pure: carve a VPC CIDR into equal private subnets, one per AZ."""

import ipaddress

# Split the VPC into 16 equal blocks (/16 -> /20s of 4096 addresses); the first N become private subnets,
# the rest stay free for later tiers.
SPLIT_BITS = 4


def private_subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    """The first `count` of the VPC's 2**SPLIT_BITS equal blocks, as CIDR strings."""
    vpc = ipaddress.ip_network(vpc_cidr, strict=True)
    blocks = list(vpc.subnets(prefixlen_diff=SPLIT_BITS))
    if not 1 <= count <= len(blocks):
        raise ValueError(f"cannot carve {count} subnets out of {vpc_cidr} (at most {len(blocks)})")
    return [str(b) for b in blocks[:count]]
