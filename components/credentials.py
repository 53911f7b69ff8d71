"""Credentials: the customer-managed KMS key, the master password and one secret per login role.

Each login role's secret holds `{username, password, scram_verifier}` (keys from dbctl.names). The verifier
is computed here from the password and a 16-byte salt from pulumi-random, so it is stable across runs and
the post-deploy step can `ALTER ROLE ... PASSWORD '<verifier>'` without the plaintext reaching the server.

The master secret is created here, empty; its value (the standard RDS JSON with the host) is written by the
database component once the instance exists. Every password, salt and verifier stays a Pulumi secret.

Rotation (components/rotation.py) writes later versions of these secrets. So the version Pulumi writes is
its *first* one only: `ignore_changes` on its value and staging labels (a `pulumi up` after a rotation
changes nothing, and `pulumi refresh` does not undo it), and a label of its own (`INITIAL_STAGE`) keeps
that version from the garbage collection of unlabelled versions, which would make Pulumi recreate it as
AWSCURRENT (terraform-aws-modules/terraform-aws-secrets-manager#24). A pooled role's first version names
its `_a` user; the state's first password stops working at the second rotation (the master's at the first).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.flow_logs import flow_log_group_name
from components.kms import key_policy
from components.provider import account_of
from dbctl.core import names
from dbctl.core.scram import SALT_BYTES, scram_verifier
from dbctl.stackconfig.settings import StackSettings

MASTER_USERNAME = "spike_admin"
PASSWORD_LENGTH = 40
# RDS forbids / @ " and space in master passwords; these specials are also URL-safe, so a password can go
# into a connection string without escaping.
PASSWORD_SPECIALS = "-_.~"  # noqa: S105 (a character set, not a password)
# The staging label of the version Pulumi writes (AWSCURRENT moves on with each rotation; this one stays).
INITIAL_STAGE = "spike-land-db-initial"


def first_version_options(child: pulumi.ResourceOptions) -> pulumi.ResourceOptions:
    """A SecretVersion that rotation takes over: Pulumi writes it once and never again (see above)."""
    return pulumi.ResourceOptions.merge(
        child, pulumi.ResourceOptions(ignore_changes=["secret_string", "version_stages"])
    )


@dataclass(frozen=True)
class CredentialsArgs:
    settings: StackSettings
    provider: aws.Provider


def _password(name: str, parent: pulumi.Resource) -> random.RandomPassword:
    return random.RandomPassword(
        name,
        length=PASSWORD_LENGTH,
        special=True,
        override_special=PASSWORD_SPECIALS,
        min_lower=1,
        min_upper=1,
        min_numeric=1,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def role_secret_json(username: str, password: str, salt_b64: str) -> str:
    """The role secret's JSON: username, password and the SCRAM verifier of password with salt."""
    verifier = scram_verifier(password, base64.b64decode(salt_b64))
    return json.dumps(
        {
            names.SECRET_USERNAME_KEY: username,
            names.SECRET_PASSWORD_KEY: password,
            names.SECRET_VERIFIER_KEY: verifier,
        }
    )


class Credentials(pulumi.ComponentResource):
    kms_key: aws.kms.Key
    kms_key_arn: pulumi.Output[str]
    master_username: str
    master_password: pulumi.Output[str]
    master_secret: aws.secretsmanager.Secret
    role_secret_arns: dict[str, pulumi.Output[str]]
    role_secrets: dict[str, aws.secretsmanager.Secret]
    role_secret_versions: dict[str, aws.secretsmanager.SecretVersion]  # each role secret's first version

    def __init__(self, name: str, args: CredentialsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:Credentials", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        prefix = f"spike-land-{s.stack}"
        partition, account = account_of(args.provider)

        # The account administers the key and IAM policies grant its use (RDS, Secrets Manager and
        # Performance Insights use it through grants on behalf of those principals).
        group_arn = f"arn:{partition}:logs:{s.region}:{account}:log-group:"
        # The RDS instances' groups and this stack's Lambda functions' groups (restore validation).
        log_groups = [f"{group_arn}/aws/rds/instance/{prefix}-*", f"{group_arn}/aws/lambda/{prefix}-*"]
        if s.network.flow_logs:
            log_groups.append(group_arn + flow_log_group_name(s.stack))
        logs_statement = {
            # CloudWatch Logs encrypts the RDS, Lambda and flow-log groups of this stack, and only those.
            "Sid": "CloudWatchLogsForRdsLogGroups",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{s.region}.amazonaws.com"},
            "Action": [
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            "Resource": "*",
            "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
        }
        self.kms_key = aws.kms.Key(
            f"{name}-key",
            description=f"{prefix}: RDS storage, secrets, Performance Insights and logs",
            enable_key_rotation=True,
            deletion_window_in_days=s.secret_recovery_window_days,
            policy=key_policy(partition, account, logs_statement),
            opts=child,
        )
        aws.kms.Alias(f"{name}-key", name=f"alias/{prefix}-db", target_key_id=self.kms_key.key_id, opts=child)
        self.kms_key_arn = self.kms_key.arn

        def secret(key: str, description: str) -> aws.secretsmanager.Secret:
            return aws.secretsmanager.Secret(
                f"{name}-{key}",
                # A prefix, not a name: a deleted secret's name stays taken for the recovery window.
                name_prefix=f"{prefix}/{key}-",
                description=description,
                kms_key_id=self.kms_key.arn,
                recovery_window_in_days=s.secret_recovery_window_days,
                opts=child,
            )

        master_password = _password(f"{name}-master-password", self)
        self.master_username = MASTER_USERNAME
        self.master_password = pulumi.Output.secret(master_password.result)
        self.master_secret = secret("master", f"{prefix} RDS master user (standard RDS secret JSON)")

        self.role_secret_arns = {}
        self.role_secrets = {}
        self.role_secret_versions = {}
        for role in names.LOGIN_ROLES:
            password = _password(f"{name}-{role}-password", self)
            salt = random.RandomBytes(
                f"{name}-{role}-salt", length=SALT_BYTES, opts=pulumi.ResourceOptions(parent=self)
            )
            role_secret = secret(role, f"{prefix} login role {role}: username, password, scram_verifier")
            # A pooled role's secret names its first user, <role>_a; rotation alternates from there.
            username = names.login_users(role)[0]
            value: pulumi.Output[str] = pulumi.Output.secret(
                pulumi.Output.all(username, password.result, salt.base64).apply(
                    lambda a: role_secret_json(str(a[0]), str(a[1]), str(a[2]))
                )
            )
            self.role_secret_versions[role] = aws.secretsmanager.SecretVersion(
                # "-v2": the first version written under the rotation rules (the username changed from the
                # role to its _a user, same password); the single-user layout's version goes with its name.
                f"{name}-{role}-v2",
                secret_id=role_secret.id,
                secret_string=value,
                version_stages=["AWSCURRENT", INITIAL_STAGE],
                opts=first_version_options(child),
            )
            self.role_secrets[role] = role_secret
            self.role_secret_arns[role] = role_secret.arn

        self.register_outputs(
            {
                "kms_key_arn": self.kms_key.arn,
                "master_secret_arn": self.master_secret.arn,
                "role_secret_arns": self.role_secret_arns,
            }
        )
