"""Backups: an AWS Backup vault and plan on top of RDS automated backups, restore testing, optional DR copy.

- RDS automated backups (retention from settings, point-in-time recovery, kept after deletion) are set on
  the instance by `components/database.py`; this component adds what the seed's retention policy needs.
- Vault encrypted with the stack's KMS key. Plan rules from `components/backup_rules.py`: daily 30 d,
  weekly 84 d, monthly 365 d, started clear of the RDS backup and maintenance windows. A selection covers
  the primary (replicas are rebuilt from it, never restored).
- Service role: only the AWS managed policies AWSBackupServiceRolePolicyForBackup and ...ForRestores.
- Restore testing: a plan that, on `backups.restoreTestSchedule` (monthly in prod), restores the latest
  snapshot recovery point of the primary into a throwaway instance in the stack's private subnets and DB
  security group, keeps it for `RESTORE_VALIDATION_HOURS`, then AWS Backup deletes it. A failed restore
  reaches the alarm topic through the EventBridge rule in `components/alarms.py`.
- Cross-region copy (`backups.crossRegionCopy`, `backups.drRegion`): every rule also copies its recovery
  point, with the same retention, into a vault in the DR region encrypted with a KMS key made there, and
  RDS replicates the primary's automated backups (PITR, same retention) to that region with the same key.
  pulumi-aws v7 resources take a `region` argument, so the DR key and vault use the stack's provider (and
  its default tags) with `region=drRegion` instead of a second provider.
- Vault lock (`backups.vaultLock`): compliance mode after `VAULT_LOCK_GRACE_DAYS`. Within those days the
  lock can still be removed; after them nobody (not even the account root) can shorten retention, delete
  recovery points early or delete the vault. docs/operations.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components import backup_rules
from components.kms import key_policy
from components.provider import account_of
from dbctl.stackconfig.settings import StackSettings

BACKUP_POLICY: Final = "policy/service-role/AWSBackupServiceRolePolicyForBackup"
RESTORE_POLICY: Final = "policy/service-role/AWSBackupServiceRolePolicyForRestores"
VAULT_LOCK_GRACE_DAYS: Final = 3  # the minimum AWS allows before a compliance-mode lock becomes permanent
RESTORE_VALIDATION_HOURS: Final = 1
RESTORE_START_WINDOW_HOURS: Final = 4
RESTORE_SELECTION_WINDOW_DAYS: Final = 7


@dataclass(frozen=True)
class BackupsArgs:
    settings: StackSettings
    provider: aws.Provider
    kms_key_arn: pulumi.Input[str]  # the stack's key (credentials component)
    primary_arn: pulumi.Input[str]
    db_subnet_group_name: pulumi.Input[str]  # where restore tests put their throwaway instance
    db_security_group_ids: Sequence[pulumi.Input[str]]


def restore_testing_name(stack: str, suffix: str) -> str:
    """Restore testing plan names allow only letters, digits and underscores (<= 50)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"spike_land_{stack}_restore_test_{suffix}")[:50]


class Backups(pulumi.ComponentResource):
    vault_name: pulumi.Output[str]
    vault_arn: pulumi.Output[str]
    plan_id: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    restore_testing_plan_name: pulumi.Output[str]
    restore_testing_plan_arn: pulumi.Output[str]
    dr_vault_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:Backups", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        partition, account = account_of(args.provider)
        prefix = f"spike-land-{s.stack}"
        rules = backup_rules.rules(s)

        # Vault and restore-testing names are unique per account and region: a suffix lets a replacement
        # be created before the old one is deleted.
        suffix = random.RandomId(f"{name}-suffix", byte_length=3, opts=pulumi.ResourceOptions(parent=self))

        role = aws.iam.Role(
            f"{name}-service",
            name_prefix=f"{prefix}-backup-",
            description=f"{prefix}: AWS Backup takes, copies, restores and restore-tests the database",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "backup.amazonaws.com"},
                            # The trust AWS documents for its own AWSBackupDefaultServiceRole. No
                            # aws:SourceAccount condition: AWS Backup documents those keys for resource
                            # policies, not role trust, and a key it does not send would fail every job.
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{kind}",
                role=role.name,
                policy_arn=f"arn:{partition}:iam::aws:{policy}",
                opts=child,
            )
            for kind, policy in (("backup", BACKUP_POLICY), ("restore", RESTORE_POLICY))
        ]
        self.role_arn = role.arn

        vault = aws.backup.Vault(
            f"{name}-vault",
            name=suffix.hex.apply(lambda h: f"{prefix}-{h}"),
            kms_key_arn=args.kms_key_arn,
            force_destroy=False,
            opts=child,
        )
        self.vault_name = vault.name
        self.vault_arn = vault.arn

        if s.backups.vault_lock:
            low, high = backup_rules.vault_lock_retention(rules)
            aws.backup.VaultLockConfiguration(
                f"{name}-vault-lock",
                backup_vault_name=vault.name,
                min_retention_days=low,
                max_retention_days=high,
                changeable_for_days=VAULT_LOCK_GRACE_DAYS,
                opts=child,
            )

        self.dr_vault_arn = None
        dr_vault: aws.backup.Vault | None = None
        if s.backups.cross_region_copy and s.backups.dr_region is not None:
            dr_region = s.backups.dr_region
            dr_key = aws.kms.Key(
                f"{name}-dr-key",
                region=dr_region,
                description=f"{prefix}: AWS Backup copies in the DR region {dr_region}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                # AWS Backup uses the key through the service role's managed policy (grants via backup/RDS).
                policy=key_policy(partition, account),
                opts=child,
            )
            dr_vault = aws.backup.Vault(
                f"{name}-dr-vault",
                region=dr_region,
                name=suffix.hex.apply(lambda h: f"{prefix}-dr-{h}"),
                kms_key_arn=dr_key.arn,
                force_destroy=False,
                opts=child,
            )
            self.dr_vault_arn = dr_vault.arn
            # RDS replicates the primary's automated backups and transaction logs to the DR region as well:
            # point-in-time recovery there, minutes behind, rather than the last daily copy.
            aws.rds.InstanceAutomatedBackupsReplication(
                f"{name}-dr-pitr",
                region=dr_region,
                source_db_instance_arn=args.primary_arn,
                kms_key_id=dr_key.arn,
                retention_period=s.backup_retention_days,
                opts=child,
            )

        plan = aws.backup.Plan(
            f"{name}-plan",
            name=f"{prefix}-db",
            rules=[
                aws.backup.PlanRuleArgs(
                    rule_name=rule.name,
                    target_vault_name=vault.name,
                    schedule=rule.schedule,
                    schedule_expression_timezone="Etc/UTC",
                    start_window=rule.start_window_minutes,
                    completion_window=rule.completion_window_minutes,
                    lifecycle=aws.backup.PlanRuleLifecycleArgs(delete_after=rule.delete_after_days),
                    recovery_point_tags={"stack": s.stack, "tier": rule.name},
                    copy_actions=(
                        [
                            aws.backup.PlanRuleCopyActionArgs(
                                destination_vault_arn=dr_vault.arn,
                                lifecycle=aws.backup.PlanRuleCopyActionLifecycleArgs(
                                    delete_after=rule.delete_after_days
                                ),
                            )
                        ]
                        if dr_vault is not None
                        else None
                    ),
                )
                for rule in rules
            ],
            opts=child,
        )
        self.plan_id = plan.id
        aws.backup.Selection(
            f"{name}-primary",
            name=f"{prefix}-primary",
            plan_id=plan.id,
            iam_role_arn=role.arn,
            resources=[args.primary_arn],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=attachments)),
        )

        testing_plan = aws.backup.RestoreTestingPlan(
            f"{name}-restore-test",
            name=suffix.hex.apply(lambda h: restore_testing_name(s.stack, h)),
            schedule_expression=s.backups.restore_test_schedule,
            schedule_expression_timezone="Etc/UTC",
            start_window_hours=RESTORE_START_WINDOW_HOURS,
            recovery_point_selection=aws.backup.RestoreTestingPlanRecoveryPointSelectionArgs(
                algorithm="LATEST_WITHIN_WINDOW",
                include_vaults=[vault.arn],
                recovery_point_types=["SNAPSHOT"],
                selection_window_days=RESTORE_SELECTION_WINDOW_DAYS,
            ),
            opts=child,
        )
        self.restore_testing_plan_name = testing_plan.name
        self.restore_testing_plan_arn = testing_plan.arn
        aws.backup.RestoreTestingSelection(
            f"{name}-restore-test-primary",
            name="primary",
            restore_testing_plan_name=testing_plan.name,
            protected_resource_type="RDS",
            protected_resource_arns=[args.primary_arn],
            iam_role_arn=role.arn,
            # Without these the restore lands in the default VPC, which a locked-down account may not have.
            restore_metadata_overrides={
                "dbSubnetGroupName": args.db_subnet_group_name,
                "vpcSecurityGroupIds": pulumi.Output.json_dumps(list(args.db_security_group_ids)),
            },
            validation_window_hours=RESTORE_VALIDATION_HOURS,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=attachments)),
        )

        self.register_outputs(
            {
                "vault_name": self.vault_name,
                "plan_id": self.plan_id,
                "restore_testing_plan_name": self.restore_testing_plan_name,
            }
        )
