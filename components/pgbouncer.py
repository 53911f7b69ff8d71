"""The PgBouncer tier: an Auto Scaling group of arm64 hosts behind an internal Network Load Balancer on 6543.

- Hosts: the stack's PgBouncer image (components/pgbouncer_image.py: EC2 Image Builder builds PgBouncer
  from its pinned source on Amazon Linux 2023 arm64 and tests it before the image is accepted), by id:
  `pgbouncer.amiId` when an operator pinned one, else the image this `up` built. The launch template
  changes only when that id (or the configuration) does, never because AL2023 published a release.
- Self-healing: the ASG uses the NLB's health (TCP on 6543) and replaces a host whose PgBouncer stops
  answering. A launch-template change rolls the hosts with an instance refresh that surges (a replacement
  runs before the host it replaces stops: max_healthy_percentage 200, max_size 2 x hosts, which the pool
  budget counts) and rolls back on failure; a launch lifecycle hook keeps each new host out of service
  until its bootstrap completes it (or abandons it, with the reason on the console).
- User data: `components/pgbouncer_userdata.py` around `dbctl.pgbouncer.render_ini`, the same renderer the
  local stack uses. The auth file is built on the host from the role secrets' `scram_verifier` keys.
- Instance role: SSM Session Manager (no SSH, no key pair, no public IP); GetSecretValue on exactly the
  pooled roles' secrets; kms:Decrypt on the secrets' key, only via Secrets Manager; GetObject on exactly
  the RDS CA bundle object; CompleteLifecycleAction on its own group. No CloudWatch agent: metrics come
  from the NLB and the pool metrics (PgBouncer's logs go to the journal, reachable through Session Manager).
- Security groups: the NLB has its own group, which admits 6543 from the app security groups and CIDRs in
  settings; the PgBouncer group admits 6543 only from the NLB's group (AWS honours that reference even
  with client IP preservation, and the NLB's health checks come from it too). Nothing admits 0.0.0.0/0.
  The PgBouncer group's egress (5432 to the database, HTTPS to the endpoints) is the network's.
- The RDS CA bundle is copied at deploy time (from the machine running `pulumi up`) into a private S3
  bucket, because the hosts cannot reach truststore.pki.rds.amazonaws.com without an internet route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import pgbouncer_userdata as ud
from components.alarm_rules import custom_namespace
from components.kms import use_via_secrets_manager
from components.pgbouncer_group import LAUNCH_HOOK, group_name, host_group
from components.pgbouncer_image import (
    EC2_TRUST_POLICY,
    ROOT_DEVICE,
    ROOT_VOLUME_GB,
    ROOT_VOLUME_TYPE,
    PgBouncerImage,
    PgBouncerImageArgs,
)
from components.pgbouncer_image_document import DRAIN_SECONDS
from components.pgbouncer_source import S3_PREFIX, LocalSource
from components.pgbouncer_tls import SECRET_CERT_FIELD, SECRET_KEY_FIELD, client_tls_material
from components.provider import default_tags
from components.sg_rules import allow_tcp
from dbctl.core.names import MONITOR_ROLE, PGBOUNCER_PORT, READ_POOL_DATABASE
from dbctl.pgbouncer.config import (
    POOLED_ROLES,
    ClientTls,
    PgBouncerConfig,
    ServerTls,
    parse_version,
    render_ini,
)
from dbctl.stackconfig.settings import StackSettings

# NLB's TCP idle timeout (default 350 s) would silently cut an app's idle pooled connection; PgBouncer
# itself closes idle clients never (client_idle_timeout = 0), so let the NLB wait an hour.
NLB_TCP_IDLE_TIMEOUT = 3600
# Seconds a host keeps draining connections after leaving the target group (the default 300 is slow to
# replace a broken host; transactions in transaction pooling are short). PgBouncer's own stop (SIGINT, at
# most TimeoutStopSec) waits as long: ud.DRAIN_SECONDS is both.
DEREGISTRATION_DELAY = DRAIN_SECONDS


def assets_bucket_prefix(stack: str) -> str:
    """Name prefix of the tier's private bucket: the S3 endpoint policy admits objects under it.

    At most 37 characters with a 19-character stack name (S3's 63 minus the provider's 26-char suffix).
    """
    return f"spike-land-{stack}-pgb-"


def ca_bundle_url(region: str) -> str:
    """The regional RDS CA bundle (the roots of every RDS CA that region uses)."""
    return f"https://truststore.pki.rds.amazonaws.com/{region}/{region}-bundle.pem"


def ini_config(settings: StackSettings, primary_host: str, read_hosts: Sequence[str]) -> PgBouncerConfig:
    """The renderer's settings for an AWS host: stack settings plus the host's fixed paths."""
    p = settings.pgbouncer
    client_tls = (
        ClientTls(sslmode="require", key_file=ud.CLIENT_TLS_KEY_FILE, cert_file=ud.CLIENT_TLS_CERT_FILE)
        if p.client_tls
        else ClientTls()
    )
    return PgBouncerConfig(
        version=parse_version(p.version),
        primary_host=primary_host,
        read_hosts=tuple(read_hosts),
        listen_addr="*",
        listen_port=PGBOUNCER_PORT,
        auth_file=ud.AUTH_FILE,
        # One process per vCPU (pgbouncer.processes), each with its own socket directory; one: TCP only.
        processes=p.processes,
        unix_socket_dir=ud.SOCKET_DIR if p.processes > 1 else "",
        max_client_conn=p.max_client_conn,
        default_pool_size=p.default_pool_size,
        min_pool_size=p.min_pool_size,
        reserve_pool_size=p.reserve_pool_size,
        reserve_pool_timeout=p.reserve_pool_timeout,
        server_lifetime=p.server_lifetime,
        server_idle_timeout=p.server_idle_timeout,
        server_tls=ServerTls(sslmode="verify-full", ca_file=ud.CA_FILE),
        client_tls=client_tls,
    )


def user_data(
    settings: StackSettings,
    primary_host: str,
    read_hosts: Sequence[str],
    role_secret_arns: Mapping[str, str],
    ca_bundle_s3_uri: str,
    client_tls_secret_arn: str | None = None,
) -> str:
    """The launch template's user data (base64 of gzip), from resolved values: pure."""
    cfg = ini_config(settings, primary_host, read_hosts)
    script = ud.render_user_data(
        ud.HostConfig(
            region=settings.region,
            pgbouncer_inis=tuple(render_ini(cfg, peer_id) for peer_id in cfg.peer_ids),
            pgbouncer_version=settings.pgbouncer.version,
            role_secret_arns=role_secret_arns,
            ca_bundle_s3_uri=ca_bundle_s3_uri,
            max_client_conn=settings.pgbouncer.max_client_conn,
            client_tls_secret_arn=client_tls_secret_arn if settings.pgbouncer.client_tls else None,
            metrics=ud.PoolMetrics(
                stack=settings.stack,
                namespace=custom_namespace(settings.stack),
                monitor_secret_arn=role_secret_arns[MONITOR_ROLE],
                port=PGBOUNCER_PORT,
            ),
            launch_hook=ud.LaunchHook(group_name=group_name(settings.stack), hook_name=LAUNCH_HOOK),
        )
    )
    return ud.encode_user_data(script)


@dataclass(frozen=True)
class PgBouncerTierArgs:
    settings: StackSettings
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]  # private subnets, one per AZ
    security_group_id: pulumi.Input[str]  # the PgBouncer hosts' group (network: egress, DB ingress)
    primary_address: pulumi.Input[str]
    replica_addresses: Sequence[pulumi.Input[str]]  # every replica (the read pool); none: the primary
    role_secret_arns: Mapping[str, pulumi.Input[str]]  # login role -> secret ARN (needs POOLED_ROLES)
    secrets_kms_key_arn: pulumi.Input[str] | None  # the secrets' customer managed key, if any
    # PgBouncer's pinned source on this machine, checked before anything was declared (__main__.py)
    pgbouncer_source: LocalSource
    # The network's endpoints and rules (Network.egress_ready): the image build and the hosts wait for them.
    egress_ready: Sequence[pulumi.Resource] = ()


class PgBouncerTier(pulumi.ComponentResource):
    """PgBouncer hosts (ASG) behind an internal NLB on 6543; `endpoint`, `port`, `read_pool_database`."""

    endpoint: pulumi.Output[str]
    port: int
    read_pool_database: str
    # CloudWatch dimensions (AWS/NetworkELB LoadBalancer, TargetGroup) for the alarms component.
    nlb_arn_suffix: pulumi.Output[str]
    target_group_arn_suffix: pulumi.Output[str]
    # The stack CA's certificate (PEM) that apps trust for the pooled URL; None without client TLS.
    ca_certificate_pem: pulumi.Output[str] | None

    def __init__(self, name: str, args: PgBouncerTierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("spike-land-db:index:PgBouncerTier", name, None, opts)
        s = args.settings
        missing = [role for role in POOLED_ROLES if role not in args.role_secret_arns]
        if missing:
            raise ValueError(f"PgBouncerTier needs the secret ARNs of {', '.join(missing)}")
        # The connection budget (dbctl.capacity.check_pool_budget) is checked with the settings, before any
        # resource: dbctl/stackconfig/settings.py, StackSettings.pool_targets.
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        prefix = f"spike-pgb-{s.stack}"[:24]

        # The RDS CA bundle, fetched by the deployer and served to the hosts through the S3 endpoint.
        bucket = aws.s3.Bucket(
            f"{name}-ca", bucket_prefix=assets_bucket_prefix(s.stack), force_destroy=True, opts=child
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-ca",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        ca_key = f"rds-ca/{s.region}-bundle.pem"
        ca_object = aws.s3.BucketObjectv2(
            f"{name}-ca-bundle",
            bucket=bucket.id,
            key=ca_key,
            source=pulumi.RemoteAsset(ca_bundle_url(s.region)),
            content_type="application/x-pem-file",
            opts=child,
        )
        ca_uri = pulumi.Output.concat("s3://", ca_object.bucket, "/", ca_key)
        ca_object_arn = pulumi.Output.concat(bucket.arn, "/", ca_key)
        # PgBouncer's pinned source, checked against its pins before anything was declared; S3 checks the
        # upload's SHA-256 too, and the host checks the pins again before it builds.
        source = args.pgbouncer_source
        source_arns = []
        for i, f in enumerate(source.pinned.files):
            obj = aws.s3.BucketObjectv2(
                f"{name}-source-{i}",
                bucket=bucket.id,
                key=S3_PREFIX + f.name,
                source=pulumi.FileAsset(source.asset_path(f)),
                checksum_algorithm="SHA256",
                content_type="application/octet-stream",
                opts=child,
            )
            source_arns.append(pulumi.Output.concat(bucket.arn, "/", obj.key))

        # PgBouncer's client TLS key and certificate reach the hosts as the verifiers do: a secret the
        # instance role reads (its value is written once the NLB, whose DNS name it certifies, exists).
        tls_secret: aws.secretsmanager.Secret | None = None
        if s.pgbouncer.client_tls:
            tls_secret = aws.secretsmanager.Secret(
                f"{name}-client-tls",
                name_prefix=f"spike-land-{s.stack}/pgbouncer-tls-",
                description=f"spike-land-{s.stack} PgBouncer client TLS key and certificate (stack CA)",
                kms_key_id=args.secrets_kms_key_arn,
                recovery_window_in_days=s.secret_recovery_window_days,
                opts=child,
            )

        # Instance role: Session Manager, the pooled roles' secrets, their key (via Secrets Manager only).
        role = aws.iam.Role(
            f"{name}-host",
            name_prefix=f"{prefix}-host-",
            assume_role_policy=EC2_TRUST_POLICY,
            opts=child,
        )
        partition = aws.get_partition_output(opts=invoke).partition
        account = aws.get_caller_identity_output(opts=invoke).account_id
        aws.iam.RolePolicyAttachment(
            f"{name}-ssm",
            role=role.name,
            policy_arn=partition.apply(lambda p: f"arn:{p}:iam::aws:policy/AmazonSSMManagedInstanceCore"),
            opts=child,
        )
        statements: list[dict[str, object]] = [
            {
                "Sid": "ReadPooledRoleSecrets",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [args.role_secret_arns[r] for r in POOLED_ROLES],
            },
            {
                # hosts/pool_metrics.py, every 60 s: only into this stack's own namespace.
                "Sid": "PutPoolMetrics",
                "Effect": "Allow",
                "Action": ["cloudwatch:PutMetricData"],
                "Resource": ["*"],
                "Condition": {"StringEquals": {"cloudwatch:namespace": custom_namespace(s.stack)}},
            },
            {
                "Sid": "ReadRdsCaBundle",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [ca_object_arn],
            },
            {
                # The bootstrap completes (or abandons) its own launch lifecycle action.
                "Sid": "CompleteOwnLaunchHook",
                "Effect": "Allow",
                "Action": ["autoscaling:CompleteLifecycleAction"],
                "Resource": [
                    pulumi.Output.format(
                        "arn:{0}:autoscaling:{1}:{2}:autoScalingGroup:*:autoScalingGroupName/{3}",
                        partition,
                        s.region,
                        account,
                        group_name(s.stack),
                    )
                ],
            },
        ]
        if tls_secret is not None:
            statements.append(
                {
                    "Sid": "ReadClientTlsKey",
                    "Effect": "Allow",
                    "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": [tls_secret.arn],
                }
            )
        if args.secrets_kms_key_arn is not None:
            statements.append(
                use_via_secrets_manager(
                    [args.secrets_kms_key_arn],
                    s.region,
                    ["kms:Decrypt"],
                    sid="DecryptSecretsViaSecretsManager",
                )
            )
        aws.iam.RolePolicy(
            f"{name}-host",
            role=role.id,
            policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements}),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(
            f"{name}-host", name_prefix=f"{prefix}-host-", role=role.name, opts=child
        )

        # Security groups: clients -> NLB group -> PgBouncer group -> database group.
        nlb_sg = aws.ec2.SecurityGroup(
            f"{name}-nlb",
            name_prefix=f"{prefix}-nlb-",
            description="PgBouncer NLB: 6543 from the app security groups and CIDRs in settings",
            vpc_id=args.vpc_id,
            opts=child,
        )
        for i, sg_id in enumerate(s.allowed_security_group_ids):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-nlb-from-sg-{i}",
                security_group_id=nlb_sg.id,
                referenced_security_group_id=sg_id,
                ip_protocol="tcp",
                from_port=PGBOUNCER_PORT,
                to_port=PGBOUNCER_PORT,
                description=f"PgBouncer clients in {sg_id}",
                opts=child,
            )
        for i, cidr in enumerate(s.allowed_cidrs):
            v6 = ":" in cidr
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-nlb-from-cidr-{i}",
                security_group_id=nlb_sg.id,
                cidr_ipv4=None if v6 else cidr,
                cidr_ipv6=cidr if v6 else None,
                ip_protocol="tcp",
                from_port=PGBOUNCER_PORT,
                to_port=PGBOUNCER_PORT,
                description=f"PgBouncer clients in {cidr}",
                opts=child,
            )
        allow_tcp(
            port=PGBOUNCER_PORT,
            source=nlb_sg.id,
            target=args.security_group_id,
            egress=(f"{name}-nlb-to-hosts", "to the PgBouncer hosts (traffic and health checks)"),
            ingress=(f"{name}-hosts-from-nlb", "from the PgBouncer NLB only (clients and health checks)"),
            opts=child,
        )
        # The PgBouncer group's egress (5432 to the database, 443 to the VPC endpoints) is the network's.

        # Launch template: the image, the role, the group, IMDSv2 only, encrypted root, the user data.
        # The image: built and tested by the stack's pipeline, or pinned by hand (pgbouncer.amiId).
        if args.secrets_kms_key_arn is None:
            raise ValueError(
                "PgBouncerTier needs the stack key (secrets_kms_key_arn): the image is encrypted with it"
            )
        image = PgBouncerImage(
            f"{name}-image",
            PgBouncerImageArgs(
                settings=s,
                source=source.pinned,
                subnet_id=pulumi.Output.from_input(args.subnet_ids).apply(lambda ids: ids[0]),
                security_group_id=args.security_group_id,
                kms_key_arn=args.secrets_kms_key_arn,
                bucket_id=bucket.id,
                bucket_arn=bucket.arn,
                source_object_arns=source_arns,
                egress_ready=args.egress_ready,
            ),
            opts=child,
        )
        ami = image.image_id
        arns = pulumi.Output.all(*[args.role_secret_arns[r] for r in POOLED_ROLES])
        read_hosts = pulumi.Output.all(*args.replica_addresses)
        tls_arn: pulumi.Input[str | None] = tls_secret.arn if tls_secret is not None else None
        encoded = pulumi.Output.all(args.primary_address, read_hosts, arns, ca_uri, tls_arn).apply(
            lambda v: user_data(s, v[0], v[1], dict(zip(POOLED_ROLES, v[2], strict=True)), v[3], v[4])
        )
        tags = {**default_tags(s), "Name": f"{prefix}-host"}
        template = aws.ec2.LaunchTemplate(
            f"{name}-host",
            name_prefix=f"{prefix}-host-",
            description="PgBouncer host (the stack's PgBouncer image, Amazon Linux 2023 arm64)",
            image_id=ami,
            instance_type=s.pgbouncer.instance_type,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
            vpc_security_group_ids=[args.security_group_id],
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=ROOT_DEVICE,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=ROOT_VOLUME_GB,
                        volume_type=ROOT_VOLUME_TYPE,
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            monitoring=aws.ec2.LaunchTemplateMonitoringArgs(enabled=True),
            user_data=encoded,
            update_default_version=True,
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=tags)
                for kind in ("instance", "volume", "network-interface")
            ],
            opts=child,
        )

        # Internal NLB on 6543 with TCP health checks.
        target_group = aws.lb.TargetGroup(
            f"{name}-hosts",
            name_prefix="pgb-",
            port=PGBOUNCER_PORT,
            protocol="TCP",
            target_type="instance",
            vpc_id=args.vpc_id,
            deregistration_delay=DEREGISTRATION_DELAY,
            connection_termination=True,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                protocol="TCP",
                port="traffic-port",
                interval=10,
                # Explicit and below the interval: the TCP default (10 s) equals it, which some checks refuse.
                timeout=5,
                healthy_threshold=2,
                unhealthy_threshold=2,
            ),
            opts=child,
        )
        nlb = aws.lb.LoadBalancer(
            f"{name}-nlb",
            name_prefix="pgb-",
            internal=True,
            load_balancer_type="network",
            subnets=args.subnet_ids,
            security_groups=[nlb_sg.id],
            # One host in dev: let every AZ's NLB node reach it.
            enable_cross_zone_load_balancing=True,
            enable_deletion_protection=s.deletion_protection,
            opts=child,
        )
        self.ca_certificate_pem = None
        # The hosts' helper reads the TLS secret's current version at boot: the group (and so every host it
        # launches, on a first `up` or after the NLB, whose name the certificate holds, is replaced) waits
        # for that version to exist.
        host_dependencies: list[pulumi.Resource] = list(args.egress_ready)
        if tls_secret is not None:
            material = client_tls_material(name, s.stack, nlb.dns_name, self)
            tls_json: pulumi.Output[str] = pulumi.Output.secret(
                pulumi.Output.json_dumps(
                    {
                        SECRET_KEY_FIELD: material.server_private_key_pem,
                        SECRET_CERT_FIELD: material.server_certificate_pem,
                    }
                )
            )
            tls_version = aws.secretsmanager.SecretVersion(
                f"{name}-client-tls", secret_id=tls_secret.id, secret_string=tls_json, opts=child
            )
            host_dependencies.append(tls_version)
            self.ca_certificate_pem = material.ca_certificate_pem

        aws.lb.Listener(
            f"{name}-6543",
            load_balancer_arn=nlb.arn,
            port=PGBOUNCER_PORT,
            protocol="TCP",
            tcp_idle_timeout_seconds=NLB_TCP_IDLE_TIMEOUT,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn)
            ],
            opts=child,
        )

        # The hosts: a fixed count, surging in a refresh, behind the NLB (components/pgbouncer_group.py).
        host_group(
            f"{name}-hosts",
            s,
            args.subnet_ids,
            template,
            target_group.arn,
            tags,
            pulumi.ResourceOptions(parent=self, depends_on=host_dependencies),
        )

        self.image_id = ami
        self.image_pipeline_arn = image.pipeline_arn
        self.endpoint = nlb.dns_name
        self.nlb_security_group_id = nlb_sg.id  # clients' way in: the rotation function's testSecret too
        self.nlb_arn_suffix = nlb.arn_suffix
        self.target_group_arn_suffix = target_group.arn_suffix
        self.port = PGBOUNCER_PORT
        self.read_pool_database = READ_POOL_DATABASE
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "port": self.port,
                "read_pool_database": self.read_pool_database,
                "ca_certificate_pem": self.ca_certificate_pem,
            }
        )
