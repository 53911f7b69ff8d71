"""The PgBouncer image pipeline and what the hosts take from it, under Pulumi mocks, for each real stack file:
Image Builder's resources and their encryption, the build instance's exact IAM and endpoint policies, the
launch template on the pipeline's image (or the pinned one), the instance refresh and the launch hook."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
import yaml

from components import pgbouncer_image as img
from components import pgbouncer_image_document as doc
from components import pgbouncer_source
from components.network import INTERFACE_ENDPOINT_SERVICES
from components.pgbouncer import assets_bucket_prefix
from components.pgbouncer_group import (
    HEALTH_CHECK_GRACE,
    LAUNCH_HOOK,
    LAUNCH_HOOK_TIMEOUT,
    group_name,
    refresh_failure_event_pattern,
)
from dbctl.stackconfig.settings import SettingsError
from tests.unit.harness import Resource, RunResult, of_type, one, run, settings_for

STACKS = ("dev", "prod")
HOSTS = {"dev": 1, "prod": 2}
IB = "aws:imagebuilder/"
COMPONENT = IB + "component:Component"
RECIPE = IB + "imageRecipe:ImageRecipe"
INFRA = IB + "infrastructureConfiguration:InfrastructureConfiguration"
DIST = IB + "distributionConfiguration:DistributionConfiguration"
IMAGE = IB + "image:Image"
PIPELINE = IB + "imagePipeline:ImagePipeline"
ASG = "aws:autoscaling/group:Group"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
PINNED = "ami-0fedcba9876543210"


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[str, RunResult]:
    return request.param, run(request.param)


def image_part(result: RunResult, typ: str) -> Resource:
    return one([r for r in result.resources if r.name.startswith("pgbouncer-image")], typ)


def key_arn(result: RunResult) -> str:
    return str(result.outputs["kms_key_arn"])


def test_the_pipeline_builds_the_component_on_al2023_arm64(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    settings = settings_for(name)
    component = image_part(result, COMPONENT).inputs
    data = doc.component_document(pgbouncer_source.pinned())
    assert component["data"] == data and component["platform"] == "Linux"
    assert component["name"] == img.build_name(name, data)  # a changed document: a new component
    assert len(data) <= doc.COMPONENT_DATA_LIMIT
    phases = [p["name"] for p in yaml.safe_load(data)["phases"]]
    assert phases == ["build", "test"]  # the test phase runs on an instance of the new AMI
    recipe = image_part(result, RECIPE)
    assert recipe.inputs["name"] == img.recipe_name(name, data)
    assert recipe.inputs["parentImage"] == (
        f"arn:aws:imagebuilder:{settings.region}:aws:image/amazon-linux-2023-arm64/x.x.x"
    )
    [entry] = recipe.inputs["components"]
    assert entry["componentArn"] == image_part(result, COMPONENT).state["arn"]
    scripts = [
        r
        for r in of_type(result.resources, "aws:s3/bucketObjectv2:BucketObjectv2")
        if r.name.startswith("pgbouncer-image")
    ]
    assert [s.inputs["key"] for s in scripts] == [pgbouncer_source.S3_PREFIX + n for n in doc.HOST_SCRIPTS]
    assert all(s.inputs["checksumAlgorithm"] == "SHA256" for s in scripts)
    bucket = str(scripts[0].inputs["bucket"])
    assert bucket.startswith("pgbouncer-ca")  # the tier's private bucket (the mock's id for it)
    parameters = {p["name"]: p["value"] for p in entry["parameters"]}
    assert parameters == {
        doc.PARAM_SOURCE_URI: f"s3://{bucket}/{pgbouncer_source.S3_PREFIX}",
        doc.PARAM_REGION: settings.region,
    }
    infra = image_part(result, INFRA).inputs
    assert infra["instanceTypes"] == [settings.pgbouncer.instance_type]  # Graviton: arm64, like the hosts
    assert infra["subnetId"] == result.outputs["subnet_ids"][0]  # private, no internet route
    assert infra["securityGroupIds"] == [result.outputs["pgbouncer_security_group_id"]]
    assert infra["terminateInstanceOnFailure"] is True
    assert infra["instanceMetadataOptions"] == {"httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert infra["logging"]["s3Logs"] == {"s3BucketName": bucket, "s3KeyPrefix": "image-builder-logs"}
    image = image_part(result, IMAGE).inputs
    assert image["imageRecipeArn"] == recipe.state["arn"]
    assert image["infrastructureConfigurationArn"] == image_part(result, INFRA).state["arn"]
    assert image["distributionConfigurationArn"] == image_part(result, DIST).state["arn"]
    assert image["imageTestsConfiguration"] == {"imageTestsEnabled": True, "timeoutMinutes": 60}
    pipeline = image_part(result, PIPELINE).inputs
    assert pipeline["imageRecipeArn"] == recipe.state["arn"] and "schedule" not in pipeline
    assert pipeline["imageTestsConfiguration"]["imageTestsEnabled"] is True


def test_everything_the_image_holds_is_encrypted_with_the_stack_key(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    key = key_arn(result)
    assert image_part(result, COMPONENT).inputs["kmsKeyId"] == key
    [volume] = image_part(result, RECIPE).inputs["blockDeviceMappings"]
    assert volume["deviceName"] == "/dev/xvda"
    assert volume["ebs"]["encrypted"] == "true" and volume["ebs"]["kmsKeyId"] == key
    [dist] = image_part(result, DIST).inputs["distributions"]
    assert dist["amiDistributionConfiguration"]["kmsKeyId"] == key
    # The Auto Scaling service-linked role may use the key to launch hosts from that AMI.
    grant = image_part(result, "aws:kms/grant:Grant").inputs
    assert grant["keyId"] == key
    assert grant["granteePrincipal"] == (
        "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    )
    assert sorted(grant["operations"]) == sorted(img.AUTOSCALING_KEY_OPERATIONS)


def build_statements(result: RunResult) -> dict[str, dict[str, Any]]:
    policy = json.loads(image_part(result, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    return {s["Sid"]: s for s in policy["Statement"]}


def test_the_build_instance_role_is_exactly_what_the_component_does(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    region = settings_for(name).region
    by_sid = build_statements(result)
    assert set(by_sid) == {
        "GetOwnComponent",
        "DecryptComponentViaImageBuilder",
        "ReadPinnedSourceAndHostScripts",
        "ReadAwstoeAndManagedComponents",
        "WriteBuildLogs",
    }
    component = image_part(result, COMPONENT).inputs["name"]
    assert by_sid["GetOwnComponent"]["Action"] == ["imagebuilder:GetComponent"]
    assert by_sid["GetOwnComponent"]["Resource"] == [
        f"arn:aws:imagebuilder:{region}:123456789012:component/{component}/*"  # its versions, nothing else
    ]
    decrypt = by_sid["DecryptComponentViaImageBuilder"]
    assert decrypt["Action"] == ["kms:Decrypt"] and decrypt["Resource"] == [key_arn(result)]
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": f"imagebuilder.{region}.amazonaws.com"}
    }
    bucket_arn = one([r for r in result.resources if r.name == "pgbouncer-ca"], "aws:s3/bucket:Bucket").state[
        "arn"
    ]
    keys = [f.name for f in pgbouncer_source.pinned().files] + list(doc.HOST_SCRIPTS)
    reads = by_sid["ReadPinnedSourceAndHostScripts"]
    assert reads["Action"] == ["s3:GetObject"]
    assert reads["Resource"] == [f"{bucket_arn}/{pgbouncer_source.S3_PREFIX}{k}" for k in keys]
    assert by_sid["ReadAwstoeAndManagedComponents"]["Resource"] == [
        f"arn:aws:s3:::ec2imagebuilder-toe-{region}-prod/*",
        f"arn:aws:s3:::ec2imagebuilder-managed-resources-{region}-prod/components/*",
    ]
    assert by_sid["WriteBuildLogs"] == {
        "Sid": "WriteBuildLogs",
        "Effect": "Allow",
        "Action": ["s3:PutObject"],
        "Resource": [f"{bucket_arn}/image-builder-logs/*"],
    }
    attachments = [
        a.inputs["policyArn"]
        for a in of_type(result.resources, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.name.startswith("pgbouncer-image")
    ]
    assert attachments == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]  # Run Command, no more


def test_the_build_instance_reaches_aws_only_through_the_stacks_endpoints(
    stack: tuple[str, RunResult],
) -> None:
    name, result = stack
    region = settings_for(name).region
    services = {
        r.inputs["serviceName"].rsplit(".", 1)[1]
        for r in of_type(result.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")
        if r.inputs["vpcEndpointType"] == "Interface" and r.name.startswith("network-")
    }
    assert {"imagebuilder", "ssm", "ssmmessages", "ec2messages", "autoscaling"} <= services
    assert services == set(INTERFACE_ENDPOINT_SERVICES)
    [gateway] = [
        r
        for r in of_type(result.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")
        if r.inputs["vpcEndpointType"] == "Gateway"
    ]
    by_sid = {s["Sid"]: s for s in json.loads(gateway.inputs["policy"])["Statement"]}
    assert by_sid["ImageBuilderAwstoe"]["Action"] == ["s3:GetObject"]
    assert by_sid["ImageBuilderAwstoe"]["Resource"] == list(img.awstoe_buckets(region))
    assert by_sid["ImageBuilderLogs"]["Action"] == ["s3:PutObject"]
    assert by_sid["ImageBuilderLogs"]["Resource"] == [
        f"arn:aws:s3:::{assets_bucket_prefix(name)}*/image-builder-logs/*"
    ]
    # Nothing else is written through the endpoint.
    writes = [s for s in by_sid.values() if s["Action"] != ["s3:GetObject"]]
    assert [s["Sid"] for s in writes] == ["ImageBuilderLogs"]


def test_the_hosts_launch_from_the_image_this_up_built(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    lt = one([r for r in result.resources if r.name == "pgbouncer-host"], LT).inputs
    ami = image_part(result, IMAGE).state["outputResources"][0]["amis"][0]["image"]
    assert lt["imageId"] == ami
    assert not [r for r in result.resources if r.typ == "aws:ssm/getParameter:getParameter"]
    # The outputs the promote/rollback runbook starts from (docs/pgbouncer.md).
    assert result.outputs["pgbouncer_image_id"] == ami
    assert result.outputs["pgbouncer_image_pipeline_arn"] == image_part(result, PIPELINE).state["arn"]


@pytest.mark.parametrize("name", STACKS)
def test_a_pinned_ami_is_what_the_hosts_launch_and_no_image_is_built(name: str) -> None:
    result = run(name, {"pgbouncer.amiId": PINNED})
    lt = one([r for r in result.resources if r.name == "pgbouncer-host"], LT).inputs
    assert lt["imageId"] == PINNED
    assert not [r for r in result.resources if r.typ == IMAGE]  # the pin promotes; no build on `up`
    assert len(of_type(result.resources, PIPELINE)) == 1  # the pipeline stays, to build the next one
    assert result.outputs["pgbouncer_image_id"] == PINNED
    assert result.outputs["pgbouncer_image_pipeline_arn"] == one(result.resources, PIPELINE).state["arn"]


def test_an_ami_pin_that_is_not_an_ami_id_is_refused() -> None:
    with pytest.raises(
        SettingsError, match=r"pgbouncer.amiId = 'al2023-latest' is invalid: must be an AMI id"
    ):
        settings_for("dev", {"pgbouncer.amiId": "al2023-latest"})


def test_a_refresh_surges_rolls_back_and_waits_for_the_launch_hook(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    asg = one([r for r in result.resources if r.name == "pgbouncer-hosts"], ASG).inputs
    assert asg["name"] == group_name(name)
    assert (asg["minSize"], asg["desiredCapacity"], asg["maxSize"]) == (
        HOSTS[name],
        HOSTS[name],
        2 * HOSTS[name],
    )
    refresh = asg["instanceRefresh"]
    assert refresh["strategy"] == "Rolling"
    assert refresh["preferences"] == {
        "minHealthyPercentage": 100,
        "maxHealthyPercentage": 200,
        "autoRollback": True,
        "instanceWarmup": str(HEALTH_CHECK_GRACE),
        "skipMatching": False,
    }
    # Rollback needs a numbered launch template version, not $Latest (RefreshPreferences, AutoRollback).
    assert asg["launchTemplate"]["version"] == "1"
    assert asg["initialLifecycleHooks"] == [
        {
            "name": LAUNCH_HOOK,
            "lifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "defaultResult": "ABANDON",
            "heartbeatTimeout": LAUNCH_HOOK_TIMEOUT,
        }
    ]


def test_the_user_data_completes_that_hook_of_that_group(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    lt = one([r for r in result.resources if r.name == "pgbouncer-host"], LT).inputs
    script = gzip.decompress(base64.b64decode(lt["userData"])).decode()
    assert f"--lifecycle-hook-name {LAUNCH_HOOK} --auto-scaling-group-name {group_name(name)}" in script
    assert "complete_launch CONTINUE" in script and "complete_launch ABANDON" in script


def test_a_refresh_failure_or_rollback_of_this_stacks_group_matches_the_event_pattern() -> None:
    """The shape of AWS's example events (Auto Scaling user guide, instance refresh events)."""
    pattern = refresh_failure_event_pattern("prod")
    event = {
        "detail-type": "EC2 Auto Scaling Instance Refresh Rollback Succeeded",
        "source": "aws.autoscaling",
        "detail": {"InstanceRefreshId": "c613620e", "AutoScalingGroupName": "spike-pgb-prod-hosts"},
    }
    assert event["source"] in pattern["source"]  # type: ignore[operator]
    assert event["detail-type"] in pattern["detail-type"]  # type: ignore[operator]
    assert pattern["detail"] == {"AutoScalingGroupName": [group_name("prod")]}
    assert "EC2 Auto Scaling Instance Refresh Succeeded" not in pattern["detail-type"]  # type: ignore[operator]


def test_a_recipe_input_that_is_not_the_document_still_renames_the_recipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Image Builder replaces a recipe for any change and refuses a name/version that exists: Pulumi creates
    the replacement first, so e.g. a bigger root volume must be a new name, or `up` fails."""
    data = doc.component_document(pgbouncer_source.pinned())
    before = img.recipe_name("prod", data)
    assert before != img.build_name("prod", data) and before.startswith("spike-pgb-prod-")
    monkeypatch.setattr(img, "ROOT_VOLUME_GB", img.ROOT_VOLUME_GB + 4)
    assert img.recipe_name("prod", data) != before
    monkeypatch.setattr(img, "PARENT_IMAGE", "amazon-linux-2023-x86")
    assert img.recipe_name("prod", data) not in {before, img.build_name("prod", data)}


@pytest.mark.parametrize("name", STACKS)
def test_the_hosts_root_volume_is_the_images_size_and_type(name: str) -> None:
    """A launch template volume smaller than the AMI's snapshot fails every launch."""
    result = run(name, {})
    lt = one([r for r in result.resources if r.name == "pgbouncer-host"], LT).inputs
    [mapping] = lt["blockDeviceMappings"]
    [recipe_mapping] = image_part(result, RECIPE).inputs["blockDeviceMappings"]
    assert mapping["deviceName"] == recipe_mapping["deviceName"] == img.ROOT_DEVICE
    assert mapping["ebs"]["volumeSize"] == recipe_mapping["ebs"]["volumeSize"] == img.ROOT_VOLUME_GB
    assert mapping["ebs"]["volumeType"] == recipe_mapping["ebs"]["volumeType"] == "gp3"


def test_the_build_waits_for_what_its_instance_needs(stack: tuple[str, RunResult]) -> None:
    """CreateImage starts the build at once: without these its instance can boot before it may use Session
    Manager, read the source or reach the endpoints, which are minutes from available on a first `up`."""
    _, result = stack
    image = image_part(result, IMAGE)
    named_in = {r.name: r for r in result.resources}
    needs = [
        named_in["pgbouncer-image-build-ssm"],  # AmazonSSMManagedInstanceCore
        one(
            [r for r in result.resources if r.name == "pgbouncer-image-build"],
            "aws:iam/rolePolicy:RolePolicy",
        ),
        *[named_in[f"network-{service}"] for service in INTERFACE_ENDPOINT_SERVICES],
        named_in["network-s3"],
        named_in["network-pgbouncer-to-endpoints"],
        named_in["network-pgbouncer-to-s3"],
    ]
    assert {"ssm", "ssmmessages", "ec2messages", "imagebuilder"} <= set(INTERFACE_ENDPOINT_SERVICES)
    missing = [r.name for r in needs if r.urn not in image.dependencies]
    assert missing == []
    # The role policy names the source and script objects, so it (and the build after it) waits for them.
    policy = one(
        [r for r in result.resources if r.name == "pgbouncer-image-build"], "aws:iam/rolePolicy:RolePolicy"
    )
    objects = [
        r
        for r in of_type(result.resources, "aws:s3/bucketObjectv2:BucketObjectv2")
        if "-ca-bundle" not in r.name
    ]
    assert objects and all(o.urn in policy.dependencies for o in objects)


def test_the_hosts_wait_for_the_endpoints_too(stack: tuple[str, RunResult]) -> None:
    """With pgbouncer.amiId pinned nothing else makes a first host wait for the endpoints it boots through."""
    name, _ = stack
    result = run(name, {"pgbouncer.amiId": PINNED})
    asg = one(result.resources, "aws:autoscaling/group:Group")
    endpoints = [
        e
        for e in of_type(result.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")
        if e.name.startswith("network-")
    ]
    assert len(endpoints) == len(INTERFACE_ENDPOINT_SERVICES) + 1 and all(
        e.urn in asg.dependencies for e in endpoints
    )


@pytest.mark.parametrize("name", STACKS)
def test_no_host_launches_before_the_groups_role_may_use_the_amis_key(name: str) -> None:
    for result in (run(name, {}), run(name, {"pgbouncer.amiId": PINNED})):
        grant = one(result.resources, "aws:kms/grant:Grant")
        lt = one([r for r in result.resources if r.name == "pgbouncer-host"], LT)
        assert grant.urn in lt.dependencies
