"""dbctl/core/scram.py: the verifier format, and a SCRAM client with the password authenticates against it."""

import base64
import hashlib
import hmac
import os

import pytest
import scramp

from dbctl.core import scram
from dbctl.core.scram import DEFAULT_ITERATIONS, is_scram_verifier, scram_verifier

SALT = bytes(range(16))


def _parse(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    head, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$")
    iterations, salt = head.split(":")
    stored_key, server_key = keys.split(":")
    return int(iterations), base64.b64decode(salt), base64.b64decode(stored_key), base64.b64decode(server_key)


def _login(verifier: str, password: str) -> bool:
    """A full SCRAM-SHA-256 exchange (scramp client and server); the server holds only the verifier."""
    iterations, salt, stored_key, server_key = _parse(verifier)
    server = scramp.ScramMechanism("SCRAM-SHA-256").make_server(
        lambda _user: (salt, stored_key, server_key, iterations)
    )
    client = scramp.ScramClient(["SCRAM-SHA-256"], "spike_app", password)
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    try:
        server.set_client_final(client.get_client_final())
    except scramp.ScramException:
        return False
    client.set_server_final(server.get_server_final())  # the client verifies the server too
    return True


def test_format_is_postgres_rolpassword() -> None:
    v = scram_verifier("correct horse", SALT)
    assert v.startswith(f"SCRAM-SHA-256${DEFAULT_ITERATIONS}:{base64.b64encode(SALT).decode()}$")
    assert is_scram_verifier(v)
    assert not is_scram_verifier("correct horse")
    assert not is_scram_verifier("md5" + "0" * 32)


def test_keys_follow_rfc_5802() -> None:
    password, iterations = "p4ss-word", 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), SALT, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    assert _parse(scram_verifier(password, SALT, iterations)) == (
        iterations,
        SALT,
        hashlib.sha256(client_key).digest(),
        server_key,
    )


def test_client_with_the_password_authenticates_and_a_wrong_one_does_not() -> None:
    v = scram_verifier("s3cret-Pass_word.~", SALT)
    assert _login(v, "s3cret-Pass_word.~")
    assert not _login(v, "s3cret-Pass_word.")


def test_same_password_and_salt_give_the_same_verifier_and_a_new_salt_another() -> None:
    assert scram_verifier("pw", SALT) == scram_verifier("pw", SALT)
    assert scram_verifier("pw", SALT) != scram_verifier("pw", bytes(reversed(SALT)))


@pytest.mark.parametrize(
    ("password", "salt", "fragment"), [("", SALT, "non-empty"), ("pw", b"short", "8 bytes")]
)
def test_bad_input_is_refused(password: str, salt: bytes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        scram_verifier(password, salt)


def test_password_matches_only_its_own_verifier() -> None:
    made = scram.scram_verifier("pw-1", os.urandom(16))
    assert scram.password_matches("pw-1", made)
    assert not scram.password_matches("pw-2", made)
    assert not scram.password_matches("pw-1", "not a verifier")


def test_verifier_problem_names_malformed_and_weak_verifiers() -> None:
    assert scram.verifier_problem(scram.scram_verifier("pw", os.urandom(16))) is None
    weak = scram.scram_verifier("pw", os.urandom(16)).replace("$4096:", "$100:")
    assert "fewer than 4096" in str(scram.verifier_problem(weak))
    assert "well-formed" in str(scram.verifier_problem("scram-sha-256$4096:x$y:z"))
