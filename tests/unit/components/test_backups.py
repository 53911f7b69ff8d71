"""The Backups component under Pulumi mocks, for the real dev and prod stack files."""

from __future__ import annotations

import json
import re
from functools import cache

import pytest

from components import backup_rules
from components.backups import RESTORE_VALIDATION_HOURS, VAULT_LOCK_GRACE_DAYS
from tests.unit.harness import Resource, RunResult, named, of_type, one, run, settings_for

STACKS = ["dev", "prod"]
VAULT = "aws:backup/vault:Vault"
PLAN = "aws:backup/plan:Plan"
LOCK = "aws:backup/vaultLockConfiguration:VaultLockConfiguration"
SEED_RETENTION = {"daily": 30, "weekly": 84, "monthly": 365}


@cache
def result(stack: str, overrides: tuple[tuple[str, object], ...] = ()) -> RunResult:
    return run(stack, dict(overrides))


def primary(r: RunResult) -> Resource:
    return named(of_type(r.resources, "aws:rds/instance:Instance"), "database-primary")


def main_vault(r: RunResult) -> Resource:
    return named(of_type(r.resources, VAULT), "backups-vault")


@pytest.mark.parametrize("stack", STACKS)
def test_vault_is_encrypted_with_the_stack_key(stack: str) -> None:
    r = result(stack)
    vault = main_vault(r)
    assert vault.inputs["kmsKeyArn"] == r.outputs["kms_key_arn"]
    assert vault.inputs.get("forceDestroy") is False
    assert r.outputs["backup_vault_name"] == vault.inputs["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_plan_rules_match_the_seed_and_avoid_rds_windows(stack: str) -> None:
    r = result(stack)
    s = settings_for(stack)
    rules = {rule["ruleName"]: rule for rule in one(r.resources, PLAN).inputs["rules"]}
    assert {name: rule["lifecycle"]["deleteAfter"] for name, rule in rules.items()} == SEED_RETENTION
    expected = {rule.name: rule for rule in backup_rules.rules(s)}
    for name, rule in rules.items():
        assert rule["targetVaultName"] == main_vault(r).inputs["name"]
        assert rule["schedule"] == expected[name].schedule
        assert rule["scheduleExpressionTimezone"] == "Etc/UTC"
        m = re.fullmatch(r"cron\((\d+) (\d+) .*\)", rule["schedule"])
        assert m
        assert backup_rules.conflicts(s, int(m.group(2)) * 60 + int(m.group(1)), rule["startWindow"]) == []


@pytest.mark.parametrize("stack", STACKS)
def test_selection_covers_the_primary_with_the_backup_role(stack: str) -> None:
    r = result(stack)
    selection = one(r.resources, "aws:backup/selection:Selection")
    assert selection.inputs["resources"] == [primary(r).state["arn"]]
    role = named(of_type(r.resources, "aws:iam/role:Role"), "backups-service")
    assert selection.inputs["iamRoleArn"] == role.state["arn"]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert [st["Principal"] for st in trust["Statement"]] == [{"Service": "backup.amazonaws.com"}]
    # AWS's own AWSBackupDefaultServiceRole trust: no condition keys the service might not send.
    assert all("Condition" not in st for st in trust["Statement"])
    attached = {
        a.inputs["policyArn"]
        for a in of_type(r.resources, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.name.startswith("backups-")
    }
    assert attached == {
        "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
        "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores",
    }
    inline = [
        p for p in of_type(r.resources, "aws:iam/rolePolicy:RolePolicy") if p.name.startswith("backups-")
    ]
    assert inline == []  # nothing beyond the two managed policies


@pytest.mark.parametrize("stack", STACKS)
def test_automated_backups_outlive_the_instance(stack: str) -> None:
    db = primary(result(stack)).inputs
    assert db["deleteAutomatedBackups"] is False
    assert db["backupRetentionPeriod"] == settings_for(stack).backup_retention_days
    assert db["backupWindow"] == settings_for(stack).backup_window


def test_prod_keeps_30_days_of_point_in_time_recovery() -> None:
    assert primary(result("prod")).inputs["backupRetentionPeriod"] == 30


@pytest.mark.parametrize("stack", STACKS)
def test_restore_testing_plan_restores_the_latest_snapshot_into_the_private_network(stack: str) -> None:
    r = result(stack)
    plan = one(r.resources, "aws:backup/restoreTestingPlan:RestoreTestingPlan")
    assert re.fullmatch(r"[A-Za-z0-9_]{1,50}", plan.inputs["name"])
    assert r.outputs["restore_testing_plan_name"] == plan.inputs["name"]
    assert plan.inputs["scheduleExpression"] == settings_for(stack).backups.restore_test_schedule
    selection = plan.inputs["recoveryPointSelection"]
    assert selection["algorithm"] == "LATEST_WITHIN_WINDOW"
    assert selection["includeVaults"] == [main_vault(r).state["arn"]]
    assert selection["recoveryPointTypes"] == ["SNAPSHOT"]

    chosen = one(r.resources, "aws:backup/restoreTestingSelection:RestoreTestingSelection")
    assert chosen.inputs["restoreTestingPlanName"] == plan.inputs["name"]
    assert chosen.inputs["protectedResourceType"] == "RDS"
    assert chosen.inputs["protectedResourceArns"] == [primary(r).state["arn"]]
    assert chosen.inputs["validationWindowHours"] == RESTORE_VALIDATION_HOURS
    overrides = chosen.inputs["restoreMetadataOverrides"]
    assert overrides["dbSubnetGroupName"] == primary(r).inputs["dbSubnetGroupName"]
    assert json.loads(overrides["vpcSecurityGroupIds"]) == primary(r).inputs["vpcSecurityGroupIds"]


def test_prod_restore_test_runs_monthly() -> None:
    plan = one(result("prod").resources, "aws:backup/restoreTestingPlan:RestoreTestingPlan")
    assert re.fullmatch(r"cron\(\d+ \d+ \d+ \* \? \*\)", plan.inputs["scheduleExpression"])


def test_prod_copies_every_tier_to_the_dr_region() -> None:
    r = result("prod")
    dr_region = settings_for("prod").backups.dr_region
    assert dr_region == "eu-central-1"
    dr_vault = named(of_type(r.resources, VAULT), "backups-dr-vault")
    assert dr_vault.inputs["region"] == dr_region
    dr_key = named(of_type(r.resources, "aws:kms/key:Key"), "backups-dr-key")
    assert dr_key.inputs["region"] == dr_region and dr_key.inputs["enableKeyRotation"] is True
    assert dr_vault.inputs["kmsKeyArn"] == dr_key.state["arn"]
    pitr = one(r.resources, "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication")
    assert pitr.inputs["region"] == dr_region
    assert pitr.inputs["sourceDbInstanceArn"] == primary(r).state["arn"]
    assert pitr.inputs["kmsKeyId"] == dr_key.state["arn"]
    assert pitr.inputs["retentionPeriod"] == 30
    for rule in one(r.resources, PLAN).inputs["rules"]:
        (copy,) = rule["copyActions"]
        assert copy["destinationVaultArn"] == dr_vault.state["arn"]
        assert copy["lifecycle"]["deleteAfter"] == rule["lifecycle"]["deleteAfter"]


def test_dev_has_no_cross_region_copy() -> None:
    r = result("dev")
    assert [v.name for v in of_type(r.resources, VAULT)] == ["backups-vault"]
    assert (
        of_type(
            r.resources, "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication"
        )
        == []
    )
    assert all(not rule.get("copyActions") for rule in one(r.resources, PLAN).inputs["rules"])


def test_cross_region_copy_is_a_setting() -> None:
    r = result("prod", (("backups.crossRegionCopy", False),))
    assert [v.name for v in of_type(r.resources, VAULT)] == ["backups-vault"]


def test_prod_vault_lock_allows_every_tier_and_becomes_permanent_after_the_grace_days() -> None:
    lock = one(result("prod", (("backups.vaultLock", True),)).resources, LOCK)
    assert lock.inputs["minRetentionDays"] == 30
    assert lock.inputs["maxRetentionDays"] == 365
    assert lock.inputs["changeableForDays"] == VAULT_LOCK_GRACE_DAYS


def test_vault_lock_is_off_by_default() -> None:
    assert settings_for("dev").backups.vault_lock is False
    assert settings_for("prod").backups.vault_lock is False
    assert of_type(result("dev").resources, LOCK) == []
    assert of_type(result("prod").resources, LOCK) == []
