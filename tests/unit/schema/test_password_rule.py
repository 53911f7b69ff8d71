"""Which passwords a migrate may set (issue 25, item 1): the source of the verifiers decides, per entry
point. The rule itself runs against a real server in tests/integration/schema/test_password_rule.py."""

from __future__ import annotations

from typing import Any

import pytest

from dbctl.core.errors import DbctlError
from dbctl.schema import commands, deploy
from dbctl.schema.credentials import PasswordSource


@pytest.fixture
def passed(monkeypatch: pytest.MonkeyPatch) -> list[PasswordSource]:
    seen: list[PasswordSource] = []

    def fake_run_migrate(url: str, verifiers: Any, **kwargs: Any) -> deploy.Report:
        seen.append(kwargs["passwords"])
        return deploy.Report()

    monkeypatch.setattr(deploy, "run_migrate", fake_run_migrate)
    return seen


@pytest.mark.parametrize(
    ("auth_source", "reset", "expected"),
    [
        (False, False, PasswordSource.FILE),  # --credentials FILE
        (False, True, PasswordSource.RESET),  # --credentials FILE --reset-passwords
        (True, False, PasswordSource.AUTH_SOURCE),  # --stack: the role secrets PgBouncer reads
    ],
)
def test_each_entry_point_names_its_source(
    passed: list[PasswordSource], auth_source: bool, reset: bool, expected: PasswordSource
) -> None:
    database = commands.Database("postgresql://x", {"spike_app_a": "v"}, auth_source=auth_source)
    commands.migrate(database, reset_passwords=reset)
    assert passed == [expected]


def test_reset_passwords_with_the_stacks_secrets_is_refused(passed: list[PasswordSource]) -> None:
    database = commands.Database("postgresql://x", {"spike_app_a": "v"}, auth_source=True)
    with pytest.raises(DbctlError, match="--reset-passwords goes with --credentials"):
        commands.migrate(database, reset_passwords=True)
    assert passed == []


def test_stack_target_is_the_auth_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """--stack reads the verifiers from the secrets, the auth source the PgBouncer hosts read too."""
    from dbctl.aws import snapshots, stack
    from dbctl.cli import targets

    monkeypatch.setattr(stack, "load", lambda name: object())
    monkeypatch.setattr(stack, "admin_access", lambda target, **_: ("postgresql://x", {"spike_app_a": "v"}))
    monkeypatch.setattr(snapshots, "before_pending_migrations", lambda target, say: None)
    assert targets.admin_database(None, None, "dev", None, None).auth_source
