"""The running program's stack config, read through Pulumi and validated by dbctl.stackconfig.settings."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from dbctl.stackconfig.settings import (
    PROJECT,
    REGION_KEY,
    StackSettings,
    known_keys,
    load_settings,
    parse_value,
)


def from_pulumi_config() -> StackSettings:
    """Read this program's stack config (Pulumi) and validate it. Call once, in __main__.py."""
    config = pulumi.Config(PROJECT)
    # Every project key the stack file sets, so that a misspelt key is reported, not silently ignored.
    given = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{PROJECT}:"
    written = {k.removeprefix(prefix) for k in given if k.startswith(prefix)}
    raw: dict[str, Any] = {}
    for key in sorted(written | set(known_keys())):
        value = config.get(key)
        if value is not None:
            raw[key] = parse_value(value)
    region = pulumi.Config("aws").get("region")
    if region is not None:
        raw[REGION_KEY] = region
    return load_settings(pulumi.get_stack(), raw)
