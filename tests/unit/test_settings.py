"""Settings: the real stack files validate, and each validation rule fails with a message naming the key."""

import pytest

from components.settings import SettingsError, load_settings
from tests.unit.harness import failing_run, run, settings_for


def test_dev_stack_file_is_small_and_cheap() -> None:
    s = settings_for("dev")
    assert (s.multi_az, s.replica_count, s.backup_retention_days, s.deletion_protection) == (
        False,
        0,
        7,
        False,
    )
    assert (s.protect, s.secret_recovery_window_days, s.engine_version) == (False, 7, "17")


def test_prod_stack_file_is_highly_available() -> None:
    s = settings_for("prod")
    assert (s.multi_az, s.replica_count, s.backup_retention_days) == (True, 1, 30)
    assert s.deletion_protection and s.protect and not s.apply_immediately
    assert s.secret_recovery_window_days == 30


def test_profile_defaults_apply_when_the_stack_file_is_silent() -> None:
    prod = load_settings("prod", {"aws:region": "eu-west-1"})
    assert (prod.multi_az, prod.replica_count, prod.backup_retention_days, prod.protect) == (
        True,
        1,
        30,
        True,
    )
    dev = load_settings("feature-x", {"aws:region": "eu-west-1"})
    assert (dev.profile, dev.multi_az, dev.replica_count, dev.backup_retention_days) == ("dev", False, 0, 7)
    staging = load_settings("staging", {"aws:region": "eu-west-1", "profile": "prod"})
    assert staging.deletion_protection is True


def test_a_stack_file_value_wins_over_the_profile_default_and_sections_merge() -> None:
    s = settings_for("prod", {"backupRetentionDays": 14, "pgbouncer.hostCount": 3})
    assert s.backup_retention_days == 14
    assert (s.pgbouncer.host_count, s.pgbouncer.instance_type) == (3, "c7g.large")


@pytest.mark.parametrize(
    "overrides",
    [
        {"backupRetentionDays": 40},
        {"allowedCidrs": ["10.0.0.0/8", "0.0.0.0/0"]},
        {"instanceClass": "t3.micro"},
    ],
)
def test_a_bad_value_stops_the_program_before_any_resource(overrides: dict[str, object]) -> None:
    error, declared = failing_run("prod", overrides)
    assert isinstance(error, SettingsError)
    assert declared == []


def test_unknown_key_is_reported_through_the_real_program() -> None:
    with pytest.raises(SettingsError, match=r"spike-land-db:backupRetentionDay is not a known setting"):
        run("dev", {"backupRetentionDay": 7})


# (overrides, the key as the stack file spells it, a fragment of what is allowed)
RULES = [
    ({"aws:region": "Ireland"}, "aws:region = 'Ireland'", "AWS region"),
    ({"aws:region": None}, "aws:region is not set", "pulumi config set aws:region"),
    ({"profile": "staging"}, "spike-land-db:profile = 'staging'", "one of ['dev', 'prod']"),
    ({"engineVersion": "17.2"}, "spike-land-db:engineVersion = '17.2'", "major version only"),
    ({"engineVersion": "9"}, "spike-land-db:engineVersion = '9'", "14 to 18"),
    ({"instanceClass": "t3.micro"}, "spike-land-db:instanceClass = 't3.micro'", "db.<family>.<size>"),
    ({"replicaInstanceClass": "m7g.large"}, "spike-land-db:replicaInstanceClass", "db.<family>.<size>"),
    ({"instanceClass": "db.x9.huge"}, "spike-land-db:maxConnections", "set maxConnections"),
    ({"maxConnections": 5}, "spike-land-db:maxConnections = 5", "greater than or equal to 20"),
    ({"allocatedStorageGb": 10}, "spike-land-db:allocatedStorageGb = 10", "greater than or equal to 20"),
    ({"maxAllocatedStorageGb": 15}, "spike-land-db:maxAllocatedStorageGb = 15", "autoscaling ceiling"),
    ({"multiAz": "sometimes"}, "spike-land-db:multiAz = 'sometimes'", "valid boolean"),
    ({"replicaCount": -1}, "spike-land-db:replicaCount = -1", "greater than or equal to 0"),
    ({"replicaCount": 6}, "spike-land-db:replicaCount = 6", "less than or equal to 5"),
    ({"backupRetentionDays": 40}, "spike-land-db:backupRetentionDays = 40", "less than or equal to 35"),
    ({"backupRetentionDays": 0}, "spike-land-db:backupRetentionDays = 0", "greater than or equal to 1"),
    ({"backupWindow": "2am-3am"}, "spike-land-db:backupWindow = '2am-3am'", "hh:mm-hh:mm"),
    ({"backupWindow": "02:00-02:10"}, "spike-land-db:backupWindow = '02:00-02:10'", "at least 30 minutes"),
    ({"maintenanceWindow": "04:00-05:00"}, "spike-land-db:maintenanceWindow = '04:00-05:00'", "ddd:hh:mm"),
    (
        {"maintenanceWindow": "mon:02:30-mon:03:30"},
        "spike-land-db:maintenanceWindow = 'mon:02:30-mon:03:30'",
        "must not overlap backupWindow",
    ),
    ({"performanceInsightsRetentionDays": 30}, "spike-land-db:performanceInsightsRetentionDays = 30", "31"),
    ({"monitoringIntervalSeconds": 0}, "spike-land-db:monitoringIntervalSeconds = 0", "1, 5, 10, 15, 30"),
    ({"logRetentionDays": 10}, "spike-land-db:logRetentionDays = 10", "retention periods"),
    (
        {"secretRecoveryWindowDays": 3},
        "spike-land-db:secretRecoveryWindowDays = 3",
        "greater than or equal to 7",
    ),
    ({"databaseName": "Spike-Land"}, "spike-land-db:databaseName = 'Spike-Land'", "lowercase identifier"),
    ({"allowedCidrs": ["0.0.0.0/0"]}, "spike-land-db:allowedCidrs", "0.0.0.0/0 opens the database"),
    ({"allowedCidrs": ["::/0"]}, "spike-land-db:allowedCidrs", "::/0 opens the database"),
    ({"allowedCidrs": ["10.0.0.1/8"]}, "spike-land-db:allowedCidrs", "not a network in CIDR notation"),
    ({"allowedSecurityGroupIds": ["web-sg"]}, "spike-land-db:allowedSecurityGroupIds", "security group ids"),
    ({"tags": {"owner": "me"}}, "spike-land-db:tags", "set by the program"),
    ({"tags": {"aws:x": "1"}}, "spike-land-db:tags", "not valid tag keys"),
    ({"network.mode": "peered"}, "spike-land-db:network.mode = 'peered'", "'create' or 'existing'"),
    ({"network.mode": "existing"}, "spike-land-db:network", "needs vpcId"),
    (
        {
            "network": {
                "mode": "existing",
                "vpcId": "vpc-0123456789abcdef0",
                "subnetIds": ["subnet-0123456789abcdef0"],
            }
        },
        "spike-land-db:network",
        "at least two private subnets",
    ),
    ({"network.vpcId": "vpc-0123456789abcdef0"}, "spike-land-db:network", "only for mode 'existing'"),
    (
        {"network.vpcCidr": "10.0.0.0/8"},
        "spike-land-db:network.vpcCidr = '10.0.0.0/8'",
        "between /16 and /24",
    ),
    ({"network.azCount": 1}, "spike-land-db:network.azCount = 1", "greater than or equal to 2"),
    ({"network.foo": 1}, "spike-land-db:network.foo is not a known setting", "docs/settings.md"),
    ({"pgbouncer.hostCount": 0}, "spike-land-db:pgbouncer.hostCount = 0", "greater than or equal to 1"),
    (
        {"pgbouncer.instanceType": "c7i.large"},
        "spike-land-db:pgbouncer.instanceType = 'c7i.large'",
        "Graviton",
    ),
    ({"pgbouncer.version": "latest"}, "spike-land-db:pgbouncer.version = 'latest'", "such as 1.24"),
    ({"pgbouncer.minPoolSize": 50}, "spike-land-db:pgbouncer", "minPoolSize must not exceed defaultPoolSize"),
    ({"backups": {"crossRegionCopy": True}}, "spike-land-db:backups", "needs drRegion"),
    ({"backups.drRegion": "Frankfurt"}, "spike-land-db:backups.drRegion = 'Frankfurt'", "AWS region"),
    ({"backups.restoreTestSchedule": "weekly"}, "spike-land-db:backups.restoreTestSchedule", "EventBridge"),
    ({"alarms.emails": ["ops"]}, "spike-land-db:alarms.emails", "not email addresses"),
    ({"alarms.pagerHttpsEndpoint": "http://x"}, "spike-land-db:alarms.pagerHttpsEndpoint", "https:// URL"),
    ({"alarms.cpuPercent": 120}, "spike-land-db:alarms.cpuPercent = 120", "less than or equal to 100"),
    ({"backupRetentionDay": 7}, "spike-land-db:backupRetentionDay is not a known setting", "settings.md"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"), RULES, ids=[r[1].split(" ")[0] + "|" + r[2] for r in RULES]
)
def test_each_rule_names_the_key_the_value_and_what_is_allowed(
    overrides: dict[str, object], key: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as err:
        settings_for("dev", overrides)
    message = str(err.value)
    assert key in message
    assert allowed in message
    assert message.count("\n") == 0, "one problem, one line"
    assert "Pulumi.dev.yaml" in message or "aws:region is not set" in message


@pytest.mark.parametrize(
    "stack", ["Prod", "my_stack", "2024", "a--b", "trailing-", "a-very-long-stack-name-x"]
)
def test_a_stack_name_aws_names_cannot_hold_is_refused(stack: str) -> None:
    with pytest.raises(SettingsError, match=rf"stack name '{stack}' is invalid: .* at most 19 characters"):
        load_settings(stack, {"aws:region": "eu-west-1"})


def test_the_longest_allowed_stack_name_is_accepted() -> None:
    assert load_settings("a" * 19, {"aws:region": "eu-west-1"}).stack == "a" * 19
