"""spike-land-db: Spike Land's PostgreSQL on RDS. Reads top to bottom like DESIGN.md's diagram.

settings -> provider -> network -> credentials -> (flow logs) -> database -> (pgbouncer -> backups -> alarms
-> restore validation -> rotation) -> outputs
"""

import pulumi

from components.alarms import Alarms, AlarmsArgs
from components.backups import Backups, BackupsArgs
from components.config import from_pulumi_config
from components.credentials import Credentials, CredentialsArgs
from components.database import Database, DatabaseArgs
from components.flow_logs import FlowLogs, FlowLogsArgs
from components.network import Network, NetworkArgs
from components.pgbouncer import PgBouncerTier, PgBouncerTierArgs
from components.pgbouncer_source import verified_source
from components.provider import make_provider
from components.restore_validation import RestoreValidation, RestoreValidationArgs, code_archive
from components.rotation import Rotation, RotationArgs
from components.rotation import code_archive as rotation_code_archive
from dbctl.core.names import MIGRATOR_ROLE
from lambdas.build import current_build

settings = from_pulumi_config()  # validated before anything is declared
pgbouncer_source = verified_source(settings.pgbouncer.version)  # the hosts' pinned source, checked here too
lambda_deps = current_build() / "deps"  # both Lambdas' locked dependencies; missing or stale: BuildError
provider = make_provider(settings)

network = Network("network", NetworkArgs(settings=settings, provider=provider))
credentials = Credentials("credentials", CredentialsArgs(settings=settings, provider=provider))
if settings.network.flow_logs:
    FlowLogs(
        "flow-logs",
        FlowLogsArgs(
            settings=settings, provider=provider, vpc_id=network.vpc_id, kms_key_arn=credentials.kms_key_arn
        ),
    )
database = Database(
    "database", DatabaseArgs(settings=settings, provider=provider, network=network, credentials=credentials)
)
pgbouncer = PgBouncerTier(
    "pgbouncer",
    PgBouncerTierArgs(
        settings=settings,
        vpc_id=network.vpc_id,
        subnet_ids=network.subnet_ids,
        security_group_id=network.pgbouncer_security_group_id,
        primary_address=database.primary.address,
        replica_addresses=[r.address for r in database.replicas],
        role_secret_arns=credentials.role_secret_arns,
        secrets_kms_key_arn=credentials.kms_key_arn,
        pgbouncer_source=pgbouncer_source,
        egress_ready=network.egress_ready,
    ),
    opts=pulumi.ResourceOptions(providers=[provider]),
)
backups = Backups(
    "backups",
    BackupsArgs(
        settings=settings,
        provider=provider,
        kms_key_arn=credentials.kms_key_arn,
        primary_arn=database.primary.arn,
        db_subnet_group_name=network.db_subnet_group_name,
        db_security_group_ids=[network.db_security_group_id],
    ),
)
alarms = Alarms(
    "alarms",
    AlarmsArgs(
        settings=settings,
        provider=provider,
        primary_identifier=database.primary.identifier,
        replica_identifiers=[r.identifier for r in database.replicas],
        nlb_arn_suffix=pgbouncer.nlb_arn_suffix,
        target_group_arn_suffix=pgbouncer.target_group_arn_suffix,
    ),
)
restore_validation = RestoreValidation(
    "restore-validation",
    RestoreValidationArgs(
        settings=settings,
        provider=provider,
        code=code_archive(settings.region, lambda_deps),
        vpc_id=network.vpc_id,
        subnet_ids=network.subnet_ids,
        db_security_group_id=network.db_security_group_id,
        endpoints_security_group_id=network.endpoints_security_group_id,
        restore_testing_plan_arn=backups.restore_testing_plan_arn,
        migrator_secret_arn=credentials.role_secret_arns[MIGRATOR_ROLE],
        kms_key_arn=credentials.kms_key_arn,
        source_address=database.primary.address,
        source_port=database.primary.port,
        alarm_topic_arn=alarms.topic_arn,
    ),
)

rotation = Rotation(
    "rotation",
    RotationArgs(
        settings=settings,
        provider=provider,
        code=rotation_code_archive(settings.region, lambda_deps),
        vpc_id=network.vpc_id,
        subnet_ids=network.subnet_ids,
        db_security_group_id=network.db_security_group_id,
        pgbouncer_nlb_security_group_id=pgbouncer.nlb_security_group_id,
        endpoints_security_group_id=network.endpoints_security_group_id,
        master_secret_arn=credentials.master_secret.arn,
        role_secret_arns=credentials.role_secret_arns,
        kms_key_arn=credentials.kms_key_arn,
        primary_address=database.primary.address,
        primary_port=database.primary.port,
        pgbouncer_endpoint=pgbouncer.endpoint,
        pgbouncer_ca_pem=pgbouncer.ca_certificate_pem,
        first_versions={"master": database.master_secret_version, **credentials.role_secret_versions},
    ),
)

# Stack outputs: later components and the post-deploy step read these names. No output holds a password.
pulumi.export("region", settings.region)
pulumi.export("database_name", settings.database_name)
pulumi.export("primary_endpoint", database.primary.endpoint)
pulumi.export("primary_address", database.primary.address)
pulumi.export("primary_port", database.primary.port)
pulumi.export("primary_instance_id", database.primary.identifier)
pulumi.export("replica_endpoints", [r.endpoint for r in database.replicas])
pulumi.export("replica_addresses", [r.address for r in database.replicas])
pulumi.export("max_connections", database.max_connections)
pulumi.export("master_secret_arn", credentials.master_secret.arn)
pulumi.export("role_secret_arns", credentials.role_secret_arns)
pulumi.export("kms_key_arn", credentials.kms_key_arn)
pulumi.export("vpc_id", network.vpc_id)
pulumi.export("subnet_ids", network.subnet_ids)
pulumi.export("db_security_group_id", network.db_security_group_id)
pulumi.export("pgbouncer_security_group_id", network.pgbouncer_security_group_id)
pulumi.export("pgbouncer_endpoint", pgbouncer.endpoint)
pulumi.export("pgbouncer_port", pgbouncer.port)
pulumi.export("read_pool_database", pgbouncer.read_pool_database)
# The CA that signed PgBouncer's certificate (public): the pooled URL's sslrootcert (docs/pgbouncer.md).
pulumi.export("pgbouncer_ca_certificate", pgbouncer.ca_certificate_pem)
# The hosts' AMI (the image this stack built and tested, or pgbouncer.amiId) and the pipeline that rebuilds
# it by hand: what promoting and rolling back an image start from (docs/pgbouncer.md).
pulumi.export("pgbouncer_image_id", pgbouncer.image_id)
pulumi.export("pgbouncer_image_pipeline_arn", pgbouncer.image_pipeline_arn)
pulumi.export("pre_migration_snapshot", settings.backups.pre_migration_snapshot)
pulumi.export("backup_vault_name", backups.vault_name)
pulumi.export("restore_testing_plan_name", backups.restore_testing_plan_name)
pulumi.export("alarm_topic_arn", alarms.topic_arn)
pulumi.export("restore_validation_function_arn", restore_validation.function_arn)
pulumi.export("rotation_function_arn", rotation.function_arn)
pulumi.export("dashboard_name", alarms.dashboard_name)
