"""Stack settings: the stack's config read once, validated, with per-profile defaults, as one frozen object.

`load_settings(stack, raw)` is pure (no Pulumi): `raw` maps config keys as written in the stack file, without
the project namespace (`backupRetentionDays`, `pgbouncer`, ...), plus `aws:region`, to their values (strings
or the parsed YAML/JSON structure). `components/config.py`'s `from_pulumi_config()` gathers `raw` from the
running program's config.
Components receive the resulting `StackSettings` and never call `pulumi.Config` themselves.

Defaults come from the profile (`profile: prod` or `dev`; by default the stack's name when it is `prod`,
otherwise `dev`): prod is Multi-AZ with one replica, 30-day backups and deletion protection; dev is
single-AZ, no replica, 7-day backups. Both are always encrypted and private: those are not knobs.

A bad value raises `SettingsError` naming the key (as written in the stack file), the value and what is
allowed, before any resource is declared.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.pgbouncer import capacity
from dbctl.pgbouncer import config as pgbouncer_config

PROJECT = "spike-land-db"
REGION_KEY = "aws:region"
# The stack name goes into AWS names: RDS identifiers (letters, digits, single hyphens) and IAM name
# prefixes (at most 38 characters, the longest being "spike-land-<stack>-backup-").
STACK_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
STACK_NAME_MAX = 19

_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_MAINT_WINDOW = re.compile(
    r"^(mon|tue|wed|thu|fri|sat|sun):([01]\d|2[0-3]):([0-5]\d)-(mon|tue|wed|thu|fri|sat|sun):([01]\d|2[0-3]):([0-5]\d)$"
)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_INSTANCE_CLASS = re.compile(r"^db\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
_EC2_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_SG_ID = re.compile(r"^sg-[0-9a-f]{8,17}$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Where a client of 5432/6543 may be: RFC 1918, RFC 6598 (shared address space, carrier-grade NAT) and IPv6
# unique local addresses (RFC 4193). Anything else is, or could be, public. policy/validators.py has the same
# list (the pack cannot import this module).
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_PRIVATE_TEXT = ", ".join(str(n) for n in PRIVATE_NETWORKS)

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def is_private_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Whether every address of `net` lies in one of PRIVATE_NETWORKS."""
    return any(
        net.subnet_of(p)  # type: ignore[arg-type]  # same version: checked first
        for p in PRIVATE_NETWORKS
        if p.version == net.version
    )


def _config_bool(value: object) -> object:
    """A boolean, or the strings Pulumi's own Config.get_bool reads (a top-level `pulumi config set` stores
    strings); never "yes", "off", "n", 1 or 0, which pydantic's lax mode would take."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "True", "false", "False"):
        return value.lower() == "true"
    raise ValueError("must be true or false")


def _config_int(value: object) -> object:
    """A whole number, or a string of digits (as `pulumi config set` stores it); never a boolean or 2.5."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise ValueError("must be a whole number")


def _config_float(value: object) -> object:
    """A number, or a string holding one; never a boolean."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value)
    raise ValueError("must be a number")


# Strict scalar types for stack settings: what the stack file means, not what pydantic can coerce.
Bool = Annotated[bool, BeforeValidator(_config_bool)]
Int = Annotated[int, BeforeValidator(_config_int)]
Float = Annotated[float, BeforeValidator(_config_float)]


class SettingsError(DbctlError, ValueError):
    """A stack config value is invalid; the message names the key, the value and what is allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )


def _window_minutes(window: str) -> tuple[int, int]:
    """`hh:mm-hh:mm` -> (start, end) in minutes of the day."""
    m = _WINDOW.fullmatch(window)
    assert m is not None
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def _maint_minutes(window: str) -> tuple[int, int]:
    """`ddd:hh:mm-ddd:hh:mm` -> (start, end) in minutes of the week."""
    m = _MAINT_WINDOW.fullmatch(window)
    assert m is not None
    d1, h1, m1, d2, h2, m2 = m.groups()
    start = _DAYS.index(d1) * 1440 + int(h1) * 60 + int(m1)
    end = _DAYS.index(d2) * 1440 + int(h2) * 60 + int(m2)
    return start, end


def _spans(start: int, end: int, period: int) -> list[tuple[int, int]]:
    """A (possibly wrapping) window as non-wrapping half-open spans within one period."""
    if end > start:
        return [(start, end)]
    return [(start, period), (0, end)]


class NetworkSettings(_Model):
    """`network`: create a private VPC, or adopt an existing one."""

    mode: Literal["create", "existing"] = "create"
    # create: the VPC's CIDR and how many AZs get a private subnet (RDS needs subnets in >= 2 AZs).
    vpc_cidr: str = "10.40.0.0/16"
    az_count: Int = Field(default=2, ge=2, le=6)
    # create: interface endpoints (SSM, Secrets Manager, KMS, CloudWatch) and an S3 gateway endpoint, so the
    # PgBouncer hosts work with no route to the internet. existing: the VPC is assumed to provide egress.
    vpc_endpoints: Bool = True
    # Interface endpoints in every private subnet (AZ-failure tolerant), or only the first (half the cost).
    endpoints_in_every_az: Bool = True
    # VPC flow logs to a KMS-encrypted log group with the stack's logRetentionDays (prod: on by default),
    # of rejected traffic only (what a security group or ACL dropped) or of all of it.
    flow_logs: Bool = False
    flow_log_traffic: Literal["REJECT", "ALL"] = "REJECT"
    # existing: the VPC and its private subnets (>= 2 AZs).
    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            net = ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"must be an IPv4 network such as 10.40.0.0/16 ({e})") from None
        if net.version != 4 or not 16 <= net.prefixlen <= 24:
            raise ValueError("must be an IPv4 network with a prefix between /16 and /24")
        return v

    @field_validator("vpc_id")
    @classmethod
    def _vpc(cls, v: str | None) -> str | None:
        if v is not None and not _VPC_ID.fullmatch(v):
            raise ValueError("must be a VPC id like vpc-0123456789abcdef0")
        return v

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not _SUBNET_ID.fullmatch(s)]
        if bad:
            raise ValueError(f"{bad} are not subnet ids like subnet-0123456789abcdef0")
        return v

    @model_validator(mode="after")
    def _mode(self) -> NetworkSettings:
        if self.mode == "existing":
            if self.vpc_id is None:
                raise ValueError("mode 'existing' needs vpcId (the VPC to adopt)")
            if len(set(self.subnet_ids)) < 2:
                raise ValueError("mode 'existing' needs subnetIds: at least two private subnets in two AZs")
        elif self.vpc_id is not None or self.subnet_ids:
            raise ValueError("vpcId and subnetIds are only for mode 'existing'; mode 'create' makes its own")
        return self


class PgBouncerSettings(_Model):
    """`pgbouncer`: the pooler tier in front of the database (the seed's settings as defaults)."""

    host_count: Int = Field(default=1, ge=1, le=10)
    instance_type: str = "t4g.small"
    # The PgBouncer version the AWS hosts install (AL2023 package); the renderer uses it to pick settings.
    version: str = "1.24"
    max_client_conn: Int = Field(default=1000, ge=1, le=100_000)
    default_pool_size: Int = Field(default=20, ge=1, le=10_000)
    min_pool_size: Int = Field(default=5, ge=0, le=10_000)
    reserve_pool_size: Int = Field(default=5, ge=0, le=10_000)
    reserve_pool_timeout: Int = Field(default=5, ge=0, le=3600)
    server_lifetime: Int = Field(default=3600, ge=0)
    server_idle_timeout: Int = Field(default=600, ge=0)
    client_tls: Bool = True
    # PgBouncer processes per host on one port (so_reuseport + peers); unset: one per vCPU of instanceType.
    # Each process has its own pools and its own maxClientConn. Always a whole number once validated.
    processes: Int = Field(default=None, ge=1, le=pgbouncer_config.MAX_PROCESSES, validate_default=True)
    # The hosts' AMI, pinned by hand (an image the stack's pipeline built and an operator promoted); unset:
    # the image this stack's pipeline builds on `pulumi up` (components/pgbouncer_image.py).
    ami_id: str | None = None

    @field_validator("instance_type")
    @classmethod
    def _graviton(cls, v: str) -> str:
        if not _EC2_INSTANCE_TYPE.fullmatch(v):
            raise ValueError("must be an EC2 instance type such as t4g.small or c7g.large")
        family = v.split(".", 1)[0]
        if not re.fullmatch(r"[a-z]+\d+g[a-z]*", family):
            raise ValueError("must be an arm64 Graviton type (family with a 'g', e.g. t4g, c7g, m7g)")
        return v

    @field_validator("ami_id")
    @classmethod
    def _ami(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"ami-(?:[0-9a-f]{8}|[0-9a-f]{17})", v):
            raise ValueError("must be an AMI id such as ami-0123456789abcdef0 (the pipeline's output image)")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"1\.\d{1,2}(\.\d+)?", v):
            raise ValueError("must be a PgBouncer version such as 1.24")
        return v

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, v: object, info: ValidationInfo) -> object:
        instance_type, version = info.data.get("instance_type"), info.data.get("version")
        if v is not None:
            v = _config_int(v)
        elif instance_type is not None:
            try:
                v = capacity.instance_vcpus(instance_type)
            except capacity.UnknownInstanceTypeError as e:
                raise ValueError(str(e)) from None
        if isinstance(v, int) and v > 1 and version is not None:
            have = pgbouncer_config.parse_version(version)
            if have < pgbouncer_config.PEERS_SINCE:
                low = pgbouncer_config.PEERS_SINCE
                raise ValueError(
                    f"{v} processes need pgbouncer.version >= {low[0]}.{low[1]} (peer_id and [peers] forward "
                    f"a cancel request to the process that owns the query), not {version}; raise "
                    "pgbouncer.version or set pgbouncer.processes to 1"
                )
        return v

    @model_validator(mode="after")
    def _pools(self) -> PgBouncerSettings:
        if self.min_pool_size > self.default_pool_size:
            raise ValueError("minPoolSize must not exceed defaultPoolSize")
        return self


class BackupSettings(_Model):
    """`backups`: what the backups component adds on top of RDS automated backups."""

    pre_migration_snapshot: Bool = False
    cross_region_copy: Bool = False
    dr_region: str | None = None
    vault_lock: Bool = False
    # EventBridge schedule expression for the automated restore test.
    restore_test_schedule: str = "cron(0 4 ? * SUN *)"
    # Restore validation: each critical table must have at least this fraction of the source's rows.
    restore_validation_min_fraction: Float = Field(default=0.5, gt=0, le=1)

    @field_validator("dr_region")
    @classmethod
    def _dr(cls, v: str | None) -> str | None:
        if v is not None and not _REGION.fullmatch(v):
            raise ValueError("must be an AWS region such as eu-central-1")
        return v

    @field_validator("restore_test_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        if not re.fullmatch(r"(cron|rate)\(.+\)", v):
            raise ValueError("must be an EventBridge schedule such as cron(0 4 ? * SUN *) or rate(7 days)")
        return v

    @model_validator(mode="after")
    def _copy(self) -> BackupSettings:
        if self.cross_region_copy and self.dr_region is None:
            raise ValueError("crossRegionCopy needs drRegion (where the copies go)")
        return self


class AlarmSettings(_Model):
    """`alarms`: who is told, and when (thresholds from the seed)."""

    emails: tuple[str, ...] = ()
    pager_https_endpoint: str | None = None
    connections_percent: Float = Field(default=80, gt=0, le=100)
    replica_lag_seconds: Float = Field(default=30, gt=0)
    free_storage_percent: Float = Field(default=20, gt=0, lt=100)
    slow_queries_per_5min: Int = Field(default=10, ge=1)
    cpu_percent: Float = Field(default=80, gt=0, le=100)
    freeable_memory_mb: Int = Field(default=128, ge=1)
    # Average disk latency (ReadLatency/WriteLatency) that, sustained for 15 minutes, means trouble on gp3.
    read_latency_ms: Float = Field(default=20, gt=0)
    write_latency_ms: Float = Field(default=20, gt=0)

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in v if not _EMAIL.fullmatch(e)]
        if bad:
            raise ValueError(f"{bad} are not email addresses")
        return v

    @field_validator("pager_https_endpoint")
    @classmethod
    def _pager(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return v


class MonitoringSettings(_Model):
    """`monitoring`: query plans of slow statements (auto_explain) and PgBouncer's pool metrics."""

    # Fraction of the statements over the slow-query threshold whose plan auto_explain logs: 1 logs every one
    # (no sampling); lower it only if the plans themselves flood the log.
    auto_explain_sample_rate: float = Field(default=1.0, gt=0, le=1)
    # EXPLAIN ANALYZE figures (actual rows and per-node timings) in the logged plans. Off: the executor then
    # instruments every sampled statement, fast ones included, since their duration is known only at the end.
    auto_explain_log_analyze: bool = False
    # PgBouncer pool alarms (hosts/pool_metrics.py publishes every 60 s per host): a client waited longer
    # than this for a server connection, in 3 consecutive minutes (the seed's "connection wait time").
    pool_max_wait_seconds: float = Field(default=10, gt=0, le=3600)
    # A pool is saturated when its busiest host has every default_pool_size connection active for this
    # many consecutive minutes (the reserve pool is then all that is left).
    pool_saturated_minutes: int = Field(default=5, ge=1, le=60)


class RotationSettings(_Model):
    """`rotation`: the Secrets Manager rotation schedule of the master and pooled-role secrets."""

    # Days between rotations: the seed's quarter. Secrets Manager's RotationRules.AutomaticallyAfterDays
    # allows 1 to 1000.
    schedule_days: Int = Field(default=90, ge=1, le=1000)


class StackSettings(_Model):
    """Every knob of a stack. Field names are snake_case; the stack file spells them camelCase."""

    stack: str
    profile: Literal["dev", "prod"]
    region: str
    owner: str = "spike-land-platform"
    tags: dict[str, str] = Field(default_factory=dict)

    engine_version: str = "17"
    instance_class: str
    replica_instance_class: str | None = None  # None: same as instance_class
    allocated_storage_gb: Int = Field(ge=20, le=65536)
    max_allocated_storage_gb: Int = Field(le=65536)
    multi_az: Bool
    replica_count: Int = Field(ge=0, le=5)
    # Explicit max_connections for primary and replicas (a hot standby needs >= the primary's);
    # None: the RDS formula for the primary's instance class memory.
    max_connections: Int | None = Field(default=None, ge=20, le=5000)
    backup_retention_days: Int = Field(ge=1, le=35)
    backup_window: str = "02:00-03:00"
    maintenance_window: str = "sun:04:00-sun:05:00"
    deletion_protection: Bool
    protect: Bool  # Pulumi `protect` on the primary: `pulumi destroy` refuses to delete it.
    skip_final_snapshot: Bool = False
    apply_immediately: Bool
    # Database Insights (what replaced the Performance Insights console): standard keeps the retention
    # below (7 days free, longer billed); advanced needs >= 465 days (15 months) of it.
    database_insights_mode: Literal["standard", "advanced"] = "standard"
    performance_insights_retention_days: Int = 7
    monitoring_interval_seconds: Annotated[Literal[1, 5, 10, 15, 30, 60], BeforeValidator(_config_int)] = 60
    log_retention_days: Int
    secret_recovery_window_days: Int = Field(ge=7, le=30)
    database_name: str = names.DATABASE_NAME
    allowed_cidrs: tuple[str, ...] = ()
    allowed_security_group_ids: tuple[str, ...] = ()

    network: NetworkSettings = Field(default_factory=NetworkSettings)
    pgbouncer: PgBouncerSettings = Field(default_factory=PgBouncerSettings)
    backups: BackupSettings = Field(default_factory=BackupSettings)
    alarms: AlarmSettings = Field(default_factory=AlarmSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    rotation: RotationSettings = Field(default_factory=RotationSettings)

    @property
    def effective_replica_instance_class(self) -> str:
        return self.replica_instance_class or self.instance_class

    @property
    def effective_max_connections(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        return capacity.max_connections(self.instance_class)

    @property
    def replica_max_connections(self) -> int:
        """What one replica holds: the parameter group gives it the primary's max_connections (a hot standby
        refuses fewer), but a smaller replica class's memory holds only its own formula's number."""
        if self.max_connections is not None:
            return self.max_connections
        own = capacity.max_connections(self.effective_replica_instance_class)
        return min(self.effective_max_connections, own)

    @property
    def pool_targets(self) -> list[capacity.PoolTarget]:
        """Each instance PgBouncer's pools point at (dbctl.pgbouncer.capacity.pool_targets: every replica)."""
        replicas = [self.replica_max_connections] * self.replica_count
        return capacity.pool_targets(self.effective_max_connections, replicas)

    @property
    def parameter_group_family(self) -> str:
        return f"postgres{self.engine_version}"

    @property
    def is_prod(self) -> bool:
        return self.profile == "prod"

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _REGION.fullmatch(v):
            raise ValueError("must be an AWS region such as eu-west-1")
        return v

    @field_validator("engine_version")
    @classmethod
    def _engine(cls, v: str) -> str:
        if not re.fullmatch(r"\d{2}", v) or not 14 <= int(v) <= 18:
            raise ValueError(
                "must be a PostgreSQL major version only, 14 to 18 (e.g. 17); RDS applies minor upgrades"
            )
        return v

    @field_validator("instance_class", "replica_instance_class")
    @classmethod
    def _class(cls, v: str | None) -> str | None:
        if v is not None and not _INSTANCE_CLASS.fullmatch(v):
            raise ValueError("must look like db.<family>.<size>, e.g. db.t4g.micro or db.r7g.large")
        return v

    @field_validator("performance_insights_retention_days")
    @classmethod
    def _pi(cls, v: int) -> int:
        if v != 7 and not (v % 31 == 0 and 31 <= v <= 713) and v != 731:
            raise ValueError("must be 7 (free tier), a multiple of 31 up to 713 (months), or 731")
        return v

    @field_validator("log_retention_days")
    @classmethod
    def _logs(cls, v: int) -> int:
        allowed = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557)
        if v not in allowed:
            raise ValueError(f"must be one of CloudWatch Logs' retention periods {allowed}")
        return v

    @field_validator("backup_window")
    @classmethod
    def _backup_window(cls, v: str) -> str:
        if not _WINDOW.fullmatch(v):
            raise ValueError("must be hh:mm-hh:mm in UTC, e.g. 02:00-03:00")
        start, end = _window_minutes(v)
        if (end - start) % 1440 < 30:
            raise ValueError("must be at least 30 minutes long (RDS rule)")
        return v

    @field_validator("maintenance_window")
    @classmethod
    def _maint_window(cls, v: str) -> str:
        if not _MAINT_WINDOW.fullmatch(v):
            raise ValueError("must be ddd:hh:mm-ddd:hh:mm in UTC, e.g. sun:04:00-sun:05:00")
        start, end = _maint_minutes(v)
        if (end - start) % (7 * 1440) < 30:
            raise ValueError("must be at least 30 minutes long (RDS rule)")
        return v

    @field_validator("database_name")
    @classmethod
    def _dbname(cls, v: str) -> str:
        if not _IDENTIFIER.fullmatch(v):
            raise ValueError("must be a lowercase identifier: letters, digits, underscore (e.g. spike_land)")
        return v

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        public = []
        for cidr in v:
            try:
                net = ipaddress.ip_network(cidr, strict=True)
            except ValueError as e:
                raise ValueError(f"{cidr!r} is not a network in CIDR notation ({e})") from None
            if not is_private_network(net):
                public.append(cidr)
        if public:
            raise ValueError(
                f"{', '.join(public)} reach{'es' if len(public) == 1 else ''} outside private address space "
                f"({_PRIVATE_TEXT}) and would open 5432 and 6543 to the internet; list your app's private "
                "CIDRs, or use allowedSecurityGroupIds"
            )
        return v

    @field_validator("allowed_security_group_ids")
    @classmethod
    def _sgs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not _SG_ID.fullmatch(s)]
        if bad:
            raise ValueError(f"{bad} are not security group ids like sg-0123456789abcdef0")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = {"project", "stack", "owner"} & set(v)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are set by the program; pick other tag keys")
        bad = [k for k in v if k.startswith("aws:") or not 1 <= len(k) <= 128]
        if bad:
            raise ValueError(f"{bad} are not valid tag keys (1-128 chars, not starting with aws:)")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> StackSettings:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise _FieldProblem(
                "max_allocated_storage_gb",
                self.max_allocated_storage_gb,
                f"must be >= allocatedStorageGb ({self.allocated_storage_gb}); it is the autoscaling ceiling",
            )
        replica_classes = [self.effective_replica_instance_class] if self.replica_count else []
        for instance_class in [self.instance_class, *replica_classes]:
            if self.max_connections is None and instance_class not in capacity.INSTANCE_MEMORY_GIB:
                raise _FieldProblem(
                    "max_connections",
                    None,
                    f"must be set: the memory of {instance_class} is not in dbctl/pgbouncer/capacity.py "
                    "(set maxConnections, or pick a class listed there)",
                )
        if self.database_insights_mode == "advanced" and self.performance_insights_retention_days < 465:
            raise _FieldProblem(
                "performance_insights_retention_days",
                self.performance_insights_retention_days,
                "must be at least 465 (15 months) with databaseInsightsMode advanced (RDS rule); "
                "set it to 465, or use databaseInsightsMode standard",
            )
        try:
            capacity.check_layout(
                self.pool_targets,
                default_pool_size=self.pgbouncer.default_pool_size,
                reserve_pool_size=self.pgbouncer.reserve_pool_size,
                # The ASG's maximum: hostCount, doubled while an instance refresh surges (never more).
                pgbouncer_hosts=capacity.hosts_at_surge(self.pgbouncer.host_count),
                processes=self.pgbouncer.processes,
            )
        except capacity.PoolBudgetError as e:
            p = self.pgbouncer
            value = {
                "hostCount": p.host_count,
                "processes": p.processes,
                "defaultPoolSize": p.default_pool_size,
                "reservePoolSize": p.reserve_pool_size,
            }
            surge = (
                f"while an instance refresh surges to {capacity.hosts_at_surge(p.host_count)} host(s) "
                f"(hostCount {p.host_count} and their replacements): "
            )
            raise _FieldProblem("pgbouncer", value, surge + str(e)) from None
        version = pgbouncer_config.parse_version(self.pgbouncer.version)
        if self.replica_count > 1 and version < pgbouncer_config.HOST_LIST_VERIFY_FULL_SINCE:
            raise _FieldProblem(
                "replica_count", self.replica_count, pgbouncer_config.host_list_tls_problem(version)
            )
        if self.backups.cross_region_copy and self.backups.dr_region == self.region:
            raise _FieldProblem(
                "backups",
                self.backups.dr_region,
                f"drRegion must differ from aws:region ({self.region}): a copy in the same region is no DR",
            )
        backup = _spans(*_window_minutes(self.backup_window), 1440)
        maint_start, maint_end = _maint_minutes(self.maintenance_window)
        maint = _spans(maint_start, maint_end, 7 * 1440)
        for day in range(7):
            for b0, b1 in backup:
                for m0, m1 in maint:
                    if b0 + day * 1440 < m1 and m0 < b1 + day * 1440:
                        raise _FieldProblem(
                            "maintenance_window",
                            self.maintenance_window,
                            f"must not overlap backupWindow {self.backup_window} (RDS rule)",
                        )
        return self


class _FieldProblem(ValueError):
    """A cross-field rule failed; carries the field to blame so the message names its key."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(allowed)
        self.field = field
        self.value = value
        self.allowed = allowed


# Per-profile defaults. A key written in the stack file wins over these.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {
        "instanceClass": "db.t4g.micro",
        "allocatedStorageGb": 20,
        "maxAllocatedStorageGb": 100,
        "multiAz": False,
        "replicaCount": 0,
        "backupRetentionDays": 7,
        "deletionProtection": False,
        "protect": False,
        "applyImmediately": True,
        "logRetentionDays": 14,
        "secretRecoveryWindowDays": 7,
        "network": {"endpointsInEveryAz": False},
        # One process and smaller pools: a db.t4g.micro's max_connections (82) minus headroom is 67, and an
        # instance refresh runs the host and its replacement at once: 2 hosts x 2 pools x (12 + 3) = 60.
        "pgbouncer": {
            "hostCount": 1,
            "instanceType": "t4g.small",
            "processes": 1,
            "defaultPoolSize": 12,
            "reservePoolSize": 3,
        },
        "backups": {"preMigrationSnapshot": False},
    },
    "prod": {
        "instanceClass": "db.m7g.large",
        "allocatedStorageGb": 100,
        "maxAllocatedStorageGb": 1000,
        "multiAz": True,
        "replicaCount": 1,
        "backupRetentionDays": 30,
        "deletionProtection": True,
        "protect": True,
        "applyImmediately": False,
        "logRetentionDays": 90,
        "secretRecoveryWindowDays": 30,
        "performanceInsightsRetentionDays": 7,
        "network": {"flowLogs": True},
        "pgbouncer": {"hostCount": 2, "instanceType": "c7g.large"},
        # Restore test monthly (the seed's "monthly backup test"), on the 2nd, after the 1st's monthly backup.
        "backups": {"preMigrationSnapshot": True, "restoreTestSchedule": "cron(0 9 2 * ? *)"},
    },
}

_SECTIONS = ("network", "pgbouncer", "backups", "alarms", "monitoring", "rotation")


def config_key(loc: tuple[int | str, ...]) -> str:
    """The stack-file key for a pydantic error location, e.g. `spike-land-db:pgbouncer.hostCount`."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return f"{PROJECT}:<config>"
    if parts[0] == "region":
        return REGION_KEY
    fields = StackSettings.model_fields
    first = parts[0]
    head = fields[first].alias or to_camel(first) if first in fields else first
    rest = [to_camel(p) if "_" in p else p for p in parts[1:]]
    return f"{PROJECT}:" + ".".join([head, *rest])


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in given.items():
        if key in _SECTIONS and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_settings(stack: str, raw: Mapping[str, Any]) -> StackSettings:
    """Validate `raw` (stack-file keys -> values) for `stack`; raise SettingsError naming the bad key."""
    if not STACK_NAME.fullmatch(stack) or len(stack) > STACK_NAME_MAX:
        raise SettingsError(
            f"stack name {stack!r} is invalid: it goes into RDS identifiers and IAM names, so it must be "
            f"lowercase letters, digits and single hyphens, start with a letter, and be at most "
            f"{STACK_NAME_MAX} characters; fix: pulumi stack init with a name like 'staging'"
        )
    given = dict(raw)
    region = given.pop(REGION_KEY, None)
    if region is None:
        raise SettingsError(
            f"{REGION_KEY} is not set; fix: pulumi config set aws:region eu-west-1 -s {stack}"
        )
    profile = given.pop("profile", "prod" if stack == "prod" else "dev")
    if profile not in PROFILE_DEFAULTS:
        raise SettingsError(
            f"invalid stack config in Pulumi.{stack}.yaml: {PROJECT}:profile = {profile!r} is invalid: "
            f"must be one of {sorted(PROFILE_DEFAULTS)}"
        )
    data = _merge(PROFILE_DEFAULTS[profile], given)
    data.update(stack=stack, profile=profile, region=region)
    try:
        return StackSettings.model_validate(data)
    except ValidationError as e:
        raise SettingsError(_describe(e, stack)) from None


def _describe(error: ValidationError, stack: str) -> str:
    problems = []
    for item in error.errors(include_url=False):
        ctx_error = (item.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldProblem):
            key = config_key((ctx_error.field,))
            problems.append(f"{key} = {ctx_error.value!r} is invalid: {ctx_error.allowed}")
            continue
        loc = tuple(item["loc"])
        key = config_key(loc)
        msg = item["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if item["type"] == "extra_forbidden":
            problems.append(f"{key} is not a known setting; see docs/settings.md")
            continue
        if item["type"] == "missing":
            problems.append(f"{key} is required but not set")
            continue
        value = item.get("input")
        problems.append(f"{key} = {value!r} is invalid: {msg}")
    header = f"invalid stack config in Pulumi.{stack}.yaml:"
    if len(problems) == 1:
        return f"{header} {problems[0]}"
    return header + "".join(f"\n  - {p}" for p in problems)


def known_keys() -> list[str]:
    """The project config keys the program reads (camelCase, as in the stack file)."""
    skip = {"stack", "profile", "region"}
    keys = [f.alias or name for name, f in StackSettings.model_fields.items() if name not in skip]
    return ["profile", *keys]


def stack_file_settings(stack: str, root: Path, region: str | None = None) -> StackSettings:
    """Validate `root/Pulumi.<stack>.yaml` as `pulumi up` would, without the Pulumi CLI (`dbctl preflight`).

    `stack` may be fully qualified (`org/prod`); the file is named after its last part. Values reach the
    program the way the CLI hands them over: strings as they are, anything structured as JSON. `region`,
    when given, replaces the file's aws:region (validated like it).
    """
    import yaml

    name = stack.rsplit("/", 1)[-1]
    path = root / f"Pulumi.{name}.yaml"
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise SettingsError(
            f"cannot read {path} ({e.strerror}); fix: run from the project directory"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        line = str(e).splitlines()[0]
        raise SettingsError(f"{path.name} is not valid YAML ({line}); fix the file") from None
    config = loaded.get("config") if isinstance(loaded, Mapping) else None
    if not isinstance(config, Mapping):
        config = {}
    prefix = f"{PROJECT}:"
    raw: dict[str, Any] = {}
    for key, value in config.items():
        if key == REGION_KEY or str(key).startswith(prefix):
            text = value if isinstance(value, str) else json.dumps(value)
            raw[str(key).removeprefix(prefix)] = parse_value(text)
    if region is not None:
        raw[REGION_KEY] = region
    return load_settings(name, raw)


def parse_value(value: str) -> Any:
    """Config values arrive as strings; structured ones (lists, maps, numbers, booleans) as JSON."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
