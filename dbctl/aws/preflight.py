"""`dbctl preflight`: the cheap, read-only questions only the AWS account can answer, before `pulumi up`.

Mocks run the program, not AWS. These checks ask the account what a first `pulumi up` (or the first
deploy) would otherwise find out the hard way. Each is a function of the validated stack settings and one
boto3 client, and returns a `Check`: ok, fail (with what to do) or skip (does not apply to this stack).

- dr-backup-replication (rds DescribeSourceRegions, in the DR region): fails when the DR region cannot
  replicate automated backups from the primary's region;
- parameter-apply-types (rds DescribeEngineDefaultParameters for the family): a parameter we set is
  unknown, not modifiable, or static while we send `immediate`;
- slow-query-filter (logs TestMetricFilter): CloudWatch rejects the pattern, or does not match exactly the
  slow one of two sample lines in RDS's log format;
- backup-opt-in (backup DescribeRegionSettings, each region): AWS Backup's RDS opt-in is off;
- instance-class (rds DescribeOrderableDBInstanceOptions): the class is not offered for the major version
  on gp3, or without Multi-AZ / read replicas where the stack uses them;
- deploy-role-session (iam GetRole): the deploy role's MaxSessionDuration is below the deploy workflow's
  role-duration-seconds.

An API error (no credentials, AccessDenied, throttling) fails only its own check, naming the IAM action
the caller needs. Nothing here creates, changes or deletes anything.

``preflight(stack_name, project_dir, ...)`` is the verb `dbctl preflight` calls: it reads
`Pulumi.<stack>.yaml` through dbctl/stackconfig/settings.py (the validation `pulumi up` runs, without the
Pulumi CLI) and runs every check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from dbctl.core.errors import DbctlError
from dbctl.stackconfig.parameters import Parameter, replica_parameters
from dbctl.stackconfig.settings import StackSettings, stack_file_settings
from dbctl.stackconfig.slow_query import (
    SLOW_QUERY_FILTER_PATTERN,
    SLOW_QUERY_THRESHOLD_MS,
    filter_pattern_matches,
)

if TYPE_CHECKING:
    from mypy_boto3_backup import BackupClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_rds import RDSClient

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_WORKFLOW = REPO_ROOT / ".github" / "workflows" / "deploy-stack.yml"
CREDENTIALS_ACTION = "aws-actions/configure-aws-credentials@"
ENGINE = "postgres"
STORAGE_TYPE = "gp3"  # components/database.py declares gp3 for the primary and the replicas

# RDS's log_line_prefix is %t:%r:%u@%d:[%p]: (docs/operations.md): one statement over the slow-query
# threshold, one under it. CloudWatch must count exactly the first, as filter_pattern_matches does.
SLOW_SAMPLE = (
    "2026-11-25 05:52:44 UTC:10.0.1.5(58704):spike_app@spike_land:[11494]:LOG:  "
    f"duration: {SLOW_QUERY_THRESHOLD_MS + 202.851:.3f} ms  statement: SELECT pg_sleep(1.2)"
)
FAST_SAMPLE = (
    "2026-11-25 05:52:46 UTC:10.0.1.5(49914):spike_app@spike_land:[11551]:LOG:  "
    "duration: 150.868 ms  statement: SELECT 1"
)

Status = Literal["ok", "fail", "skip"]
# (service, region or None for a global service) -> a boto3 client
ClientFactory = Callable[[str, "str | None"], Any]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str  # what was found
    fix: str = ""  # what to do (for a failure)

    def line(self) -> str:
        label = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}[self.status]
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{label} {self.name}: {self.detail}{fix}"


class PreflightError(DbctlError, ValueError):
    """Preflight cannot start (the workflow file is unreadable...): one line, no check ran."""


@dataclass(frozen=True)
class Outcome:
    """The checks run for one stack in one region."""

    stack: str
    region: str
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


def _api_failure(name: str, action: str, error: Exception) -> Check:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        what = f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    else:
        what = str(error)
    return Check(name, "fail", f"AWS answered {what}", f"run with credentials allowed {action} (read-only)")


# --- the checks -------------------------------------------------------------------------------------------


def dr_backup_replication(settings: StackSettings, rds_dr: RDSClient | None) -> Check:
    """Can the DR region replicate the primary's automated backups (components/backups.py declares it)?"""
    name = "dr-backup-replication"
    dr, source = settings.backups.dr_region, settings.region
    if not settings.backups.cross_region_copy or dr is None or rds_dr is None:
        return Check(name, "skip", "backups.crossRegionCopy is off: no automated-backup replication")
    regions = [
        r
        for page in rds_dr.get_paginator("describe_source_regions").paginate(RegionName=source)
        for r in page.get("SourceRegions", [])
        if r.get("RegionName") == source
    ]
    fix = (
        f"pick a backups.drRegion whose `aws rds describe-source-regions --region <dr> --region-name "
        f"{source}` says SupportsDBInstanceAutomatedBackupsReplication true, or set crossRegionCopy false"
    )
    if not regions:
        return Check(name, "fail", f"{dr} lists {source} as no source region of its own", fix)
    if not regions[0].get("SupportsDBInstanceAutomatedBackupsReplication", False):
        return Check(name, "fail", f"{dr} cannot replicate automated backups from {source}", fix)
    return Check(name, "ok", f"{dr} replicates automated backups from {source}")


def parameter_problems(
    ours: Iterable[Parameter], defaults: dict[str, dict[str, Any]], family: str
) -> list[str]:
    """What RDS would refuse in our parameter list, given the family's engine defaults (pure)."""
    problems = []
    for p in ours:
        default = defaults.get(p.name)
        if default is None:
            problems.append(f"{p.name} is not a {family} parameter")
        elif not default.get("IsModifiable", True):
            problems.append(f"{p.name} is not modifiable in {family}")
        elif default.get("ApplyType") == "static" and p.apply_method == "immediate":
            problems.append(f"{p.name} is static but sent with apply_method immediate")
    return problems


def parameter_apply_types(settings: StackSettings, rds: RDSClient) -> Check:
    """Does every parameter of ours exist in the family, and is every static one sent pending-reboot?"""
    name = "parameter-apply-types"
    family = settings.parameter_group_family
    # The replicas' list is the primary's plus the standby settings: checking it checks both groups.
    ours = replica_parameters(
        settings.effective_max_connections, int(settings.alarms.replica_lag_seconds * 1000)
    )
    defaults = {
        p["ParameterName"]: dict(p)
        for page in rds.get_paginator("describe_engine_default_parameters").paginate(
            DBParameterGroupFamily=family
        )
        for p in page.get("EngineDefaults", {}).get("Parameters", [])
        if "ParameterName" in p
    }
    problems = parameter_problems(ours, defaults, family)
    if problems:
        return Check(
            name,
            "fail",
            "; ".join(problems),
            "fix dbctl/stackconfig/parameters.py (static parameters take apply_method pending-reboot)",
        )
    static = sum(1 for p in ours if defaults[p.name].get("ApplyType") == "static")
    return Check(
        name, "ok", f"{len(ours)} parameters known to {family}, {static} static ones sent pending-reboot"
    )


def slow_query_filter(logs: CloudWatchLogsClient) -> Check:
    """Does CloudWatch accept the slow-query pattern and count exactly the slow sample line?"""
    name = "slow-query-filter"
    samples = [SLOW_SAMPLE, FAST_SAMPLE]
    expected = [s for s in samples if filter_pattern_matches(SLOW_QUERY_FILTER_PATTERN, s)]
    answer = logs.test_metric_filter(filterPattern=SLOW_QUERY_FILTER_PATTERN, logEventMessages=samples)
    matched = [m.get("eventMessage", "") for m in answer.get("matches", [])]
    if matched != expected:
        return Check(
            name,
            "fail",
            f"CloudWatch matched {matched} of the sample lines, the program expects {expected}",
            "fix slow_query_filter_pattern in dbctl/stackconfig/slow_query.py "
            "(and filter_pattern_matches with it)",
        )
    return Check(name, "ok", f"CloudWatch accepts {SLOW_QUERY_FILTER_PATTERN} and counts only the slow line")


def backup_opt_in(region: str, backup: BackupClient) -> Check:
    """Is AWS Backup allowed to protect RDS in `region` (the plan's selection is silently empty otherwise)?"""
    name = f"backup-opt-in ({region})"
    prefs = backup.describe_region_settings().get("ResourceTypeOptInPreference", {})
    if prefs.get("RDS") is True:
        return Check(name, "ok", "AWS Backup's RDS opt-in is on")
    return Check(
        name,
        "fail",
        "AWS Backup's RDS opt-in is off: the backup plan would select nothing",
        f"aws backup update-region-settings --region {region} --resource-type-opt-in-preference RDS=true",
    )


def instance_class(settings: StackSettings, rds: RDSClient) -> list[Check]:
    """Is each class the stack uses offered for the major version in the region, with what we ask of it?"""
    classes = {settings.instance_class: "primary"}
    if settings.replica_count > 0:
        classes.setdefault(settings.effective_replica_instance_class, "replica")
    checks = []
    for cls in classes:
        name = f"instance-class ({cls})"
        options = [
            o
            for page in rds.get_paginator("describe_orderable_db_instance_options").paginate(
                Engine=ENGINE, DBInstanceClass=cls, Vpc=True
            )
            for o in page.get("OrderableDBInstanceOptions", [])
            if o.get("EngineVersion", "").split(".")[0] == settings.engine_version
        ]
        wants = []
        if cls == settings.instance_class and settings.multi_az:
            wants.append(("Multi-AZ", "MultiAZCapable"))
        if cls == settings.effective_replica_instance_class and settings.replica_count > 0:
            wants.append(("read replicas", "ReadReplicaCapable"))
        fix = (
            f"pick another class: aws rds describe-orderable-db-instance-options --region {settings.region} "
            f"--engine {ENGINE} --db-instance-class {cls}"
        )
        gp3 = [o for o in options if o.get("StorageType") == STORAGE_TYPE]
        missing = [what for what, key in wants if not any(o.get(key) for o in gp3)]
        if not options:
            detail = f"not offered for PostgreSQL {settings.engine_version} in {settings.region}"
            checks.append(Check(name, "fail", detail, fix))
        elif not gp3:
            checks.append(
                Check(name, "fail", f"offered for PostgreSQL {settings.engine_version}, not on gp3", fix)
            )
        elif missing:
            detail = (
                f"offered for PostgreSQL {settings.engine_version} on gp3, without {' or '.join(missing)}"
            )
            checks.append(Check(name, "fail", detail, fix))
        else:
            versions = sorted({o["EngineVersion"] for o in gp3}, key=lambda v: [int(x) for x in v.split(".")])
            detail = f"offered on gp3 for PostgreSQL {versions[0]} to {versions[-1]} in {settings.region}"
            checks.append(Check(name, "ok", detail))
    return checks


def workflow_role_duration(workflow: Path = DEPLOY_WORKFLOW) -> int:
    """`role-duration-seconds` of the deploy workflow's AWS credentials step."""
    import yaml

    try:
        data = yaml.safe_load(workflow.read_text(encoding="utf-8"))
        steps = [step for job in data["jobs"].values() for step in job.get("steps", [])]
        [creds] = [s for s in steps if str(s.get("uses", "")).startswith(CREDENTIALS_ACTION)]
        return int(creds["with"]["role-duration-seconds"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise PreflightError(
            f"cannot read role-duration-seconds from {workflow} ({type(e).__name__}: {e}); "
            "fix: run from the project checkout, whose deploy-stack.yml has one aws credentials step"
        ) from None


def role_name(role: str) -> str:
    """The role name in an IAM role ARN (`arn:aws:iam::123456789012:role/path/name`), or the name itself."""
    return role.rsplit("/", 1)[-1] if role.startswith("arn:") else role


def deploy_role_session(role: str | None, required_seconds: int, iam: IAMClient | None) -> Check:
    """Does the deploy role let the workflow ask for `required_seconds` of credentials?"""
    name = "deploy-role-session"
    if role is None or iam is None:
        return Check(
            name,
            "skip",
            f"no --deploy-role given (the workflow asks for {required_seconds} s)",
            "pass --deploy-role <the environment's AWS_DEPLOY_ROLE_ARN> to check it",
        )
    have = iam.get_role(RoleName=role_name(role))["Role"].get("MaxSessionDuration", 3600)
    if have < required_seconds:
        return Check(
            name,
            "fail",
            f"{role_name(role)} allows {have} s sessions, the deploy workflow asks for {required_seconds} s",
            f"aws iam update-role --role-name {role_name(role)} --max-session-duration {required_seconds}",
        )
    return Check(
        name, "ok", f"{role_name(role)} allows {have} s sessions (the workflow asks for {required_seconds})"
    )


# --- running them -----------------------------------------------------------------------------------------


def run_checks(
    settings: StackSettings,
    make_client: ClientFactory,
    deploy_role: str | None = None,
    workflow: Path = DEPLOY_WORKFLOW,
) -> list[Check]:
    """Every check, in the table's order; an API error fails only the check that met it."""
    region, dr = settings.region, settings.backups.dr_region
    with_dr = settings.backups.cross_region_copy and dr is not None
    required = workflow_role_duration(workflow)
    steps: list[tuple[str, str, Callable[[], Check | list[Check]]]] = [
        (
            "dr-backup-replication",
            "rds:DescribeSourceRegions",
            lambda: dr_backup_replication(settings, make_client("rds", dr) if with_dr else None),
        ),
        (
            "parameter-apply-types",
            "rds:DescribeEngineDefaultParameters",
            lambda: parameter_apply_types(settings, make_client("rds", region)),
        ),
        (
            "slow-query-filter",
            "logs:TestMetricFilter",
            lambda: slow_query_filter(make_client("logs", region)),
        ),
        *[
            (
                f"backup-opt-in ({r})",
                "backup:DescribeRegionSettings",
                lambda r=r: backup_opt_in(r, make_client("backup", r)),
            )
            for r in [region, *([dr] if with_dr and dr is not None else [])]
        ],
        (
            "instance-class",
            "rds:DescribeOrderableDBInstanceOptions",
            lambda: instance_class(settings, make_client("rds", region)),
        ),
        (
            "deploy-role-session",
            "iam:GetRole",
            lambda: deploy_role_session(
                deploy_role, required, make_client("iam", None) if deploy_role else None
            ),
        ),
    ]
    checks: list[Check] = []
    for name, action, step in steps:
        try:
            result = step()
        except (ClientError, BotoCoreError) as e:
            checks.append(_api_failure(name, action, e))
            continue
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def preflight(
    stack_name: str,
    project_dir: Path = REPO_ROOT,
    *,
    region: str | None = None,
    deploy_role: str | None = None,
    profile: str | None = None,
) -> Outcome:
    """Validate project_dir's Pulumi.<stack>.yaml, then run every check with the profile's clients."""
    settings = stack_file_settings(stack_name, project_dir, region=region)
    workflow = project_dir / ".github" / "workflows" / "deploy-stack.yml"
    checks = run_checks(settings, boto3_factory(profile), deploy_role, workflow)
    return Outcome(settings.stack, settings.region, checks)


def boto3_factory(profile: str | None = None) -> ClientFactory:
    """Clients from one boto3 session (the usual credential chain), one per service and region."""
    import boto3

    session = boto3.session.Session(profile_name=profile)
    client: Callable[..., Any] = session.client  # the stubs type it per literal service name
    cache: dict[tuple[str, str | None], Any] = {}

    def make(service: str, region: str | None) -> Any:
        if (service, region) not in cache:
            cache[service, region] = client(service, region_name=region)
        return cache[service, region]

    return make
