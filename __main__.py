"""spike-land-db: Spike Land's PostgreSQL on RDS. Reads top to bottom like DESIGN.md's diagram.

settings -> provider -> network -> credentials -> database -> (pgbouncer -> backups -> alarms) -> outputs
"""

import pulumi

from components.provider import make_provider
from components.settings import from_pulumi_config

settings = from_pulumi_config()  # validated before anything is declared
provider = make_provider(settings)

pulumi.export("region", settings.region)
pulumi.export("database_name", settings.database_name)
pulumi.export("pre_migration_snapshot", settings.backups.pre_migration_snapshot)
