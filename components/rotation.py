"""Credential rotation: one Secrets Manager rotation function and a schedule on every secret it rotates.

- Schedules: `aws.secretsmanager.SecretRotation` on the master secret (single user: the master logs in
  with its current password and sets the new one on itself; RDS-managed passwords are not an option with
  read replicas, docs/operations.md), on each pooled role's secret (alternating users `<role>_a`/`_b`) and
  on the migrator's (single user, set by the master: CI reads the secret at run time, docs/operations.md),
  every `rotation.scheduleDays` (default 90, the seed's quarter). `rotate_immediately=False`: the first
  rotation comes on the schedule, not in the middle of the `pulumi up` that enables it (the post-deploy
  step must have created the `_a`/`_b` users first). Declaring it still runs Secrets Manager's
  configuration test (testSecret on a throwaway AWSPENDING version, pulumi_aws's `rotate_immediately`
  docstring), which the function recognises and passes without logging in (lambdas/rotation/handler.py);
  each rotation waits for its secret's first version and the function's route to Secrets Manager.
- Function: lambdas/rotation/handler.py, python3.13 on arm64 in the private subnets with its own security
  group: 5432 to the database group, 6543 to the PgBouncer NLB's group (testSecret logs in through
  PgBouncer), 443 to the interface endpoints (Secrets Manager's is the network's) or, without them, out.
  Code: the handler, dbctl's names/roles/rotation/scram modules, the RDS CA bundle and the locked arm64
  dependencies (psycopg, scramp) from lambdas/build.py.
- IAM: DescribeSecret / GetSecretValue / PutSecretValue / UpdateSecretVersionStage on exactly the secrets
  it rotates (GetSecretValue on the master secret too, which role rotations log in with), kms:Decrypt and
  kms:GenerateDataKey on the stack key through Secrets Manager only, VPC/logs basics. Secrets Manager may
  invoke it only for those secrets (a `lambda.Permission` per secret, source ARN and account scoped).
- Timeout 600 s: testSecret waits up to 420 s for the PgBouncer hosts' auth-file refresh (every 5 min).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pulumi
import pulumi_aws as aws

from components import vpc_function
from components.kms import use_via_secrets_manager
from components.provider import account_of
from components.sg_rules import allow_tcp, https_out
from components.vpc_function import VpcFunction, VpcFunctionArgs
from dbctl.core.names import ALTERNATING_ROLES, MIGRATOR_ROLE, PGBOUNCER_PORT, POSTGRES_PORT
from dbctl.stackconfig.settings import StackSettings

HTTPS: Final = 443
TIMEOUT_S: Final = 600
TEST_TIMEOUT_S: Final = 420
MEMORY_MB: Final = 256
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
HANDLER: Final = REPO_ROOT / "lambdas" / "rotation" / "handler.py"
# The handler imports dbctl.core (rotation and what it needs), which imports nothing else of dbctl: the
# package's __init__.py and core/, nothing else of it.
DBCTL_CORE: Final = REPO_ROOT / "dbctl" / "core"


def code_archive(region: str, deps: Path) -> pulumi.Archive:
    """handler.py, dbctl's rotation modules, the RDS CA bundle, the locked dependencies."""
    dbctl = pulumi.AssetArchive(
        {
            "__init__.py": pulumi.FileAsset(str(REPO_ROOT / "dbctl" / "__init__.py")),
            "core": pulumi.AssetArchive(
                {m.name: pulumi.FileAsset(str(m)) for m in sorted(DBCTL_CORE.glob("*.py"))}
            ),
        }
    )
    return vpc_function.code_archive(HANDLER, region, deps, {"dbctl": dbctl})


@dataclass(frozen=True)
class RotationArgs:
    settings: StackSettings
    provider: aws.Provider
    code: pulumi.Archive
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    db_security_group_id: pulumi.Input[str]
    pgbouncer_nlb_security_group_id: pulumi.Input[str]
    endpoints_security_group_id: pulumi.Input[str] | None  # None: the VPC gives egress another way
    master_secret_arn: pulumi.Input[str]
    role_secret_arns: Mapping[str, pulumi.Input[str]]  # every login role; the pooled ones rotate
    kms_key_arn: pulumi.Input[str]
    primary_address: pulumi.Input[str]
    primary_port: pulumi.Input[int]
    pgbouncer_endpoint: pulumi.Input[str]
    pgbouncer_ca_pem: pulumi.Input[str] | None
    # Each rotated secret's first version ("master", each pooled role, the migrator): AWSCURRENT must exist
    # before the configuration test that declaring the rotation runs.
    first_versions: Mapping[str, pulumi.Resource]


class Rotation(pulumi.ComponentResource):
    function_arn: pulumi.Output[str]

    def __init__(self, name: str, args: RotationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spike-land-db:index:Rotation", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)
        _, account = account_of(args.provider)
        prefix = f"spike-land-{s.stack}"
        missing = [role for role in (*ALTERNATING_ROLES, MIGRATOR_ROLE) if role not in args.role_secret_arns]
        if missing:
            raise ValueError(f"RotationArgs.role_secret_arns lacks {', '.join(missing)}")
        role_arns = {role: args.role_secret_arns[role] for role in ALTERNATING_ROLES}
        migrator_arn = args.role_secret_arns[MIGRATOR_ROLE]
        rotated = [args.master_secret_arn, *role_arns.values(), migrator_arn]

        role_secrets = pulumi.Output.all(*role_arns.values()).apply(
            lambda arns: json.dumps(dict(zip(arns, ALTERNATING_ROLES, strict=True)))
        )
        function = VpcFunction(
            f"{name}-fn",
            VpcFunctionArgs(
                provider=args.provider,
                function_name=f"{prefix}-rotation",
                description=f"{prefix}: rotates the master, pooled-role and migrator passwords",
                security_group_description=f"{prefix} credential rotation function",
                role_name_prefix=f"{prefix}-rotation-",
                policy=pulumi.Output.json_dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "RotatedSecrets",
                                "Effect": "Allow",
                                "Action": [
                                    "secretsmanager:DescribeSecret",
                                    "secretsmanager:GetSecretValue",
                                    "secretsmanager:PutSecretValue",
                                    "secretsmanager:UpdateSecretVersionStage",
                                ],
                                "Resource": rotated,
                            },
                            use_via_secrets_manager(
                                args.kms_key_arn, s.region, ["kms:Decrypt", "kms:GenerateDataKey"]
                            ),
                        ],
                    }
                ),
                code=args.code,
                timeout=TIMEOUT_S,
                memory_size=MEMORY_MB,
                vpc_id=args.vpc_id,
                subnet_ids=args.subnet_ids,
                environment={
                    "MASTER_SECRET_ARN": args.master_secret_arn,
                    "MIGRATOR_SECRET_ARN": migrator_arn,
                    "ROLE_SECRETS": role_secrets,
                    "DB_HOST": args.primary_address,
                    "DB_PORT": pulumi.Output.from_input(args.primary_port).apply(str),
                    "DB_NAME": s.database_name,
                    "PGBOUNCER_HOST": args.pgbouncer_endpoint,
                    "PGBOUNCER_PORT": str(PGBOUNCER_PORT),
                    "TEST_TIMEOUT_S": str(TEST_TIMEOUT_S),
                    "PGBOUNCER_CA_PEM": args.pgbouncer_ca_pem or "",
                },
                moved_from=self,
                # What it logs names secrets and users (never a value): the stack key, as the rest.
                log_kms_key_arn=args.kms_key_arn,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        sg_id = function.security_group_id

        # The configuration test needs the function to reach Secrets Manager: the rotations wait for the path.
        path: list[pulumi.Resource] = []
        allow_tcp(
            port=POSTGRES_PORT,
            source=sg_id,
            target=args.db_security_group_id,
            egress=(f"{name}-fn-to-db", "the primary: set the new password"),
            ingress=(f"{name}-db-from-fn", "credential rotation function"),
            opts=child,
        )
        allow_tcp(
            port=PGBOUNCER_PORT,
            source=sg_id,
            target=args.pgbouncer_nlb_security_group_id,
            egress=(f"{name}-fn-to-pgbouncer", "PgBouncer: log in as the pending user (testSecret)"),
            ingress=(f"{name}-pgbouncer-from-fn", "credential rotation function (testSecret)"),
            opts=child,
        )
        if args.endpoints_security_group_id is not None:
            path += allow_tcp(
                port=HTTPS,
                source=sg_id,
                target=args.endpoints_security_group_id,
                egress=(f"{name}-fn-to-endpoints", "Secrets Manager through its interface endpoint"),
                ingress=(f"{name}-endpoints-from-fn", "credential rotation function"),
                opts=child,
            )
        else:
            path += https_out(
                f"{name}-fn-https",
                source=sg_id,
                description="Secrets Manager through the VPC egress (NAT or endpoints)",
                opts=child,
            )

        keys = {"master": args.master_secret_arn, **role_arns, MIGRATOR_ROLE: migrator_arn}
        missing = [key for key in keys if key not in args.first_versions]
        if missing:
            raise ValueError(f"RotationArgs.first_versions lacks {', '.join(missing)}")
        for key, arn in keys.items():
            permission = aws.lambda_.Permission(
                f"{name}-from-secretsmanager-{key}",
                action="lambda:InvokeFunction",
                function=function.function_name,
                principal="secretsmanager.amazonaws.com",
                source_arn=arn,
                source_account=account,
                opts=child,
            )
            aws.secretsmanager.SecretRotation(
                f"{name}-{key}",
                secret_id=arn,
                rotation_lambda_arn=function.function_arn,
                rotation_rules=aws.secretsmanager.SecretRotationRotationRulesArgs(
                    automatically_after_days=s.rotation.schedule_days
                ),
                rotate_immediately=False,
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(depends_on=[permission, args.first_versions[key], *path])
                ),
            )

        self.function_arn = function.function_arn
        self.register_outputs({"function_arn": self.function_arn})
