"""The spike-land-db policy pack: every validator in validators.py, mandatory.

Run with `pulumi preview --policy-pack policy` (or `pulumi up --policy-pack policy`). The Pulumi CLI runs this
directory with runpy, which puts it on sys.path: hence the flat `import validators`. The checks themselves are
plain functions in validators.py, type-checked and unit-tested there; this file only adapts them.

A stack is "prod" when the stack name in the resource's URN is one of the policy's `prodStacks` config
(default ["prod"]); override it with `--policy-pack-config` if your prod stack has another name.
"""

from typing import Any

import validators  # type: ignore[import-not-found]
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

DEFAULT_PROD_STACKS = ["prod"]
PROD_CONFIG = PolicyConfigSchema(
    properties={
        "prodStacks": {
            "type": "array",
            "items": {"type": "string"},
            "default": DEFAULT_PROD_STACKS,
            "description": "Stack names that get the prod-only rules.",
        }
    }
)


def _wrap(policy: Any) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        prod_stacks = args.get_config().get("prodStacks", DEFAULT_PROD_STACKS)
        prod = validators.stack_from_urn(args.urn) in prod_stacks
        for message in policy.check(args.resource_type, args.props, prod):
            report_violation(f"[{policy.name}] {args.name}: {message}", None)

    return ResourceValidationPolicy(
        name=policy.name,
        description=policy.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PROD_CONFIG if policy.name.startswith("prod-") else None,
    )


POLICIES: list[Policy] = [_wrap(policy) for policy in validators.POLICIES]

PolicyPack(
    name="spike-land-db",
    description="What must never ship: unencrypted data, public databases, weak prod durability, open ports.",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
