"""Network: the VPC and private subnets (created or adopted), the DB subnet group and the security groups.

Created VPCs have no internet gateway and no NAT: the database needs none, and the PgBouncer hosts reach
AWS through VPC endpoints instead (interface endpoints for SSM, Secrets Manager, KMS, CloudWatch, Auto
Scaling and Image Builder; a free S3 gateway endpoint, limited to the Amazon Linux 2023 core repositories, for
the tools the PgBouncer image's build installs, to AWSTOE's and Image Builder's buckets for that build, and to
the PgBouncer component's own bucket, for its pinned source, the host scripts, the RDS CA bundle and the
image build's logs).
That keeps the whole tier without a route to the internet. In an adopted VPC the network is the owner's:
we assume it gives the PgBouncer subnets egress (NAT or endpoints) and create no endpoints.

Security groups:
- database: ingress 5432 only from the PgBouncer SG, the configured app SGs and CIDRs; no egress rules
  (RDS initiates nothing; replication and backups do not traverse customer SGs).
- pgbouncer: created here, its egress is 5432 to the database SG and HTTPS to the endpoints (or, in an
  adopted VPC, HTTPS anywhere, for SSM/Secrets Manager/packages through the owner's NAT). Its ingress (6543
  from apps) belongs to the PgBouncer component.
- endpoints: HTTPS from the PgBouncer SG only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.pgbouncer import assets_bucket_prefix
from components.pgbouncer_image import LOG_PREFIX, awstoe_buckets
from components.sg_rules import allow_tcp, https_out
from components.subnets import private_subnet_cidrs
from dbctl.core.names import POSTGRES_PORT
from dbctl.stackconfig.settings import StackSettings

HTTPS = 443
# Interface endpoints the PgBouncer hosts use: SSM agent (session manager, run command), Secrets Manager
# (role secrets for the auth file), KMS (decrypting them), CloudWatch Logs and metrics (agent), Auto Scaling
# (the bootstrap completes its launch lifecycle hook); and the image's build and test instances: Image
# Builder (AWSTOE fetches the component; Image Builder user guide, "interface VPC endpoints"), with SSM
# (Image Builder runs the component through Run Command).
INTERFACE_ENDPOINT_SERVICES = (
    "ssm",
    "ssmmessages",
    "ec2messages",
    "secretsmanager",
    "kms",
    "logs",
    "monitoring",
    "autoscaling",
    "imagebuilder",
)
# Amazon Linux 2023 serves its package repositories from this S3 bucket in each region.
AL2023_REPO_BUCKET = "al2023-repos-{region}-de612dc2"


@dataclass(frozen=True)
class NetworkArgs:
    settings: StackSettings
    provider: aws.Provider


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    subnet_ids: pulumi.Output[list[str]]
    db_subnet_group_name: pulumi.Output[str]
    db_security_group_id: pulumi.Output[str]
    pgbouncer_security_group_id: pulumi.Output[str]
    endpoints_security_group_id: pulumi.Output[str] | None
    # What a PgBouncer host or image build instance needs before it boots to reach AWS: the endpoints and
    # the security group rules to them (or, in an existing VPC, the HTTPS egress rule). Interface endpoints
    # take minutes to become available, and nothing else makes an instance wait for them.
    egress_ready: list[pulumi.Resource]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:Network", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        prefix = f"spike-land-{s.stack}"

        route_table_id: pulumi.Output[str] | None = None
        if s.network.mode == "create":
            vpc = aws.ec2.Vpc(
                f"{name}-vpc",
                cidr_block=s.network.vpc_cidr,
                # Interface endpoints' private DNS names need both.
                enable_dns_support=True,
                enable_dns_hostnames=True,
                tags={"Name": f"{prefix}-db"},
                opts=child,
            )
            zones = aws.get_availability_zones(
                state="available",
                # Regular AZs only: Local and Wavelength Zones lack RDS Multi-AZ and most endpoints.
                filters=[
                    aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])
                ],
                opts=pulumi.InvokeOptions(provider=args.provider, parent=self),
            ).names
            if len(zones) < s.network.az_count:
                raise ValueError(
                    f"spike-land-db:network.azCount = {s.network.az_count} but {s.region} has only "
                    f"{len(zones)} available AZs; lower network.azCount"
                )
            # Take over the VPC's default security group and leave it with no rules: anything launched
            # without a group of its own then gets no traffic at all (AWS's default group admits all
            # traffic from itself and all egress). The provider removes every rule when it adopts the group.
            aws.ec2.DefaultSecurityGroup(
                f"{name}-default-sg",
                vpc_id=vpc.id,
                ingress=[],
                egress=[],
                tags={"Name": f"{prefix}-default-unused"},
                opts=child,
            )
            route_table = aws.ec2.RouteTable(
                f"{name}-private", vpc_id=vpc.id, tags={"Name": f"{prefix}-private"}, opts=child
            )
            subnets = []
            for i, (az, cidr) in enumerate(
                zip(zones, private_subnet_cidrs(s.network.vpc_cidr, s.network.az_count), strict=False)
            ):
                subnet = aws.ec2.Subnet(
                    f"{name}-private-{i}",
                    vpc_id=vpc.id,
                    cidr_block=cidr,
                    availability_zone=az,
                    map_public_ip_on_launch=False,
                    tags={"Name": f"{prefix}-private-{az}", "tier": "private"},
                    opts=child,
                )
                aws.ec2.RouteTableAssociation(
                    f"{name}-private-{i}", subnet_id=subnet.id, route_table_id=route_table.id, opts=child
                )
                subnets.append(subnet)
            route_table_id = route_table.id
            vpc_id: pulumi.Output[str] = vpc.id
            subnet_ids: pulumi.Output[list[str]] = pulumi.Output.all(*[sn.id for sn in subnets])
            zones_of_subnets = pulumi.Output.from_input(list(zones[: s.network.az_count]))
        else:
            assert s.network.vpc_id is not None  # settings require it in mode 'existing'
            vpc_id = pulumi.Output.from_input(s.network.vpc_id)
            subnet_ids = pulumi.Output.from_input(list(s.network.subnet_ids))
            invoke = pulumi.InvokeOptions(provider=args.provider, parent=self)
            zones_of_subnets = pulumi.Output.all(
                *[
                    aws.ec2.get_subnet_output(id=i, opts=invoke).availability_zone
                    for i in s.network.subnet_ids
                ]
            )

        db_sg = aws.ec2.SecurityGroup(
            f"{name}-db",
            vpc_id=vpc_id,
            description=f"{prefix} PostgreSQL: 5432 from PgBouncer and the configured app sources only",
            tags={"Name": f"{prefix}-db"},
            opts=child,
        )
        pgb_sg = aws.ec2.SecurityGroup(
            f"{name}-pgbouncer",
            vpc_id=vpc_id,
            description=f"{prefix} PgBouncer hosts",
            tags={"Name": f"{prefix}-pgbouncer"},
            opts=child,
        )

        def ingress(
            key: str,
            description: str,
            referenced_security_group_id: pulumi.Input[str] | None = None,
            cidr_ipv4: str | None = None,
            cidr_ipv6: str | None = None,
        ) -> None:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-db-from-{key}",
                security_group_id=db_sg.id,
                ip_protocol="tcp",
                from_port=POSTGRES_PORT,
                to_port=POSTGRES_PORT,
                referenced_security_group_id=referenced_security_group_id,
                cidr_ipv4=cidr_ipv4,
                cidr_ipv6=cidr_ipv6,
                description=description,
                opts=child,
            )

        ingress("pgbouncer", "PgBouncer tier", referenced_security_group_id=pgb_sg.id)
        for sg_id in s.allowed_security_group_ids:
            ingress(sg_id, f"app security group {sg_id}", referenced_security_group_id=sg_id)
        for cidr in s.allowed_cidrs:
            net = ipaddress.ip_network(cidr)
            key = cidr.replace("/", "-").replace(":", "_")
            if net.version == 4:
                ingress(key, f"app network {cidr}", cidr_ipv4=cidr)
            else:
                ingress(key, f"app network {cidr}", cidr_ipv6=cidr)

        aws.vpc.SecurityGroupEgressRule(
            f"{name}-pgbouncer-to-db",
            security_group_id=pgb_sg.id,
            ip_protocol="tcp",
            from_port=POSTGRES_PORT,
            to_port=POSTGRES_PORT,
            referenced_security_group_id=db_sg.id,
            description="PostgreSQL on the primary and replicas",
            opts=child,
        )

        self.endpoints_security_group_id = None
        self.egress_ready = []
        if route_table_id is not None and s.network.vpc_endpoints:
            endpoints_sg = self._endpoints(name, s, vpc_id, subnet_ids, route_table_id, pgb_sg, child)
            self.endpoints_security_group_id = endpoints_sg.id
        elif s.network.mode == "existing":
            self.egress_ready += https_out(
                f"{name}-pgbouncer-https",
                source=pgb_sg.id,
                description="AWS APIs (SSM, Secrets Manager, KMS, CloudWatch) and packages via the VPC NAT",
                opts=child,
            )

        subnet_group = aws.rds.SubnetGroup(
            f"{name}-db",
            name_prefix=f"{prefix}-",
            subnet_ids=subnet_ids,
            description=f"{prefix} private subnets for RDS",
            opts=child,
        )

        self.vpc_id = vpc_id
        self.subnet_ids = subnet_ids
        self.availability_zones = zones_of_subnets  # the private subnets' AZs, in subnet order
        self.db_subnet_group_name = subnet_group.name
        self.db_security_group_id = db_sg.id
        self.pgbouncer_security_group_id = pgb_sg.id
        self.register_outputs(
            {
                "vpc_id": vpc_id,
                "subnet_ids": subnet_ids,
                "db_security_group_id": db_sg.id,
                "pgbouncer_security_group_id": pgb_sg.id,
            }
        )

    def _endpoints(
        self,
        name: str,
        s: StackSettings,
        vpc_id: pulumi.Output[str],
        subnet_ids: pulumi.Output[list[str]],
        route_table_id: pulumi.Output[str],
        pgb_sg: aws.ec2.SecurityGroup,
        child: pulumi.ResourceOptions,
    ) -> aws.ec2.SecurityGroup:
        prefix = f"spike-land-{s.stack}"
        endpoints_sg = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            vpc_id=vpc_id,
            description=f"{prefix} VPC interface endpoints: HTTPS from PgBouncer",
            tags={"Name": f"{prefix}-endpoints"},
            opts=child,
        )
        self.egress_ready += allow_tcp(
            port=HTTPS,
            source=pgb_sg.id,
            target=endpoints_sg.id,
            egress=(f"{name}-pgbouncer-to-endpoints", "AWS APIs through the interface endpoints"),
            ingress=(f"{name}-endpoints-from-pgbouncer", "PgBouncer hosts"),
            opts=child,
        )
        # Each interface endpoint is billed per AZ: dev keeps one AZ (reachable from the others), prod all.
        endpoint_subnets = (
            subnet_ids if s.network.endpoints_in_every_az else subnet_ids.apply(lambda ids: ids[:1])
        )
        for service in INTERFACE_ENDPOINT_SERVICES:
            endpoint = aws.ec2.VpcEndpoint(
                f"{name}-{service}",
                vpc_id=vpc_id,
                service_name=f"com.amazonaws.{s.region}.{service}",
                vpc_endpoint_type="Interface",
                subnet_ids=endpoint_subnets,
                security_group_ids=[endpoints_sg.id],
                private_dns_enabled=True,
                tags={"Name": f"{prefix}-{service}"},
                opts=child,
            )
            self.egress_ready.append(endpoint)
        bucket = AL2023_REPO_BUCKET.format(region=s.region)
        s3 = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc_id,
            service_name=f"com.amazonaws.{s.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[route_table_id],
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "Al2023Packages",
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": ["s3:GetObject"],
                            "Resource": [f"arn:aws:s3:::{bucket}/*"],
                        },
                        {
                            # The PgBouncer component's own bucket: the RDS CA bundle and PgBouncer's
                            # pinned source (the instance role narrows it to exactly those objects).
                            "Sid": "PgBouncerAssets",
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": ["s3:GetObject"],
                            "Resource": [f"arn:aws:s3:::{assets_bucket_prefix(s.stack)}*/*"],
                        },
                        {
                            # The image's build and test instances: AWSTOE and Image Builder's managed
                            # components (Image Builder user guide, "Custom policies for S3 bucket access").
                            "Sid": "ImageBuilderAwstoe",
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": ["s3:GetObject"],
                            "Resource": list(awstoe_buckets(s.region)),
                        },
                        {
                            # The build instance's logs, under their prefix of the tier's bucket.
                            "Sid": "ImageBuilderLogs",
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": ["s3:PutObject"],
                            "Resource": [f"arn:aws:s3:::{assets_bucket_prefix(s.stack)}*/{LOG_PREFIX}*"],
                        },
                    ],
                }
            ),
            tags={"Name": f"{prefix}-s3"},
            opts=child,
        )
        to_s3 = aws.vpc.SecurityGroupEgressRule(
            f"{name}-pgbouncer-to-s3",
            security_group_id=pgb_sg.id,
            ip_protocol="tcp",
            from_port=HTTPS,
            to_port=HTTPS,
            prefix_list_id=s3.prefix_list_id,
            description="Amazon Linux package repositories through the S3 gateway endpoint",
            opts=child,
        )
        self.egress_ready += [s3, to_s3]
        return endpoints_sg
