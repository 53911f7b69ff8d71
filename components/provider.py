"""The explicit AWS provider every component uses: region from settings, tags through default_tags."""

import functools
from typing import NamedTuple

import pulumi
import pulumi_aws as aws

from dbctl.stackconfig.settings import PROJECT, StackSettings


def default_tags(settings: StackSettings) -> dict[str, str]:
    """project, stack and owner, plus the stack's extra tags (which may not override those three)."""
    return {**settings.tags, "project": PROJECT, "stack": settings.stack, "owner": settings.owner}


def make_provider(settings: StackSettings) -> aws.Provider:
    return aws.Provider(
        "aws",
        region=settings.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=default_tags(settings)),
        opts=pulumi.ResourceOptions(),
    )


class Account(NamedTuple):
    partition: str
    account_id: str


@functools.cache
def account_of(provider: aws.Provider) -> Account:
    """The partition and account the provider deploys into, asked of AWS once per provider (two calls),
    not once per component that builds ARNs."""
    invoke = pulumi.InvokeOptions(provider=provider)
    return Account(aws.get_partition(opts=invoke).partition, aws.get_caller_identity(opts=invoke).account_id)
