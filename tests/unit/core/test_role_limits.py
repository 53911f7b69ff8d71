"""The post-deploy step's per-role connection limits must admit what PgBouncer may open for that role.

PgBouncer caps each pool at default_pool_size + reserve_pool_size server connections (max_db_connections),
and every host has its own pools; PostgreSQL counts a role's connections per server. A limit below that
would make PostgreSQL refuse the pool's last connections under load ("too many connections for role").
"""

import pytest

from dbctl.core import names
from dbctl.core.roles import ROLES
from tests.unit.harness import settings_for

LIMITS = {spec.name: spec.connection_limit for spec in ROLES}


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("role", [names.APP_ROLE, names.READONLY_ROLE])
def test_pooled_role_limit_covers_every_hosts_pool(stack: str, role: str) -> None:
    pgb = settings_for(stack).pgbouncer
    per_server = pgb.host_count * (pgb.default_pool_size + pgb.reserve_pool_size)
    # Each login user alone may hold the whole pool (max_db_connections caps it across both users).
    for user in names.login_users(role):
        assert LIMITS[user] >= per_server, (
            f"{user} connection limit {LIMITS[user]} < {per_server} that the {stack} PgBouncer tier may open"
        )
    assert LIMITS[role] == -1  # the NOLOGIN role that holds the privileges: nobody logs in as it
