"""The explicit AWS provider every component uses: region from settings, tags through default_tags."""

import pulumi
import pulumi_aws as aws

from components.settings import PROJECT, StackSettings


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
