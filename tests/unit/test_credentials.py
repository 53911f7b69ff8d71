"""Credentials files: every login role, a clear error otherwise, stable verifiers for plaintext passwords."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dbctl import names, scram
from dbctl.credentials import load_credentials_file, verifier_for, verifiers_from_mapping
from dbctl.errors import DbctlError


def full(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {role: f"pw-{role}" for role in names.LOGIN_ROLES}
    data.update(overrides)
    return data


def test_plaintext_gets_a_stable_verifier_per_role() -> None:
    first = verifier_for(names.APP_ROLE, "hunter2-long-password")
    assert scram.is_scram_verifier(first)
    assert verifier_for(names.APP_ROLE, "hunter2-long-password") == first
    assert verifier_for(names.READONLY_ROLE, "hunter2-long-password") != first
    assert verifier_for(names.APP_ROLE, "another-password") != first
    assert "hunter2" not in first


def test_a_verifier_is_passed_through() -> None:
    verifier = scram.scram_verifier("pw", os.urandom(16))
    assert verifiers_from_mapping(full(spike_app=verifier), "x")[names.APP_ROLE] == verifier


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({names.APP_ROLE: "x"}, "no credentials for spike_migrator, spike_readonly, spike_monitor"),
        (full(spike_admin="x"), "unknown role(s) spike_admin"),
        (full(spike_app=""), "spike_app must be a non-empty string"),
        (full(spike_app=42), "spike_app must be a non-empty string"),
        (full(spike_app="SCRAM-SHA-256$4096:abc"), "spike_app looks like a SCRAM verifier but is malformed"),
    ],
)
def test_bad_mappings_are_named(data: object, message: str) -> None:
    with pytest.raises(DbctlError) as err:
        verifiers_from_mapping(data, "credentials file c.json")
    assert message in str(err.value)
    assert str(err.value).startswith("credentials file c.json")


def test_file_errors_never_quote_the_contents(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"spike_app": "topsecret-value", oops}')
    with pytest.raises(DbctlError, match="not valid JSON") as err:
        load_credentials_file(path)
    assert "topsecret" not in str(err.value)
    with pytest.raises(DbctlError, match="cannot read credentials file"):
        load_credentials_file(tmp_path / "missing.json")
    path.write_text(json.dumps(full()))
    assert set(load_credentials_file(path)) == set(names.LOGIN_ROLES)
