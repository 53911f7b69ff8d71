"""Settings: the real stack files validate, and each validation rule fails with a message naming the key."""

import pytest

from dbctl.pgbouncer import capacity
from dbctl.stackconfig.settings import SettingsError, load_settings
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
    ({"multiAz": "sometimes"}, "spike-land-db:multiAz = 'sometimes'", "must be true or false"),
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
    ({"allowedCidrs": ["0.0.0.0/0"]}, "spike-land-db:allowedCidrs", "0.0.0.0/0 reaches outside private"),
    ({"allowedCidrs": ["::/0"]}, "spike-land-db:allowedCidrs", "::/0 reaches outside private"),
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


# --- no path to the whole internet (issue 11 item 15) -------------------------------------------------------


@pytest.mark.parametrize(
    "cidrs",
    [
        ["0.0.0.0/1", "128.0.0.0/1"],  # together: every IPv4 address
        ["::/1", "8000::/1"],  # together: every IPv6 address
        ["10.0.0.0/8", "8.8.8.0/24"],  # one public network among private ones
        ["172.15.0.0/16"],  # just below RFC 1918's 172.16.0.0/12
        ["100.0.0.0/8"],  # wider than RFC 6598's 100.64.0.0/10
        ["fe80::/10"],  # link-local, not a unique local address
        ["::ffff:10.0.0.0/104"],  # IPv4-mapped: not how AWS security groups name IPv4
    ],
)
def test_allowed_cidrs_outside_private_address_space_are_refused(cidrs: list[str]) -> None:
    with pytest.raises(SettingsError) as err:
        settings_for("dev", {"allowedCidrs": cidrs})
    message = str(err.value)
    assert "spike-land-db:allowedCidrs" in message and "outside private address space" in message
    assert "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7" in message
    public = [c for c in cidrs if c != "10.0.0.0/8"]
    assert f"{', '.join(public)} reach" in message
    assert message.count("\n") == 0


def test_the_union_of_two_halves_of_the_internet_stops_the_program_before_any_resource() -> None:
    error, declared = failing_run("prod", {"allowedCidrs": ["0.0.0.0/1", "128.0.0.0/1"]})
    assert isinstance(error, SettingsError) and "0.0.0.0/1, 128.0.0.0/1" in str(error)
    assert declared == []


def test_private_cidrs_of_every_kind_are_accepted() -> None:
    cidrs = ["10.1.0.0/16", "172.31.255.0/24", "192.168.0.0/16", "100.64.0.0/10", "fd12:3456::/32"]
    assert settings_for("dev", {"allowedCidrs": cidrs}).allowed_cidrs == tuple(cidrs)


# --- strict types (issue 11 item 16) ------------------------------------------------------------------------

STRICT = [
    ({"multiAz": "yes"}, "spike-land-db:multiAz = 'yes'", "must be true or false"),
    ({"deletionProtection": "off"}, "spike-land-db:deletionProtection = 'off'", "must be true or false"),
    ({"protect": "n"}, "spike-land-db:protect = 'n'", "must be true or false"),
    ({"applyImmediately": 1}, "spike-land-db:applyImmediately = 1", "must be true or false"),
    ({"replicaCount": True}, "spike-land-db:replicaCount = True", "must be a whole number"),
    ({"replicaCount": 1.5}, "spike-land-db:replicaCount = 1.5", "must be a whole number"),
    (
        {"monitoringIntervalSeconds": True},
        "spike-land-db:monitoringIntervalSeconds = True",
        "must be a whole number",
    ),
    ({"maxConnections": False}, "spike-land-db:maxConnections = False", "must be a whole number"),
    ({"pgbouncer.hostCount": True}, "spike-land-db:pgbouncer.hostCount = True", "must be a whole number"),
    ({"pgbouncer.clientTls": "no"}, "spike-land-db:pgbouncer.clientTls = 'no'", "must be true or false"),
    ({"backups.vaultLock": "on"}, "spike-land-db:backups.vaultLock = 'on'", "must be true or false"),
    ({"network.vpcEndpoints": 0}, "spike-land-db:network.vpcEndpoints = 0", "must be true or false"),
    ({"alarms.cpuPercent": True}, "spike-land-db:alarms.cpuPercent = True", "must be a number"),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), STRICT, ids=[r[1].split(" ")[0] for r in STRICT])
def test_booleans_must_be_booleans_and_counts_integers(
    overrides: dict[str, object], key: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as err:
        settings_for("dev", overrides)
    message = str(err.value)
    assert f"{key} is invalid: {allowed}" in message
    assert message.count("\n") == 0


@pytest.mark.parametrize(
    "overrides", [{"multiAz": "yes"}, {"replicaCount": True}, {"pgbouncer.hostCount": True}]
)
def test_a_loose_type_stops_the_real_program_before_any_resource(overrides: dict[str, object]) -> None:
    # Through Pulumi's config: values reach the program as strings, structured ones as JSON.
    error, declared = failing_run("prod", overrides)
    assert isinstance(error, SettingsError), error
    assert declared == []


def test_values_as_pulumi_config_set_stores_them_are_read() -> None:
    # `pulumi config set multiAz true` stores the string "true" (top-level entries are always strings,
    # unless --type bool), and `--path pgbouncer.hostCount 2` stores the number 2.
    as_strings = {"multiAz": "true", "replicaCount": "1", "protect": "False", "alarms.cpuPercent": "75.5"}
    s = settings_for("dev", as_strings)
    assert (s.multi_az, s.replica_count, s.protect, s.alarms.cpu_percent) == (True, 1, False, 75.5)
    result = run("dev", {**as_strings, "pgbouncer.hostCount": 2})
    [primary] = [
        r for r in result.resources if r.typ == "aws:rds/instance:Instance" and r.name == "database-primary"
    ]
    assert primary.inputs["multiAz"] is True
    assert len([r for r in result.resources if r.typ == "aws:rds/instance:Instance"]) == 2


# --- every check before any resource (issue 11 item 17) -----------------------------------------------------


def test_a_pool_that_would_exhaust_the_primary_stops_the_program_before_any_resource() -> None:
    settings = settings_for("dev")
    budget = settings.effective_max_connections - capacity.DEFAULT_HEADROOM
    # Two pools (no replica in dev) x (default + reserve 5) just over the budget.
    size = budget // 2 - 4
    error, declared = failing_run("dev", {"pgbouncer.defaultPoolSize": size})
    assert isinstance(error, SettingsError), error
    message = str(error)
    assert message.startswith("invalid stack config in Pulumi.dev.yaml: spike-land-db:pgbouncer = ")
    assert f"'defaultPoolSize': {size}" in message and "server connections to the primary" in message
    assert "Lower pgbouncer defaultPoolSize" in message and message.count("\n") == 0
    assert declared == []


def test_with_a_replica_each_instance_carries_one_pool_per_host() -> None:
    settings = settings_for("prod")
    # The hosts an instance refresh surges to (2 -> 4), each with full pools.
    hosts = capacity.hosts_at_surge(settings.pgbouncer.host_count)
    reserve = settings.pgbouncer.reserve_pool_size
    processes = settings.pgbouncer.processes  # c7g.large: 2 vCPUs, a process each
    budget = settings.effective_max_connections - capacity.DEFAULT_HEADROOM
    largest = budget // (hosts * processes) - reserve  # hosts x processes x 1 pool x (largest + reserve)
    assert settings_for("prod", {"pgbouncer.defaultPoolSize": largest}).pgbouncer.default_pool_size == largest
    with pytest.raises(SettingsError, match=r"4 host\(s\) x 2 process\(es\) x 1 pool\(s\) .* to the primary"):
        settings_for("prod", {"pgbouncer.defaultPoolSize": largest + 1})
    with pytest.raises(SettingsError, match=r"4 host\(s\) x 2 process\(es\) x 2 pool\(s\) .* to the primary"):
        settings_for("prod", {"pgbouncer.defaultPoolSize": largest, "replicaCount": 0})
