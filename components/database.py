"""Database: parameter groups, the primary, its read replicas, enhanced monitoring and encrypted log groups.

Also writes the master secret's value (standard RDS JSON) once the primary's address is known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.credentials import INITIAL_STAGE, Credentials, first_version_options
from components.network import Network
from components.provider import account_of
from dbctl.core.names import POSTGRES_PORT
from dbctl.stackconfig.parameters import Parameter, primary_parameters, replica_parameters
from dbctl.stackconfig.settings import StackSettings

ENGINE = "postgres"
CA_CERT = "rds-ca-rsa2048-g1"
LOG_EXPORTS = ["postgresql", "upgrade"]
ENHANCED_MONITORING_POLICY = "policy/service-role/AmazonRDSEnhancedMonitoringRole"
# Do not enrol in RDS Extended Support (billed) silently when the major version reaches end of standard
# support: the upgrade should be a decision, and the deploy then fails loudly instead.
ENGINE_LIFECYCLE = "open-source-rds-extended-support-disabled"


@dataclass(frozen=True)
class DatabaseArgs:
    settings: StackSettings
    provider: aws.Provider
    network: Network
    credentials: Credentials


def replica_zones(subnet_zones: Sequence[str], primary_zone: str | None, count: int) -> list[str]:
    """The AZ of each replica: the subnets' AZs other than the primary's, in subnet order, round-robin
    (so an AZ outage takes the primary or the replicas, not both); the primary's own AZ only when the
    subnets have no other."""
    zones = list(dict.fromkeys(subnet_zones))
    others = [z for z in zones if z != primary_zone] or zones
    return [others[i % len(others)] for i in range(count)]


def _parameter_args(params: list[Parameter]) -> list[aws.rds.ParameterGroupParameterArgs]:
    return [
        aws.rds.ParameterGroupParameterArgs(name=p.name, value=p.value, apply_method=p.apply_method)
        for p in params
    ]


class _InstanceArgs(TypedDict):
    """The arguments the primary and each read replica share (aws.rds.Instance's keywords)."""

    maintenance_window: str
    storage_type: str
    publicly_accessible: bool
    vpc_security_group_ids: list[pulumi.Input[str]]
    max_allocated_storage: int
    database_insights_mode: str
    performance_insights_enabled: bool
    performance_insights_kms_key_id: pulumi.Input[str]
    performance_insights_retention_period: int
    monitoring_interval: int
    monitoring_role_arn: pulumi.Input[str]
    enabled_cloudwatch_logs_exports: list[str]
    ca_cert_identifier: str
    iam_database_authentication_enabled: bool
    auto_minor_version_upgrade: bool
    allow_major_version_upgrade: bool
    copy_tags_to_snapshot: bool
    apply_immediately: bool
    port: int


def _instance_args(
    s: StackSettings, net: Network, creds: Credentials, monitoring_role_arn: pulumi.Input[str]
) -> _InstanceArgs:
    """What the primary and its replicas are given alike: private gp3 storage in the database SG, the
    same insights, monitoring, logs, CA, IAM auth, upgrade policy, maintenance window and port."""
    return _InstanceArgs(
        maintenance_window=s.maintenance_window,
        storage_type="gp3",
        publicly_accessible=False,
        vpc_security_group_ids=[net.db_security_group_id],
        max_allocated_storage=s.max_allocated_storage_gb,
        # Explicit: since Performance Insights' end of life RDS defaults instances to Database Insights
        # Standard; saying so keeps `pulumi preview` free of a surprise diff.
        database_insights_mode=s.database_insights_mode,
        performance_insights_enabled=True,
        performance_insights_kms_key_id=creds.kms_key_arn,
        performance_insights_retention_period=s.performance_insights_retention_days,
        monitoring_interval=s.monitoring_interval_seconds,
        monitoring_role_arn=monitoring_role_arn,
        enabled_cloudwatch_logs_exports=LOG_EXPORTS,
        ca_cert_identifier=CA_CERT,
        iam_database_authentication_enabled=True,
        auto_minor_version_upgrade=True,
        allow_major_version_upgrade=False,
        copy_tags_to_snapshot=True,
        apply_immediately=s.apply_immediately,
        port=POSTGRES_PORT,
    )


class Database(pulumi.ComponentResource):
    primary: aws.rds.Instance
    replicas: list[aws.rds.Instance]
    identifier: pulumi.Output[str]
    max_connections: int
    monitoring_role_arn: pulumi.Output[str]
    master_secret_version: aws.secretsmanager.SecretVersion  # the first; rotation waits for it

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:Database", name, None, opts)
        s, net, creds = args.settings, args.network, args.credentials
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        partition, account = account_of(args.provider)
        prefix = f"spike-land-{s.stack}"
        self.max_connections = s.effective_max_connections

        # A random suffix keeps the identifier unique yet known before the instance exists (the log groups
        # need it). A replacement that must not collide: `pulumi up --replace` this RandomId as well.
        suffix = random.RandomId(f"{name}-suffix", byte_length=3, opts=pulumi.ResourceOptions(parent=self))
        self.identifier = suffix.hex.apply(lambda h: f"{prefix}-{h}")
        # Each deletion leaves a final snapshot under a name no earlier deletion used.
        final_suffix = random.RandomId(
            f"{name}-final-snapshot", byte_length=4, opts=pulumi.ResourceOptions(parent=self)
        )

        monitoring_role = aws.iam.Role(
            f"{name}-monitoring",
            description=f"{prefix}: RDS enhanced monitoring publishes OS metrics to CloudWatch Logs",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "monitoring.rds.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                            # Only on behalf of this account's instances (confused-deputy guard).
                            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                        }
                    ],
                }
            ),
            opts=child,
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-monitoring",
            role=monitoring_role.name,
            policy_arn=f"arn:{partition}:iam::aws:{ENHANCED_MONITORING_POLICY}",
            opts=child,
        )
        self.monitoring_role_arn = monitoring_role.arn

        primary_params = aws.rds.ParameterGroup(
            f"{name}-primary",
            name_prefix=f"{prefix}-primary-",
            family=s.parameter_group_family,
            description=f"{prefix} primary: TLS only, SCRAM, pg_stat_statements, slow-query and DDL logging",
            parameters=_parameter_args(
                primary_parameters(
                    self.max_connections, database_name=s.database_name, monitoring=s.monitoring
                )
            ),
            opts=child,
        )

        def log_groups(key: str, identifier: pulumi.Output[str]) -> list[aws.cloudwatch.LogGroup]:
            # Created before the instance, so RDS writes into KMS-encrypted groups with a retention
            # instead of creating unencrypted ones that keep logs forever.
            return [
                aws.cloudwatch.LogGroup(
                    f"{name}-{key}-{export}",
                    name=pulumi.Output.concat("/aws/rds/instance/", identifier, f"/{export}"),
                    retention_in_days=s.log_retention_days,
                    kms_key_id=creds.kms_key_arn,
                    opts=child,
                )
                for export in LOG_EXPORTS
            ]

        shared = _instance_args(s, net, creds, monitoring_role.arn)
        self.primary = aws.rds.Instance(
            f"{name}-primary",
            identifier=self.identifier,
            engine=ENGINE,
            # Major only: RDS applies minor upgrades; a pinned minor would make Pulumi try to downgrade.
            engine_version=s.engine_version,
            engine_lifecycle_support=ENGINE_LIFECYCLE,
            instance_class=s.instance_class,
            allocated_storage=s.allocated_storage_gb,
            db_name=s.database_name,
            username=creds.master_username,
            password=creds.master_password,
            db_subnet_group_name=net.db_subnet_group_name,
            parameter_group_name=primary_params.name,
            multi_az=s.multi_az,
            backup_retention_period=s.backup_retention_days,
            backup_window=s.backup_window,
            # Keep automated backups after a deletion (until their retention ends): a recovery path.
            delete_automated_backups=False,
            skip_final_snapshot=s.skip_final_snapshot,
            final_snapshot_identifier=pulumi.Output.concat(self.identifier, "-final-", final_suffix.hex),
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    protect=s.protect,
                    depends_on=[*log_groups("primary", self.identifier), attachment],
                    additional_secret_outputs=["password"],
                    # Rotation changes the master password in the database and its secret, never through
                    # this input: a new random password here must not reset it (components/rotation.py).
                    ignore_changes=["password"],
                ),
            ),
            storage_encrypted=True,
            kms_key_id=creds.kms_key_arn,
            deletion_protection=s.deletion_protection,
            **shared,
        )

        self.replicas = []
        if s.replica_count > 0:
            replica_params = aws.rds.ParameterGroup(
                f"{name}-replica",
                name_prefix=f"{prefix}-replica-",
                family=s.parameter_group_family,
                description=f"{prefix} read replicas: the primary's settings plus standby conflict handling",
                parameters=_parameter_args(
                    replica_parameters(
                        self.max_connections,
                        int(s.alarms.replica_lag_seconds * 1000),
                        database_name=s.database_name,
                        monitoring=s.monitoring,
                    )
                ),
                opts=child,
            )
            # Where RDS placed the primary (a Multi-AZ primary cannot be pinned, and pinning an existing
            # single-AZ one would replace it), read once: a failover later moves the primary, not them.
            zones: pulumi.Output[list[str]] = pulumi.Output.all(
                net.availability_zones, self.primary.availability_zone
            ).apply(lambda v: replica_zones(v[0], v[1], s.replica_count))
            for i in range(1, s.replica_count + 1):
                identifier = pulumi.Output.concat(self.identifier, f"-replica-{i}")
                replica = aws.rds.Instance(
                    f"{name}-replica-{i}",
                    identifier=identifier,
                    # Same-region replica of the primary: engine, version, storage size, credentials and
                    # database come from the source, so none are set here.
                    replicate_source_db=self.primary.identifier,
                    instance_class=s.effective_replica_instance_class,
                    parameter_group_name=replica_params.name,
                    multi_az=False,
                    availability_zone=zones[i - 1],
                    # Replicas are rebuilt from the primary, not restored: no backups, no final snapshot.
                    backup_retention_period=0,
                    skip_final_snapshot=True,
                    opts=pulumi.ResourceOptions.merge(
                        child,
                        pulumi.ResourceOptions(
                            depends_on=log_groups(f"replica-{i}", identifier),
                            # Chosen at creation; a changed AZ would replace the replica.
                            ignore_changes=["availability_zone"],
                        ),
                    ),
                    # A replica holds nothing the primary lacks; protection would block lowering replicaCount.
                    deletion_protection=False,
                    # No storage_encrypted / kms_key_id: a same-region replica is always encrypted with
                    # the source's key, and CreateDBInstanceReadReplica refuses a KmsKeyId here
                    # (InvalidParameterCombination). The policy pack's encryption check skips replicas.
                    **shared,
                )
                self.replicas.append(replica)

        # The master secret's value, in the JSON RDS itself uses (and rotation Lambdas expect).
        master_json: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.json_dumps(
                {
                    "engine": ENGINE,
                    "host": self.primary.address,
                    "port": self.primary.port,
                    "username": creds.master_username,
                    "password": creds.master_password,
                    "dbname": s.database_name,
                    "dbInstanceIdentifier": self.primary.identifier,
                }
            )
        )
        self.master_secret_version = aws.secretsmanager.SecretVersion(
            # "-v2": written anew (same value) with INITIAL_STAGE, which ignore_changes would not add.
            f"{name}-master-v2",
            secret_id=creds.master_secret.id,
            secret_string=master_json,
            version_stages=["AWSCURRENT", INITIAL_STAGE],
            # Rotated from then on; a replaced primary's new host goes in by hand (docs/operations.md).
            opts=first_version_options(child),
        )

        self.register_outputs(
            {
                "primary_endpoint": self.primary.endpoint,
                "replica_endpoints": [r.endpoint for r in self.replicas],
            }
        )
