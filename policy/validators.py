"""What must never ship, as plain functions over one resource's inputs.

Each check takes ``(resource_type, inputs, prod)`` and returns violation messages (empty when the resource
complies). ``resource_type`` is the Pulumi type token (``aws:rds/instance:Instance``) and ``inputs`` the
resource's inputs under their camelCase Pulumi names (``storageEncrypted``, ``multiAz``...): what
pulumi-policy hands a ResourceValidationPolicy, and what Pulumi mocks hand ``new_resource``. ``prod`` says
whether the stack is a production one; the pack derives it from the resource URN.

The pack (``policy/__main__.py``) wraps each ``Policy`` here as a mandatory ResourceValidationPolicy; the unit
tests call the same functions on hand-written inputs and on everything the real program declares under mocks.

Inputs may be pulumi-policy proxies (read-only ``Mapping``/``Sequence``, which raise on values unknown during
preview), so this module tests for the ABCs, never for ``dict``/``list``.
"""

import ipaddress
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Check = Callable[[str, Mapping[str, Any], bool], list[str]]

RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
EC2_INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
VPC_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SECRETS_MANAGER_SECRET = "aws:secretsmanager/secret:Secret"  # noqa: S105 (a type token, not a password)
SNS_TOPIC = "aws:sns/topic:Topic"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SQS_QUEUE = "aws:sqs/queue:Queue"
BACKUP_VAULT = "aws:backup/vault:Vault"
SNAPSHOT_COPY = "aws:rds/snapshotCopy:SnapshotCopy"
CLUSTER_SNAPSHOT_COPY = "aws:rds/clusterSnapshotCopy:ClusterSnapshotCopy"
BACKUP_REPLICATION = "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication"

# PostgreSQL and PgBouncer (dbctl.names.POSTGRES_PORT / PGBOUNCER_PORT; the pack cannot import dbctl).
GUARDED_PORTS = (5432, 6543)
# Where a client of those ports may be: RFC 1918, RFC 6598 (shared address space) and IPv6 unique local
# addresses. Anything else is, or could be, public (components.settings.PRIVATE_NETWORKS, the same list).
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
RETENTION_MIN, RETENTION_MAX = 1, 35  # what RDS accepts when automated backups are on
PROD_RETENTION_DAYS = 30


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    check: Check


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _is_set(value: Any) -> bool:
    return value is not None and value != ""


def _is_replica(inputs: Mapping[str, Any]) -> bool:
    # A read replica inherits encryption from its source and has no backups of its own to keep;
    # the rules that matter for it are checked on the source.
    return _is_set(inputs.get("replicateSourceDb"))


def _items(value: Any) -> Iterator[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        yield from value


# --- encryption -------------------------------------------------------------------------------------------


def database_storage_encrypted(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type not in (RDS_INSTANCE, RDS_CLUSTER):
        return []
    if resource_type == RDS_INSTANCE and _is_replica(inputs):
        return []
    if _is_true(inputs.get("storageEncrypted")):
        return []
    return [
        "storageEncrypted is not true: the database would be stored unencrypted; set storage_encrypted=True"
    ]


def snapshot_encrypted(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    # Snapshots of an encrypted instance are encrypted; what can still go wrong is a copy or a backup store
    # declared without the key that keeps it encrypted (cross-region copies need an explicit key).
    key_input = {
        SNAPSHOT_COPY: "kmsKeyId",
        CLUSTER_SNAPSHOT_COPY: "kmsKeyId",
        BACKUP_REPLICATION: "kmsKeyId",
        BACKUP_VAULT: "kmsKeyArn",
    }.get(resource_type)
    if key_input is None or _is_set(inputs.get(key_input)):
        return []
    return [f"{key_input} is not set: snapshots stored here would not be encrypted with the stack's KMS key"]


def secret_encrypted(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type != SECRETS_MANAGER_SECRET or _is_set(inputs.get("kmsKeyId")):
        return []
    return ["kmsKeyId is not set: the secret must be encrypted with the stack's customer-managed KMS key"]


def topic_encrypted(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type != SNS_TOPIC or _is_set(inputs.get("kmsMasterKeyId")):
        return []
    return ["kmsMasterKeyId is not set: SNS topics are unencrypted at rest unless given a KMS key"]


def log_group_encrypted(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type != LOG_GROUP or _is_set(inputs.get("kmsKeyId")):
        return []
    return ["kmsKeyId is not set: a log group names tables, users and secrets; encrypt it with the stack key"]


def queue_encrypted(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type != SQS_QUEUE or _is_set(inputs.get("kmsMasterKeyId")):
        return []
    return ["kmsMasterKeyId is not set: encrypt the queue with the stack key, as everything else"]


# --- exposure ---------------------------------------------------------------------------------------------


def no_public_instance(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type == RDS_INSTANCE and _is_true(inputs.get("publiclyAccessible")):
        return ["publiclyAccessible is true: the database would get a public endpoint; set it to False"]
    if resource_type == EC2_INSTANCE and _is_true(inputs.get("associatePublicIpAddress")):
        return [
            "associatePublicIpAddress is true: the instance would get a public IP; keep it in private subnets"
        ]
    if resource_type == LAUNCH_TEMPLATE:
        for nic in _items(inputs.get("networkInterfaces")):
            if isinstance(nic, Mapping) and _is_true(nic.get("associatePublicIpAddress")):
                return [
                    "networkInterfaces[].associatePublicIpAddress is true: instances would get a public IP"
                ]
    return []


def _covers_guarded_port(protocol: Any, from_port: Any, to_port: Any) -> list[int]:
    proto = str(protocol).lower() if protocol is not None else ""
    if proto in ("-1", "all"):
        return list(GUARDED_PORTS)
    if proto not in ("tcp", "6"):
        return []
    if from_port is None or to_port is None:
        return []
    return [port for port in GUARDED_PORTS if int(from_port) <= port <= int(to_port)]


def _is_private(cidr: str) -> bool:
    """Whether every address of `cidr` is private (an unparseable CIDR is not: AWS would refuse it anyway)."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return any(
        net.subnet_of(p)  # type: ignore[arg-type]  # same version: checked first
        for p in PRIVATE_NETWORKS
        if p.version == net.version
    )


def _open_ingress(cidrs: Sequence[Any], protocol: Any, from_port: Any, to_port: Any, where: str) -> list[str]:
    public = sorted({str(c) for c in cidrs if _is_set(c) and not _is_private(str(c))})
    ports = _covers_guarded_port(protocol, from_port, to_port)
    if not public or not ports:
        return []
    return [
        f"{where} admits {', '.join(public)} on port {', '.join(map(str, ports))}, outside private address "
        f"space ({', '.join(map(str, PRIVATE_NETWORKS))}): allow the application's security groups or "
        "private CIDRs instead"
    ]


def no_open_database_ingress(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type == SECURITY_GROUP:
        found: list[str] = []
        for i, rule in enumerate(_items(inputs.get("ingress"))):
            if isinstance(rule, Mapping):
                cidrs = [*_items(rule.get("cidrBlocks")), *_items(rule.get("ipv6CidrBlocks"))]
                found += _open_ingress(
                    cidrs, rule.get("protocol"), rule.get("fromPort"), rule.get("toPort"), f"ingress[{i}]"
                )
        return found
    if resource_type == SECURITY_GROUP_RULE and inputs.get("type") == "ingress":
        cidrs = [*_items(inputs.get("cidrBlocks")), *_items(inputs.get("ipv6CidrBlocks"))]
        return _open_ingress(
            cidrs, inputs.get("protocol"), inputs.get("fromPort"), inputs.get("toPort"), "the rule"
        )
    if resource_type == VPC_INGRESS_RULE:
        cidrs = [inputs.get("cidrIpv4"), inputs.get("cidrIpv6")]
        return _open_ingress(
            cidrs, inputs.get("ipProtocol"), inputs.get("fromPort"), inputs.get("toPort"), "the rule"
        )
    return []


# --- IAM --------------------------------------------------------------------------------------------------


def policy_documents(inputs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key in ("policy", "assumeRolePolicy"):
        if _is_set(inputs.get(key)):
            yield key, inputs[key]
    for i, inline in enumerate(_items(inputs.get("inlinePolicies"))):
        if isinstance(inline, Mapping) and _is_set(inline.get("policy")):
            yield f"inlinePolicies[{i}].policy", inline["policy"]


def no_iam_action_star(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if not resource_type.startswith("aws:"):
        return []
    found: list[str] = []
    for where, document in policy_documents(inputs):
        if isinstance(document, str):
            try:
                document = json.loads(document)
            except ValueError:
                found.append(f"{where} is not valid JSON, so it cannot be checked (AWS would reject it too)")
                continue
        if not isinstance(document, Mapping):
            continue
        statements = document.get("Statement")
        for i, statement in enumerate(
            [statements] if isinstance(statements, Mapping) else _items(statements)
        ):
            if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
                continue
            action = statement.get("Action")
            actions = [action] if isinstance(action, str) else list(_items(action))
            if any(a in ("*", "*:*") for a in actions):
                sid = f" ({statement['Sid']})" if _is_set(statement.get("Sid")) else ""
                found.append(f"{where} statement {i}{sid} allows Action '*': name the actions it needs")
    return found


# --- backups and prod durability --------------------------------------------------------------------------


def _retention(inputs: Mapping[str, Any]) -> int | None:
    value = inputs.get("backupRetentionPeriod")
    return None if value is None else int(value)


def backup_retention_range(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if resource_type not in (RDS_INSTANCE, RDS_CLUSTER):
        return []
    if resource_type == RDS_INSTANCE and _is_replica(inputs):
        return []
    days = _retention(inputs)
    if days is None or RETENTION_MIN <= days <= RETENTION_MAX:
        return []
    return [
        f"backupRetentionPeriod is {days}: it must be {RETENTION_MIN}-{RETENTION_MAX} days "
        "(0 turns automated backups and point-in-time recovery off)"
    ]


def _prod_primary(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> bool:
    return prod and resource_type == RDS_INSTANCE and not _is_replica(inputs)


def prod_multi_az(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if not _prod_primary(resource_type, inputs, prod) or _is_true(inputs.get("multiAz")):
        return []
    return ["multiAz is not true: a prod primary needs a standby in a second AZ (multiAz: true)"]


def prod_deletion_protection(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if not _prod_primary(resource_type, inputs, prod) or _is_true(inputs.get("deletionProtection")):
        return []
    return ["deletionProtection is not true: a prod primary must not be deletable by one `pulumi destroy`"]


def prod_backup_retention(resource_type: str, inputs: Mapping[str, Any], prod: bool) -> list[str]:
    if not _prod_primary(resource_type, inputs, prod):
        return []
    days = _retention(inputs)
    if days is not None and days >= PROD_RETENTION_DAYS:
        return []
    return [f"backupRetentionPeriod is {days}: prod keeps at least {PROD_RETENTION_DAYS} days of backups"]


POLICIES: tuple[Policy, ...] = (
    Policy(
        "database-storage-encrypted",
        "RDS instances and clusters are encrypted at rest.",
        database_storage_encrypted,
    ),
    Policy(
        "snapshot-encrypted",
        "Snapshot copies, backup replication and backup vaults name a KMS key.",
        snapshot_encrypted,
    ),
    Policy("secret-encrypted", "Secrets Manager secrets use a customer-managed KMS key.", secret_encrypted),
    Policy("topic-encrypted", "SNS topics are encrypted with a KMS key.", topic_encrypted),
    Policy(
        "log-group-encrypted", "CloudWatch Logs groups are encrypted with a KMS key.", log_group_encrypted
    ),
    Policy("queue-encrypted", "SQS queues are encrypted with a KMS key.", queue_encrypted),
    Policy("no-public-instance", "No database or instance is publicly accessible.", no_public_instance),
    Policy(
        "no-open-database-ingress",
        "No ingress on 5432 or 6543 from a CIDR outside private address space (RFC 1918, RFC 6598, ULA).",
        no_open_database_ingress,
    ),
    Policy("no-iam-action-star", "No IAM statement allows Action '*'.", no_iam_action_star),
    Policy("backup-retention-range", "Backup retention is 1-35 days.", backup_retention_range),
    Policy("prod-multi-az", "A prod primary database is Multi-AZ.", prod_multi_az),
    Policy(
        "prod-deletion-protection",
        "A prod primary database has deletion protection.",
        prod_deletion_protection,
    ),
    Policy(
        "prod-backup-retention",
        "A prod primary database keeps backups for at least 30 days.",
        prod_backup_retention,
    ),
)


def violations(resource_type: str, inputs: Mapping[str, Any], *, prod: bool) -> list[str]:
    """Every policy's violations for one resource, each prefixed with the policy's name."""
    return [
        f"[{policy.name}] {message}"
        for policy in POLICIES
        for message in policy.check(resource_type, inputs, prod)
    ]


def stack_from_urn(urn: str) -> str:
    """The stack name in ``urn:pulumi:<stack>::<project>::<type>::<name>``."""
    prefix = "urn:pulumi:"
    if not urn.startswith(prefix) or "::" not in urn:
        raise ValueError(f"not a Pulumi URN: {urn!r}")
    return urn[len(prefix) :].split("::", 1)[0]
