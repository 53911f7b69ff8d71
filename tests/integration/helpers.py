"""Shared helpers for the post-deploy step's integration tests."""

from __future__ import annotations

from pathlib import Path

from dbctl import deploy
from dbctl.credentials import verifiers_from_mapping
from tests.integration.conftest import FreshDatabase, secret_shaped


def migrate_in_process(
    db: FreshDatabase, passwords: dict[str, str], migrations_dir: Path | None = None
) -> deploy.Report:
    verifiers = verifiers_from_mapping(secret_shaped(passwords), "test credentials")
    if migrations_dir is None:
        return deploy.run_migrate(db.admin_conninfo, verifiers)
    return deploy.run_migrate(db.admin_conninfo, verifiers, migrations_dir=migrations_dir)
