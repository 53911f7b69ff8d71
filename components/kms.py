"""KMS key policies. Every key this program creates is administered by its own account; IAM policies then
grant its use, and a key adds statements only for the services that must use it directly."""

import json
from typing import Any


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
