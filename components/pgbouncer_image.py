"""The PgBouncer hosts' image, built and tested once by EC2 Image Builder inside `pulumi up`.

- Component: components/pgbouncer_image_document.py's document (build + test phases), encrypted with the
  stack key; its name carries the document's hash, so a changed build is a new component, recipe and image.
- Recipe: the component on Amazon Linux 2023 arm64 (`amazon-linux-2023-arm64/x.x.x`, the parent's current
  version when the image is built), root volume gp3, encrypted with the stack key.
- Infrastructure: the PgBouncer host type in the stack's first private subnet, with the hosts' security
  group (HTTPS only to the VPC endpoints and the S3 gateway endpoint: no internet route), IMDSv2 only,
  an instance role of its own, build logs into the tier's bucket; a failed build's instance is terminated.
- Distribution: the AMI in the stack's region, encrypted with the stack key.
- Image: built on the first `up` and again only when the recipe changes (a new component, parent, volume):
  never because Amazon Linux published a release. Its test phase runs on an instance launched from the new
  AMI; a failed test fails the image and so the `up`, before any host exists on it.
- Pipeline: the same recipe for a rebuild by hand (`aws imagebuilder start-image-pipeline-execution`), whose
  image an operator promotes with `pgbouncer.amiId` (docs/pgbouncer.md).

The build instance's role reads exactly the source and host-script objects and the component, decrypts
with the stack key only through Image Builder, and writes only its log prefix; it also has
AmazonSSMManagedInstanceCore, which Image Builder needs to run the component through Systems Manager.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import pgbouncer_image_document as doc
from components.pgbouncer_source import S3_PREFIX, PinnedSource
from components.provider import default_tags
from dbctl.stackconfig.settings import StackSettings

PARENT_IMAGE = "amazon-linux-2023-arm64"
# Image Builder's semantic version of our recipe and component; a change is a new name (the hash), not a bump.
VERSION = "1.0.0"
# The build instance's log objects in the tier's bucket.
LOG_PREFIX = "image-builder-logs/"
# Image Builder runs the test phase within this (its minimum; ours takes minutes).
TEST_TIMEOUT_MINUTES = 60
ROOT_VOLUME_GB = 16  # the AMI's root volume; the launch template's is the same size (not smaller)
ROOT_DEVICE = "/dev/xvda"
ROOT_VOLUME_TYPE = "gp3"
# What the EC2 Auto Scaling service-linked role needs to launch from an AMI encrypted with our key (AWS
# Auto Scaling user guide, "Required AWS KMS key policy for use with encrypted volumes").
AUTOSCALING_KEY_OPERATIONS = (
    "Encrypt",
    "Decrypt",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyWithoutPlaintext",
    "DescribeKey",
    "CreateGrant",
)


# The trust policy of an EC2 instance's role: the PgBouncer hosts' and the image build instance's.
EC2_TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


def parent_image_arn(partition: str, region: str) -> str:
    """Amazon's AL2023 arm64 image in Image Builder; x.x.x: its current version at build time."""
    return f"arn:{partition}:imagebuilder:{region}:aws:image/{PARENT_IMAGE}/x.x.x"


def awstoe_buckets(region: str) -> tuple[str, str]:
    """The objects a build instance downloads from AWS (AWSTOE and Image Builder's managed resources): the
    Image Builder user guide, "Custom policies for S3 bucket access" (VPC endpoints page)."""
    return (
        f"arn:aws:s3:::ec2imagebuilder-toe-{region}-prod/*",
        f"arn:aws:s3:::ec2imagebuilder-managed-resources-{region}-prod/components/*",
    )


def build_name(stack: str, data: str) -> str:
    """spike-pgb-<stack>-<hash of the document>: a changed build is a new component and recipe."""
    return f"spike-pgb-{stack}-{hashlib.sha256(data.encode()).hexdigest()[:12]}"


def recipe_name(stack: str, data: str) -> str:
    """The recipe's name: the document's hash and the recipe's own fixed inputs (parent, root volume).

    Image Builder never updates a recipe (every argument replaces it) and its name/version must be new:
    Pulumi creates the replacement before deleting the old one, which a pipeline still uses. So a change
    to any of these, and not only to the document, must change the name."""
    fixed = json.dumps([PARENT_IMAGE, ROOT_DEVICE, ROOT_VOLUME_GB, ROOT_VOLUME_TYPE])
    return build_name(stack, f"{data}\n{fixed}")


@dataclass(frozen=True)
class PgBouncerImageArgs:
    settings: StackSettings
    source: PinnedSource
    subnet_id: pulumi.Input[str]  # a private subnet of the stack
    security_group_id: pulumi.Input[str]  # the PgBouncer hosts' group: HTTPS to the endpoints only
    kms_key_arn: pulumi.Input[str]  # the stack key
    bucket_id: pulumi.Input[str]  # the tier's private bucket: the source, the host scripts, the logs
    bucket_arn: pulumi.Input[str]
    source_object_arns: Sequence[pulumi.Input[str]]  # the pinned source's objects
    # What the build instance needs to reach AWS (the network's endpoints and rules: Network.egress_ready).
    egress_ready: Sequence[pulumi.Resource] = ()


class PgBouncerImage(pulumi.ComponentResource):
    """The image pipeline; `image_id` is the hosts' AMI: `pgbouncer.amiId` if pinned, else the one this `up`
    built and tested."""

    image_id: pulumi.Output[str]
    pipeline_arn: pulumi.Output[str]

    def __init__(self, name: str, args: PgBouncerImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("spike-land-db:index:PgBouncerImage", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        account = aws.get_caller_identity_output(opts=invoke).account_id
        data = doc.component_document(args.source)
        base = build_name(s.stack, data)
        tags = {**default_tags(s), "Name": f"spike-pgb-{s.stack}-image"}

        # The host scripts beside the source (the document pins their sha256; S3 checks the upload's too).
        script_arns = []
        for script in doc.HOST_SCRIPTS:
            obj = aws.s3.BucketObjectv2(
                f"{name}-{script.removesuffix('.py').replace('_', '-')}",
                bucket=args.bucket_id,
                key=S3_PREFIX + script,
                source=pulumi.FileAsset(str(doc.HOSTS_DIR / script)),
                checksum_algorithm="SHA256",
                content_type="text/x-python",
                opts=child,
            )
            script_arns.append(pulumi.Output.concat(args.bucket_arn, "/", obj.key))

        component = aws.imagebuilder.Component(
            f"{name}-component",
            name=base,
            version=VERSION,
            platform="Linux",
            supported_os_versions=["Amazon Linux 2023"],
            description=f"PgBouncer {args.source.version} for spike-land-{s.stack}: build and test",
            data=data,
            kms_key_id=args.kms_key_arn,
            tags=tags,
            opts=child,
        )

        role = aws.iam.Role(
            f"{name}-build",
            name_prefix=f"spike-pgb-{s.stack}-img-"[:38],
            assume_role_policy=EC2_TRUST_POLICY,
            tags=tags,
            opts=child,
        )
        ssm = aws.iam.RolePolicyAttachment(
            f"{name}-build-ssm",
            role=role.name,
            policy_arn=partition.apply(lambda p: f"arn:{p}:iam::aws:policy/AmazonSSMManagedInstanceCore"),
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-build",
            role=role.id,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": build_instance_statements(
                        partition=partition,
                        account=account,
                        region=s.region,
                        component_name=base,
                        kms_key_arn=args.kms_key_arn,
                        object_arns=[*args.source_object_arns, *script_arns],
                        bucket_arn=args.bucket_arn,
                    ),
                }
            ),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(
            f"{name}-build", name_prefix=f"spike-pgb-{s.stack}-img-"[:38], role=role.name, opts=child
        )

        recipe = aws.imagebuilder.ImageRecipe(
            f"{name}-recipe",
            name=recipe_name(s.stack, data),
            version=VERSION,
            description=f"PgBouncer {args.source.version} hosts of spike-land-{s.stack}",
            parent_image=partition.apply(lambda p: parent_image_arn(p, s.region)),
            components=[
                aws.imagebuilder.ImageRecipeComponentArgs(
                    component_arn=component.arn,
                    parameters=[
                        aws.imagebuilder.ImageRecipeComponentParameterArgs(
                            name=doc.PARAM_SOURCE_URI,
                            value=pulumi.Output.concat("s3://", args.bucket_id, "/", S3_PREFIX),
                        ),
                        aws.imagebuilder.ImageRecipeComponentParameterArgs(
                            name=doc.PARAM_REGION, value=s.region
                        ),
                    ],
                )
            ],
            block_device_mappings=[
                aws.imagebuilder.ImageRecipeBlockDeviceMappingArgs(
                    device_name=ROOT_DEVICE,
                    ebs=aws.imagebuilder.ImageRecipeBlockDeviceMappingEbsArgs(
                        volume_size=ROOT_VOLUME_GB,
                        volume_type=ROOT_VOLUME_TYPE,
                        encrypted="true",
                        kms_key_id=args.kms_key_arn,
                        delete_on_termination="true",
                    ),
                )
            ],
            tags=tags,
            opts=child,
        )
        infrastructure = aws.imagebuilder.InfrastructureConfiguration(
            f"{name}-infrastructure",
            name=f"spike-pgb-{s.stack}",
            description=f"spike-land-{s.stack}: build PgBouncer images in a private subnet, no internet",
            instance_profile_name=profile.name,
            instance_types=[s.pgbouncer.instance_type],
            subnet_id=args.subnet_id,
            security_group_ids=[args.security_group_id],
            terminate_instance_on_failure=True,
            instance_metadata_options=aws.imagebuilder.InfrastructureConfigurationInstanceMetadataOptionsArgs(
                http_tokens="required", http_put_response_hop_limit=1
            ),
            logging=aws.imagebuilder.InfrastructureConfigurationLoggingArgs(
                s3_logs=aws.imagebuilder.InfrastructureConfigurationLoggingS3LogsArgs(
                    s3_bucket_name=args.bucket_id, s3_key_prefix=LOG_PREFIX.rstrip("/")
                )
            ),
            resource_tags=tags,
            tags=tags,
            opts=child,
        )
        distribution = aws.imagebuilder.DistributionConfiguration(
            f"{name}-distribution",
            name=f"spike-pgb-{s.stack}",
            description=f"spike-land-{s.stack} PgBouncer AMI, encrypted with the stack key",
            distributions=[
                aws.imagebuilder.DistributionConfigurationDistributionArgs(
                    region=s.region,
                    ami_distribution_configuration=(
                        aws.imagebuilder.DistributionConfigurationDistributionAmiDistributionConfigurationArgs(
                            name=f"spike-pgb-{s.stack}-{{{{ imagebuilder:buildDate }}}}",
                            description=f"PgBouncer {args.source.version} (spike-land-{s.stack})",
                            kms_key_id=args.kms_key_arn,
                            ami_tags=tags,
                        )
                    ),
                )
            ],
            tags=tags,
            opts=child,
        )
        tests = aws.imagebuilder.ImageImageTestsConfigurationArgs(
            image_tests_enabled=True, timeout_minutes=TEST_TIMEOUT_MINUTES
        )
        self.pipeline_arn = aws.imagebuilder.ImagePipeline(
            f"{name}-pipeline",
            name=f"spike-pgb-{s.stack}",
            description="Rebuild the PgBouncer image by hand; promote its AMI with pgbouncer.amiId",
            image_recipe_arn=recipe.arn,
            infrastructure_configuration_arn=infrastructure.arn,
            distribution_configuration_arn=distribution.arn,
            image_tests_configuration=aws.imagebuilder.ImagePipelineImageTestsConfigurationArgs(
                image_tests_enabled=True, timeout_minutes=TEST_TIMEOUT_MINUTES
            ),
            enhanced_image_metadata_enabled=False,
            status="ENABLED",
            tags=tags,
            opts=child,
        ).arn

        # The hosts launch from an AMI encrypted with the stack key: the Auto Scaling service-linked role
        # gets a grant on it (its own policy covers AWS managed keys only).
        grant = aws.kms.Grant(
            f"{name}-autoscaling",
            name=f"spike-pgb-{s.stack}-autoscaling",
            key_id=args.kms_key_arn,
            grantee_principal=pulumi.Output.format(
                "arn:{0}:iam::{1}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
                partition,
                account,
            ),
            operations=list(AUTOSCALING_KEY_OPERATIONS),
            opts=child,
        )

        if s.pgbouncer.ami_id is not None:
            ami: pulumi.Output[str] = pulumi.Output.from_input(s.pgbouncer.ami_id)
        else:
            # The build starts as soon as this resource is created: its instance must find its role's
            # policies (Session Manager, the source objects, which the policy names and so waits for), the
            # script objects and the VPC endpoints in place, which nothing else in its inputs waits for.
            image = aws.imagebuilder.Image(
                f"{name}-image",
                image_recipe_arn=recipe.arn,
                infrastructure_configuration_arn=infrastructure.arn,
                distribution_configuration_arn=distribution.arn,
                image_tests_configuration=tests,
                enhanced_image_metadata_enabled=False,
                tags=tags,
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(depends_on=[ssm, policy, *args.egress_ready])
                ),
            )
            ami = image.output_resources.apply(_ami_of)
        # The id carries the grant as a dependency: no launch template (so no host) before the group's role
        # can use the key (a pinned AMI has no build to wait for first).
        self.image_id = pulumi.Output.all(ami, grant.id).apply(lambda v: str(v[0]))
        self.register_outputs({"image_id": self.image_id, "pipeline_arn": self.pipeline_arn})


def _ami_of(resources: Sequence[aws.imagebuilder.outputs.ImageOutputResource]) -> str:
    amis = [ami.image for r in resources for ami in (r.amis or []) if ami.image]
    if len(amis) != 1:
        raise ValueError(f"the PgBouncer image distributed {len(amis)} AMIs, expected 1 (one region)")
    return amis[0]


def build_instance_statements(
    *,
    partition: pulumi.Input[str],
    account: pulumi.Input[str],
    region: str,
    component_name: str,
    kms_key_arn: pulumi.Input[str],
    object_arns: Sequence[pulumi.Input[str]],
    bucket_arn: pulumi.Input[str],
) -> list[dict[str, object]]:
    """The build (and test) instance's policy beyond Session Manager's: exactly what the component does."""
    return [
        {
            # AWSTOE fetches the component document (Image Builder user guide, instance profile).
            "Sid": "GetOwnComponent",
            "Effect": "Allow",
            "Action": ["imagebuilder:GetComponent"],
            "Resource": [
                pulumi.Output.format(
                    "arn:{0}:imagebuilder:{1}:{2}:component/{3}/*", partition, region, account, component_name
                )
            ],
        },
        {
            # The component is encrypted with the stack key: decrypt it, only through Image Builder.
            "Sid": "DecryptComponentViaImageBuilder",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": [kms_key_arn],
            "Condition": {"StringEquals": {"kms:ViaService": f"imagebuilder.{region}.amazonaws.com"}},
        },
        {
            "Sid": "ReadPinnedSourceAndHostScripts",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": list(object_arns),
        },
        {
            "Sid": "ReadAwstoeAndManagedComponents",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": list(awstoe_buckets(region)),
        },
        {
            "Sid": "WriteBuildLogs",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": [pulumi.Output.concat(bucket_arn, "/", LOG_PREFIX, "*")],
        },
    ]
