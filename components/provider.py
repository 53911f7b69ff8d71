"""The explicit AWS provider every component uses: region from settings, tags through default_tags."""

import weakref
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


# Weak keys: the cache must not keep a provider (and through it everything its program declared) alive
# after the program is done, as many programs run in one process under test.
_ACCOUNTS: weakref.WeakKeyDictionary[aws.Provider, Account] = weakref.WeakKeyDictionary()


def account_of(provider: aws.Provider) -> Account:
    """The partition and account the provider deploys into, asked of AWS once per provider (two calls),
    not once per component that builds ARNs."""
    account = _ACCOUNTS.get(provider)
    if account is None:
        invoke = pulumi.InvokeOptions(provider=provider)
        account = Account(
            aws.get_partition(opts=invoke).partition, aws.get_caller_identity(opts=invoke).account_id
        )
        _ACCOUNTS[provider] = account
    return account
