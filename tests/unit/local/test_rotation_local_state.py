""".local/credentials.json with alternating users: the upgrade of a single-user file, previous/pending."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from dbctl.core import names
from dbctl.local.state import (
    WANTED_ROLES,
    Credential,
    LocalError,
    Paths,
    load_credentials,
    load_or_create_credentials,
    new_credential,
    save_credentials,
)


def single_user_file(paths: Paths) -> dict[str, dict[str, str]]:
    """credentials.json as the code before alternating users wrote it: every username is its role."""
    data = {role: new_credential(role).as_secret() for role in WANTED_ROLES}
    paths.state_dir.mkdir(parents=True)
    paths.credentials_file.write_text(json.dumps(data))
    return data


def test_a_single_user_file_upgrades_keeping_every_password(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    old = single_user_file(paths)
    creds = load_or_create_credentials(paths, cluster_exists=True)
    for role in WANTED_ROLES:
        assert creds[role].username == names.login_users(role)[0]  # spike_app -> spike_app_a
        assert creds[role].password == old[role]["password"]
        assert creds[role].scram_verifier == old[role]["scram_verifier"]
    on_disk = json.loads(paths.credentials_file.read_text())
    assert on_disk[names.APP_ROLE]["username"] == "spike_app_a"
    assert stat.S_IMODE(paths.credentials_file.stat().st_mode) == 0o600
    kept = paths.state_dir / "credentials.single-user.json"
    assert json.loads(kept.read_text()) == old and stat.S_IMODE(kept.stat().st_mode) == 0o600
    # Upgraded once: a second load changes nothing.
    before = paths.credentials_file.read_bytes()
    assert load_or_create_credentials(paths, cluster_exists=True) == creds
    assert paths.credentials_file.read_bytes() == before


def test_previous_and_pending_round_trip_and_the_pending_user_wins(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    creds = {role: new_credential(names.login_users(role)[0]) for role in WANTED_ROLES}
    old_b, new_b = new_credential("spike_app_b"), new_credential("spike_app_b")
    creds[names.APP_ROLE] = Credential(**{**vars(creds[names.APP_ROLE]), "previous": old_b, "pending": new_b})
    save_credentials(paths, creds)
    loaded = load_credentials(paths)
    assert loaded == creds
    app = loaded[names.APP_ROLE] if loaded else None
    assert app is not None
    # During a rotation the inactive user's new verifier replaces its old one (userlist, roles step).
    assert app.verifiers() == {"spike_app_a": app.scram_verifier, "spike_app_b": new_b.scram_verifier}
    assert "previous" not in app.as_secret() and app.as_entry()["pending"]["username"] == "spike_app_b"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"pending": "same"}, "spike_app.pending names the active user spike_app_a"),
        ({"username": "spike_readonly_a"}, "spike_app.username is not 'spike_app_a' or 'spike_app_b'"),
        ({"previous": {"username": "spike_app_c"}}, "spike_app.previous.username is not"),
    ],
)
def test_a_broken_pooled_entry_is_one_error_and_the_file_is_left_alone(
    tmp_path: Path, entry: dict[str, object], problem: str
) -> None:
    paths = Paths(tmp_path)
    creds = {role: new_credential(names.login_users(role)[0]) for role in WANTED_ROLES}
    save_credentials(paths, creds)
    data = json.loads(paths.credentials_file.read_text())
    app = data[names.APP_ROLE]
    for key, value in entry.items():
        if value == "same":
            app[key] = dict(app)
        elif isinstance(value, dict):
            app[key] = {**app, **value}
        else:
            app[key] = value
    text = json.dumps(data)
    paths.credentials_file.write_text(text)
    with pytest.raises(LocalError, match="incomplete or corrupt") as caught:
        load_credentials(paths)
    assert problem in str(caught.value)
    assert app["password"] not in str(caught.value)
    assert paths.credentials_file.read_text() == text
