"""Names every layer agrees on: the Pulumi program, the post-deploy step, PgBouncer and the local stack."""

from typing import Final

DATABASE_NAME: Final = "spike_land"
# PgBouncer's second pool, pointed at the read replica (or the primary when there is none).
READ_POOL_DATABASE: Final = "spike_land_ro"

POSTGRES_PORT: Final = 5432
PGBOUNCER_PORT: Final = 6543

# NOLOGIN group roles that carry the privileges.
OWNER_ROLE: Final = "spike_owner"
READWRITE_ROLE: Final = "spike_rw"
READONLY_GROUP_ROLE: Final = "spike_ro"
GROUP_ROLES: Final = (OWNER_ROLE, READWRITE_ROLE, READONLY_GROUP_ROLE)

# LOGIN roles; each has its own Secrets Manager secret holding username, password and scram_verifier.
MIGRATOR_ROLE: Final = "spike_migrator"
APP_ROLE: Final = "spike_app"
READONLY_ROLE: Final = "spike_readonly"
MONITOR_ROLE: Final = "spike_monitor"
LOGIN_ROLES: Final = (MIGRATOR_ROLE, APP_ROLE, READONLY_ROLE, MONITOR_ROLE)

# The keys of a login role's secret JSON.
SECRET_USERNAME_KEY: Final = "username"  # noqa: S105 - a JSON key's name, not a secret
SECRET_PASSWORD_KEY: Final = "password"  # noqa: S105 - a JSON key's name, not a secret
SECRET_VERIFIER_KEY: Final = "scram_verifier"  # noqa: S105 - a JSON key's name, not a secret

# Each pooled login role (the ones that connect through PgBouncer) is two login users, <role>_a and
# <role>_b, members of the NOLOGIN role <role> that holds the privileges; the role's secret names the active
# one, and a rotation changes the other (dbctl.rotation, docs/operations.md). The migrator and the master
# user connect direct and keep one user each.
ALTERNATING_ROLES: Final = (APP_ROLE, READONLY_ROLE, MONITOR_ROLE)
ALTERNATE_SUFFIXES: Final = ("_a", "_b")


def login_users(role: str) -> tuple[str, ...]:
    """The login users of a login role: <role>_a and <role>_b for an alternating role, else the role."""
    if role in ALTERNATING_ROLES:
        return tuple(role + suffix for suffix in ALTERNATE_SUFFIXES)
    return (role,)


def role_of_user(user: str) -> str | None:
    """The login role a login user belongs to (spike_app_b -> spike_app), None for an unknown name."""
    for role in LOGIN_ROLES:
        if user in login_users(role):
            return role
    return None


# Every login user, in a fixed order.
LOGIN_USERS: Final = tuple(user for role in LOGIN_ROLES for user in login_users(role))
