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
