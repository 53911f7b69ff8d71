"""Credentials files: every login role's verifier (the one PgBouncer holds), every problem on its own line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dbctl.core import names, scram
from dbctl.core.errors import DbctlError
from dbctl.schema.credentials import MAX_FILE_BYTES, load_credentials_file, verifiers_from_mapping

PASSWORD = "correct-horse-battery-staple"


def verifier(password: str = PASSWORD, iterations: int = 4096) -> str:
    """A real verifier; another iteration count is written in (scramp refuses to make weak ones)."""
    made = scram.scram_verifier(password, os.urandom(16))
    return made.replace("$4096:", f"${iterations}:", 1)


def full(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {role: verifier() for role in names.LOGIN_ROLES}
    data.update(overrides)
    return data


def problems(data: object) -> list[str]:
    with pytest.raises(DbctlError) as err:
        verifiers_from_mapping(data, "credentials file c.json")
    lines = str(err.value).splitlines()
    assert all(line.startswith("credentials file c.json: ") for line in lines)
    return lines


def test_a_verifier_is_passed_through_unchanged() -> None:
    """A bare verifier of a pooled role is its _a user's (the single-user layout's upgrade)."""
    given = full()
    assert verifiers_from_mapping(given, "x") == {names.login_users(r)[0]: v for r, v in given.items()}


def test_the_secret_username_names_the_user_the_verifier_is_for() -> None:
    """After a rotation spike_app's secret names spike_app_b; spike_app itself (the old layout) means _a."""
    b, legacy = verifier(), verifier()
    got = verifiers_from_mapping(
        full(
            spike_app={"username": "spike_app_b", "scram_verifier": b},
            spike_readonly={"username": "spike_readonly", "scram_verifier": legacy},
        ),
        "x",
    )
    assert got["spike_app_b"] == b and "spike_app_a" not in got and got["spike_readonly_a"] == legacy
    (line,) = problems(full(spike_app={"username": "spike_readonly_a", "scram_verifier": b}))
    assert "spike_app.username names another role; it must be 'spike_app_a' or 'spike_app_b'" in line


def test_a_secret_shaped_entry_gives_its_own_verifier() -> None:
    """The shape of a role secret and of .local/credentials.json: the verifier PgBouncer's userlist holds."""
    pooled = verifier()
    entry = {"username": names.APP_ROLE, "password": PASSWORD, "scram_verifier": pooled}
    assert verifiers_from_mapping(full(spike_app=entry), "x")["spike_app_a"] == pooled
    assert verifiers_from_mapping(full(spike_app={"scram_verifier": pooled}), "x")["spike_app_a"] == pooled


def test_a_plaintext_password_is_refused_with_the_reason() -> None:
    """Today's documented form derived a new verifier: PgBouncer kept the old one and pooled logins failed."""
    (line,) = problems(full(spike_app=PASSWORD))
    assert "spike_app is a plaintext password" in line
    assert "PgBouncer's auth file does not hold" in line
    assert PASSWORD not in line


def test_a_password_that_does_not_fit_its_verifier_is_refused() -> None:
    entry = {"password": "another-password", "scram_verifier": verifier()}
    (line,) = problems(full(spike_readonly=entry))
    assert "spike_readonly.password does not fit its scram_verifier" in line


MD5 = "md5" + "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (MD5, "spike_app is an md5 hash; md5 is refused"),
        ({"password": MD5, "scram_verifier": verifier()}, "spike_app.password is an md5 hash"),
        (verifier().lower(), "spike_app is not a well-formed SCRAM verifier"),
        (" " + verifier(), "spike_app is not a well-formed SCRAM verifier"),
        (verifier() + "\n", "spike_app is not a well-formed SCRAM verifier"),
        ("SCRAM-SHA-256$4096:abc", "spike_app is not a well-formed SCRAM verifier"),
        (verifier(iterations=1000), "spike_app has 1000 iterations, fewer than 4096"),
        (verifier(iterations=2_000_000), "more than 1,000,000"),
        ({"password": "   ", "scram_verifier": verifier()}, "spike_app.password is empty or only whitespace"),
        ("  \t ", "spike_app is empty or only whitespace"),
        ({"password": "pass\x01word", "scram_verifier": verifier()}, "spike_app.password holds control"),
        ("pass\nword", "spike_app holds control characters"),
        ({"scram_verifier": 42}, "spike_app.scram_verifier must be a non-empty string"),
        ({"password": PASSWORD}, "spike_app.scram_verifier must be a non-empty string"),
        ({"scram_verifier": verifier(), "pasword": "x"}, "spike_app: unknown key 'pasword'"),
        ({"scram_verifier": verifier(), "username": "spike_readonly"}, "spike_app.username names another"),
        (42, "spike_app must be its SCRAM verifier"),
    ],
)
def test_each_bad_value_is_one_line_naming_the_role(value: object, expected: str) -> None:
    (line,) = problems(full(spike_app=value))
    assert expected in line


def test_control_characters_are_refused_before_scram_sees_them() -> None:
    """Today a ScramException traceback (SASLprep forbids them)."""
    entry = {"password": "a\x00b", "scram_verifier": verifier()}
    assert "holds control characters" in problems(full(spike_monitor=entry))[0]


def test_every_problem_is_listed_one_per_line() -> None:
    lines = problems({names.APP_ROLE: MD5, names.READONLY_ROLE: PASSWORD, "spike_admin": verifier()})
    assert len(lines) == 4
    assert "no credentials for spike_migrator, spike_monitor" in lines[0]
    assert "unknown role(s) spike_admin" in lines[1]
    assert "spike_app is an md5 hash" in lines[2]
    assert "spike_readonly is a plaintext password" in lines[3]


def test_not_an_object_is_named() -> None:
    assert "expected a JSON object" in problems([])[0]


def test_file_errors_are_one_line_and_never_quote_the_contents(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"spike_app": "topsecret-value", oops}')
    with pytest.raises(DbctlError, match="not valid JSON") as err:
        load_credentials_file(path)
    assert "topsecret" not in str(err.value)
    with pytest.raises(DbctlError, match="cannot read credentials file"):
        load_credentials_file(tmp_path / "missing.json")
    path.write_text(json.dumps(full()))
    assert set(load_credentials_file(path)) == {names.login_users(r)[0] for r in names.LOGIN_ROLES}


def test_a_non_utf8_file_is_one_line(tmp_path: Path) -> None:
    """Today a UnicodeDecodeError traceback."""
    path = tmp_path / "c.json"
    path.write_bytes(b'{"spike_app": "caf\xe9"}')
    with pytest.raises(DbctlError) as err:
        load_credentials_file(path)
    assert str(err.value) == f"credentials file {path} is not UTF-8 (byte 18); save it as UTF-8 JSON"


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(full(padding="x" * MAX_FILE_BYTES)))
    with pytest.raises(DbctlError, match="larger than 64 KiB") as err:
        load_credentials_file(path)
    assert len(str(err.value).splitlines()) == 1
