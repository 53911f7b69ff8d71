"""KMS key policies. Every key this program creates is administered by its own account; IAM policies then
grant its use, and a key adds statements only for the services that must use it directly."""

import json
from collections.abc import Sequence
from typing import Any

import pulumi


def key_policy(partition: str, account: str, *statements: dict[str, Any]) -> str:
    """The key policy JSON: the account administers the key, plus `statements` (in a key policy "*" means
    this key)."""
    administers = {
        "Sid": "AccountAdministers",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [administers, *statements]})


def use_via(
    service: str,
    key: pulumi.Input[str] | Sequence[pulumi.Input[str]],
    region: str,
    actions: Sequence[str],
    sid: str,
) -> dict[str, Any]:
    """An IAM statement: `actions` on the stack key only when `service` (secretsmanager, sqs) in `region`
    asks for them (to read or write something encrypted with it), never directly."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": key,
        "Condition": {"StringEquals": {"kms:ViaService": f"{service}.{region}.amazonaws.com"}},
    }


def use_via_secrets_manager(
    key: pulumi.Input[str] | Sequence[pulumi.Input[str]],
    region: str,
    actions: Sequence[str],
    sid: str = "SecretKeyViaSecretsManager",
) -> dict[str, Any]:
    """`use_via` Secrets Manager: to read or write a secret encrypted with the stack key."""
    return use_via("secretsmanager", key, region, actions, sid)
