"""The PgBouncer tier under Pulumi mocks, for each real stack file: hosts, NLB, user data, IAM, security."""

from __future__ import annotations

import base64
import fnmatch
import gzip
import ipaddress
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from components import pgbouncer_image_document as doc
from components import pgbouncer_source
from components.pgbouncer import (
    DEREGISTRATION_DELAY,
    assets_bucket_prefix,
    ini_config,
)
from components.pgbouncer_group import HEALTH_CHECK_GRACE, LAUNCH_HOOK_TIMEOUT
from components.pgbouncer_image_document import PGBOUNCER_BIN, template_unit
from components.pgbouncer_userdata import AUTH_FILE, CA_FILE, nofile_limit
from dbctl.core import names
from tests.unit.harness import Resource, RunResult, of_type, one, run, run_fresh, settings_for
from tests.unit.shell import assert_parses, assert_shellcheck_clean

IMAGE = "aws:imagebuilder/image:Image"
STACKS = ("dev", "prod")
HOSTS = {"dev": 1, "prod": 2}
POOLED = (names.APP_ROLE, names.READONLY_ROLE, names.MONITOR_ROLE)
WORLD = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))

ASG = "aws:autoscaling/group:Group"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
NLB = "aws:lb/loadBalancer:LoadBalancer"
TG = "aws:lb/targetGroup:TargetGroup"
LISTENER = "aws:lb/listener:Listener"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[str, RunResult]:
    return request.param, run(request.param)


def tier(result: RunResult, typ: str, key_prefix: str = "") -> Resource:
    """The one resource of typ that the PgBouncer component declares (objects: the one under key_prefix)."""
    # The image pipeline's own (pgbouncer-image-*) are test_pgbouncer_image.py's.
    ours = [
        r
        for r in result.resources
        if r.name.startswith("pgbouncer") and not r.name.startswith("pgbouncer-image")
    ]
    return one([r for r in ours if r.inputs.get("key", "").startswith(key_prefix)], typ)


def script_of(result: RunResult) -> str:
    return gzip.decompress(base64.b64decode(tier(result, LT).inputs["userData"])).decode()


def ids_by_rule(result: RunResult, name: str) -> dict[str, Any]:
    return next(r.inputs for r in result.resources if r.name == name)


def test_hosts_behind_an_internal_nlb_on_6543(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    asg = tier(result, ASG).inputs
    assert asg["desiredCapacity"] == asg["minSize"] == HOSTS[name]
    assert asg["maxSize"] == 2 * HOSTS[name]  # room for the refresh's surge
    assert asg["healthCheckType"] == "ELB"  # a host the NLB finds dead is replaced
    # `pulumi up` fails unless every host passes the NLB's health check within the timeout.
    assert asg["waitForElbCapacity"] == HOSTS[name]
    # Room for a host that uses all of its launch hook's time and grace period, and one replacement.
    minutes = re.fullmatch(r"(\d+)m", asg["waitForCapacityTimeout"])
    assert minutes and int(minutes.group(1)) * 60 >= 2 * (LAUNCH_HOOK_TIMEOUT + HEALTH_CHECK_GRACE)
    assert asg["healthCheckGracePeriod"] == HEALTH_CHECK_GRACE == 90  # from InService: the NLB's checks
    assert asg["vpcZoneIdentifiers"] == result.outputs["subnet_ids"]
    assert asg["instanceRefresh"]["strategy"] == "Rolling"
    tg = tier(result, TG)
    assert asg["targetGroupArns"] == [tg.state["arn"]]
    assert (tg.inputs["port"], tg.inputs["protocol"], tg.inputs["targetType"]) == (6543, "TCP", "instance")
    assert tg.inputs["healthCheck"]["protocol"] == "TCP" and tg.inputs["healthCheck"]["enabled"] is True
    assert tg.inputs["healthCheck"]["timeout"] < tg.inputs["healthCheck"]["interval"]
    nlb = tier(result, NLB)
    assert nlb.inputs["internal"] is True and nlb.inputs["loadBalancerType"] == "network"
    assert nlb.inputs["subnets"] == result.outputs["subnet_ids"]
    listener = tier(result, LISTENER).inputs
    assert (listener["port"], listener["protocol"]) == (6543, "TCP")
    assert listener["loadBalancerArn"] == nlb.state["arn"]
    assert listener["defaultActions"] == [{"type": "forward", "targetGroupArn": tg.state["arn"]}]
    assert result.outputs["pgbouncer_endpoint"] == nlb.state["dnsName"]
    assert result.outputs["pgbouncer_port"] == names.PGBOUNCER_PORT
    assert result.outputs["read_pool_database"] == names.READ_POOL_DATABASE


def test_launch_template_is_graviton_al2023_imdsv2_without_ssh_or_public_ip(
    stack: tuple[str, RunResult],
) -> None:
    name, result = stack
    lt = tier(result, LT).inputs
    # The image this `up` built and tested (its test phase: test_pgbouncer_image.py), by id.
    image = one([r for r in result.resources if r.name == "pgbouncer-image-image"], IMAGE)
    assert lt["imageId"] == image.state["outputResources"][0]["amis"][0]["image"]
    assert lt["instanceType"] == settings_for(name).pgbouncer.instance_type
    assert re.fullmatch(r"[a-z]+\d+g[a-z]*\.[a-z0-9]+", lt["instanceType"])
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert "keyName" not in lt and "networkInterfaces" not in lt
    assert lt["vpcSecurityGroupIds"] == [result.outputs["pgbouncer_security_group_id"]]
    assert lt["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    # The ASG follows the template's latest version, so a changed template triggers an instance refresh.
    template = tier(result, ASG).inputs["launchTemplate"]
    assert template["id"].startswith("lt-") and template["version"] == "1"


def test_user_data_holds_the_rendered_settings(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    settings = settings_for(name)
    script = script_of(result)
    primary = result.outputs["primary_address"]
    replicas = result.outputs["replica_addresses"]
    read = replicas[0] if replicas else primary
    assert f"{names.DATABASE_NAME} = host={primary} " in script
    assert f"{names.READ_POOL_DATABASE} = host={read} " in script
    assert bool(replicas) == (name == "prod")
    p = settings.pgbouncer
    for key, value in (
        ("listen_port", 6543),
        ("pool_mode", "transaction"),
        ("max_client_conn", p.max_client_conn),
        ("default_pool_size", p.default_pool_size),
        ("min_pool_size", p.min_pool_size),
        ("reserve_pool_size", p.reserve_pool_size),
        ("server_lifetime", p.server_lifetime),
        ("server_idle_timeout", p.server_idle_timeout),
        ("auth_type", "scram-sha-256"),
        ("auth_file", AUTH_FILE),
        ("server_tls_sslmode", "verify-full"),
        ("server_tls_ca_file", CA_FILE),
        ("client_tls_sslmode", "require"),
    ):
        assert f"\n{key} = {value}\n" in script, key
    assert "\nmax_prepared_statements = " in script  # the hosts run >= 1.21
    assert f"readonly PGBOUNCER_VERSION={p.version}\n" in script
    assert f"LimitNOFILE={nofile_limit(p.max_client_conn)}\n" in script
    assert "Restart=on-failure" in template_unit() and "OnUnitActiveSec=" in script
    assert f"readonly REGION={settings.region}\n" in script


def test_auth_file_comes_from_the_pooled_roles_secrets(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    script = script_of(result)
    arns = result.outputs["role_secret_arns"]
    for role in POOLED:
        assert f"--secret {role}={arns[role]}" in script
    assert arns[names.MIGRATOR_ROLE] not in script  # the migrator goes direct, never through PgBouncer
    assert result.outputs["master_secret_arn"] not in script
    assert f"--auth-file {AUTH_FILE}" in script


def test_no_plaintext_password_or_verifier_in_the_user_data(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    script = script_of(result)
    passwords = [
        r.state["result"] for r in of_type(result.resources, "random:index/randomPassword:RandomPassword")
    ]
    assert passwords, "the credentials component should generate passwords"
    for password in passwords:
        assert password not in script
    assert not re.search(r"SCRAM-SHA-256\$\d+:", script)
    assert "set -x" not in script


def statements(result: RunResult) -> list[dict[str, Any]]:
    policy = json.loads(tier(result, "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    return list(policy["Statement"])


def test_instance_role_is_least_privilege(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    arns = result.outputs["role_secret_arns"]
    by_sid = {s["Sid"]: s for s in statements(result)}
    assert set(by_sid) == {
        "ReadPooledRoleSecrets",
        "ReadClientTlsKey",
        "ReadRdsCaBundle",
        "CompleteOwnLaunchHook",
        "DecryptSecretsViaSecretsManager",
        "PutPoolMetrics",
    }
    tls_secret = tier(result, "aws:secretsmanager/secret:Secret")
    assert by_sid["ReadClientTlsKey"]["Resource"] == [tls_secret.state["arn"]]
    assert by_sid["ReadClientTlsKey"]["Action"] == ["secretsmanager:GetSecretValue"]
    metrics = by_sid["PutPoolMetrics"]
    assert metrics["Action"] == ["cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": f"SpikeLandDb/{name}"}}
    secrets = by_sid["ReadPooledRoleSecrets"]
    assert secrets["Action"] == ["secretsmanager:GetSecretValue"]
    assert sorted(secrets["Resource"]) == sorted(arns[r] for r in POOLED)
    kms = by_sid["DecryptSecretsViaSecretsManager"]
    assert kms["Action"] == ["kms:Decrypt"] and kms["Resource"] == [result.outputs["kms_key_arn"]]
    via = kms["Condition"]["StringEquals"]["kms:ViaService"]
    assert via == f"secretsmanager.{settings_for(name).region}.amazonaws.com"
    ca = by_sid["ReadRdsCaBundle"]
    assert ca["Action"] == ["s3:GetObject"] and len(ca["Resource"]) == 1
    assert ca["Resource"][0].endswith(f"/rds-ca/{settings_for(name).region}-bundle.pem")
    # The hosts no longer read the source (the image built it); they complete their own launch hook.
    hook = by_sid["CompleteOwnLaunchHook"]
    assert hook["Action"] == ["autoscaling:CompleteLifecycleAction"]
    group = tier(result, ASG).inputs["name"]
    assert hook["Resource"] == [
        f"arn:aws:autoscaling:{settings_for(name).region}:123456789012:autoScalingGroup:*:"
        f"autoScalingGroupName/{group}"
    ]
    attachment = tier(result, "aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    trust = json.loads(tier(result, "aws:iam/role:Role").inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def source_objects(result: RunResult) -> list[Resource]:
    objects = of_type(result.resources, "aws:s3/bucketObjectv2:BucketObjectv2")
    pinned = {pgbouncer_source.S3_PREFIX + f.name for f in pgbouncer_source.pinned().files}
    return [o for o in objects if o.inputs["key"] in pinned]


def assets_bucket(result: RunResult) -> str:
    """The tier's private bucket, as its objects name it (the RDS CA bundle's)."""
    return str(tier(result, "aws:s3/bucketObjectv2:BucketObjectv2", key_prefix="rds-ca/").inputs["bucket"])


def test_the_pinned_source_is_uploaded_into_the_tiers_private_bucket(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    pins = pgbouncer_source.pinned()
    objects = source_objects(result)
    assert [o.inputs["key"] for o in objects] == [pgbouncer_source.S3_PREFIX + f.name for f in pins.files]
    for obj, pin in zip(objects, pins.files, strict=True):
        assert obj.inputs["bucket"] == assets_bucket(result)  # the CA bundle's private bucket
        assert obj.inputs["checksumAlgorithm"] == "SHA256"  # S3 checks the upload as well
        # A FileAsset of the file this machine checked, by its path in the project (Pulumi runs the program
        # there): the same path in the state whichever machine runs `pulumi up`.
        asset = Path(obj.inputs["source"].path)
        assert asset == Path(".tools/pgbouncer-src") / pin.name
        assert pgbouncer_source.sha256_of(pgbouncer_source.REPO_ROOT / asset) == pin.sha256


def test_user_data_builds_nothing_and_checks_the_images_release(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    script = script_of(result)
    for gone in ("dnf ", "./configure", "make ", "patch ", "PGBOUNCER_SOURCE_URI", "sha256sum", "useradd"):
        assert gone not in script, gone
    steps = [
        f"[ -x {PGBOUNCER_BIN} ] ||",
        f"built=$({PGBOUNCER_BIN} --version",
        "# 2. The RDS CA bundle",
        "cat > /etc/systemd/system/pgbouncer@.service.d/limits.conf",
        "systemctl restart spike-pgbouncer.target",
        "complete_launch CONTINUE || fail",
    ]
    positions = [script.find(step) for step in steps]
    assert -1 not in positions, [s for s, at in zip(steps, positions, strict=True) if at == -1]
    assert positions == sorted(positions)
    assert "cat > /etc/systemd/system/pgbouncer@.service " not in script  # the image's unit


def test_the_user_data_is_valid_bash(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    assert_parses(script_of(result), f"user data of {name}")


def refused(stack: str, overrides: dict[str, object] | None = None) -> Exception:
    """The SourceError of a fresh run (not the cached one), which must come before any resource."""
    with pytest.raises(pgbouncer_source.SourceError) as caught:
        run_fresh(stack, overrides)
    declared = caught.value.declared_resources  # type: ignore[attr-defined]  # set by the harness
    assert [r.name for r in declared if r.typ != "pulumi:pulumi:Stack"] == []
    return caught.value


def test_a_missing_or_altered_source_is_refused_before_any_resource(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pgbouncer_source.source_dir()
    pins = pgbouncer_source.pinned()
    monkeypatch.setenv(pgbouncer_source.SOURCE_DIR_ENV, str(tmp_path))
    shutil.copy(real / pins.orig.name, tmp_path / pins.orig.name)  # the Debian tarball is missing
    error = refused("dev")
    assert str(error) == (
        f"the PgBouncer source {tmp_path / pins.debian.name} is missing: run `./dev fetch-pgbouncer`"
    )
    altered = tmp_path / pins.debian.name
    altered.write_bytes((real / pins.debian.name).read_bytes() + b"\n")
    error = refused("prod")
    message = str(error)
    assert "\n" not in message and f"not the pinned {pins.debian.sha256}" in message
    assert message.endswith("delete it and run `./dev fetch-pgbouncer`")


def test_a_pgbouncer_version_the_pinned_source_is_not_is_refused_before_any_resource() -> None:
    error = refused("dev", {"pgbouncer.version": "1.25"})
    version = pgbouncer_source.pinned().version
    assert str(error).startswith(
        f"pgbouncer.version is 1.25, but the hosts build the pinned PgBouncer {version}"
    )
    assert "set pgbouncer.version to 1.24, or pin a 1.25 source" in str(error)


def test_no_iam_statement_uses_a_wildcard_resource(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    for statement in statements(result):
        if statement["Action"] == ["cloudwatch:PutMetricData"]:
            # PutMetricData has no resource type: "*" narrowed by the namespace condition (AWS's own form).
            assert (
                statement["Resource"] == ["*"]
                and "cloudwatch:namespace" in statement["Condition"]["StringEquals"]
            )
            continue
        if statement["Action"] == ["autoscaling:CompleteLifecycleAction"]:
            # A group's ARN holds its id, unknown until it exists: AWS's form for "this group, by name".
            (arn,) = statement["Resource"]
            assert re.fullmatch(
                r"arn:aws:autoscaling:[a-z0-9-]+:\d{12}:autoScalingGroup:\*:autoScalingGroupName/spike-pgb-\w+-hosts",
                arn,
            ), arn
            continue
        resources = statement["Resource"]
        for resource in resources if isinstance(resources, list) else [resources]:
            assert "*" not in resource, statement


def test_ca_bundle_bucket_is_private_and_named_for_the_endpoint_policy(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    bucket = tier(result, "aws:s3/bucket:Bucket").inputs
    assert bucket["bucketPrefix"] == assets_bucket_prefix(name)
    block = tier(result, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls"))
    assert block["restrictPublicBuckets"] is True
    script = script_of(result)
    assert f"rds-ca/{settings_for(name).region}-bundle.pem" in script


def test_no_ingress_from_the_internet_anywhere(stack: tuple[str, RunResult]) -> None:
    _, result = stack
    rules = of_type(result.resources, INGRESS)
    for sg in of_type(result.resources, "aws:ec2/securityGroup:SecurityGroup"):
        rules += [Resource(typ=INGRESS, name=sg.name, inputs=i) for i in sg.inputs.get("ingress") or []]
    assert rules
    for rule in rules:
        cidrs = [rule.inputs.get("cidrIpv4"), rule.inputs.get("cidrIpv6")]
        cidrs += rule.inputs.get("cidrBlocks") or []
        cidrs += rule.inputs.get("ipv6CidrBlocks") or []
        for cidr in filter(None, cidrs):
            assert ipaddress.ip_network(cidr) not in WORLD, rule.name


def test_clients_reach_pgbouncer_only_through_the_nlb(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    settings = settings_for(name)
    pgb_sg = result.outputs["pgbouncer_security_group_id"]
    nlb_sg = tier(result, NLB).inputs["securityGroups"][0]
    into_hosts = [
        r.inputs for r in of_type(result.resources, INGRESS) if r.inputs["securityGroupId"] == pgb_sg
    ]
    assert into_hosts == [
        {
            "securityGroupId": pgb_sg,
            "referencedSecurityGroupId": nlb_sg,
            "ipProtocol": "tcp",
            "fromPort": 6543,
            "toPort": 6543,
            "description": into_hosts[0]["description"],
        }
    ]
    into_nlb = [r.inputs for r in of_type(result.resources, INGRESS) if r.inputs["securityGroupId"] == nlb_sg]
    assert {r.get("cidrIpv4") for r in into_nlb if r.get("cidrIpv4")} == set(settings.allowed_cidrs)
    assert all((r["fromPort"], r["toPort"]) == (6543, 6543) for r in into_nlb)
    out_of_nlb = [
        r.inputs for r in of_type(result.resources, EGRESS) if r.inputs["securityGroupId"] == nlb_sg
    ]
    assert [(r["referencedSecurityGroupId"], r["fromPort"]) for r in out_of_nlb] == [(pgb_sg, 6543)]


def test_app_security_groups_are_admitted_at_the_nlb() -> None:
    app_sg = "sg-0123456789abcdef0"
    result = run("dev", {"allowedSecurityGroupIds": [app_sg]})
    nlb_sg = tier(result, NLB).inputs["securityGroups"][0]
    refs = [
        r.inputs["referencedSecurityGroupId"]
        for r in of_type(result.resources, INGRESS)
        if r.inputs["securityGroupId"] == nlb_sg
        and "referencedSecurityGroupId" in r.inputs
        and not r.name.startswith("rotation-")  # the rotation function's testSecret (test_rotation.py)
    ]
    assert refs == [app_sg]


def test_the_hosts_wait_for_the_tls_secrets_version(stack: tuple[str, RunResult]) -> None:
    """The helper reads the secret's current version at boot: the group depends on that version."""
    _, result = stack
    version = one(
        [r for r in result.resources if r.name.startswith("pgbouncer")],
        "aws:secretsmanager/secretVersion:SecretVersion",
    )
    assert version.urn in tier(result, ASG).dependencies
    # The deregistration delay and PgBouncer's stop (TimeoutStopSec) agree.
    assert tier(result, TG).inputs["deregistrationDelay"] == DEREGISTRATION_DELAY == doc.DRAIN_SECONDS


def test_client_tls_off_renders_no_client_tls() -> None:
    script = script_of(run("dev", {"pgbouncer.clientTls": False}))
    assert "client_tls_sslmode" not in script and "openssl req" not in script


def test_read_pool_points_at_the_primary_without_a_replica() -> None:
    settings = settings_for("dev")
    config = ini_config(settings, "primary.example", [])
    assert config.read_target == ("primary.example", names.POSTGRES_PORT)


def test_the_s3_endpoint_lets_the_hosts_read_the_ca_bundle_and_the_source(
    stack: tuple[str, RunResult],
) -> None:
    name, result = stack
    endpoints = of_type(result.resources, "aws:ec2/vpcEndpoint:VpcEndpoint")
    gateway = [r for r in endpoints if r.inputs.get("vpcEndpointType") == "Gateway"]
    assert len(gateway) == 1  # both stacks create their VPC, with endpoints and no internet route
    policy = json.loads(gateway[0].inputs["policy"])
    resources = [res for st in policy["Statement"] for res in st["Resource"]]
    assert f"arn:aws:s3:::{assets_bucket_prefix(name)}*/*" in resources
    # What the hosts fetch, under a real bucket name the prefix would give (the mocks name it otherwise).
    bucket = assets_bucket_prefix(name) + "20260101000000000000000001"
    for key in [o.inputs["key"] for o in source_objects(result)] + [
        f"rds-ca/{settings_for(name).region}-bundle.pem"
    ]:
        assert any(fnmatch.fnmatchcase(f"arn:aws:s3:::{bucket}/{key}", r) for r in resources), key


def test_shellcheck_passes_on_each_stacks_user_data(stack: tuple[str, RunResult]) -> None:
    name, result = stack
    assert_shellcheck_clean(script_of(result), f"user data of {name}")
