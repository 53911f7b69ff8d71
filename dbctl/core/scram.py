"""SCRAM-SHA-256 verifiers in PostgreSQL's `pg_authid.rolpassword` format.

The verifier is what `ALTER ROLE … PASSWORD` stores and what PgBouncer's auth_file holds; the plaintext
password never has to reach either. scramp does the key derivation (RFC 5802/7677) and SASLprep.
"""

import base64
import binascii
import hmac
import re

import scramp

# PostgreSQL's own default (scram_iterations); RDS uses it too. Fewer is refused as too cheap to guess.
DEFAULT_ITERATIONS = 4096
MIN_ITERATIONS = 4096
# A sanity cap: each login (server and PgBouncer) costs this many HMACs; a million already takes ~0.5 s.
MAX_ITERATIONS = 1_000_000
SALT_BYTES = 16

_VERIFIER = re.compile(
    r"^SCRAM-SHA-256\$(?P<iterations>[1-9][0-9]*):(?P<salt>[A-Za-z0-9+/]+={0,2})"
    r"\$(?P<stored_key>[A-Za-z0-9+/]{43}=):(?P<server_key>[A-Za-z0-9+/]{43}=)$"
)

_MECHANISM = scramp.ScramMechanism("SCRAM-SHA-256")


def scram_verifier(password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Return `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for password and salt."""
    if not password:
        raise ValueError("a SCRAM verifier needs a non-empty password")
    if len(salt) < 8:
        raise ValueError(f"a SCRAM salt needs at least 8 bytes, got {len(salt)}")
    salt, stored_key, server_key, iterations = _MECHANISM.make_auth_info(
        password, iteration_count=iterations, salt=salt
    )
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def is_scram_verifier(value: str) -> bool:
    """True when value is a well-formed SCRAM-SHA-256 verifier (and so not a plaintext password)."""
    return _VERIFIER.fullmatch(value) is not None


def verifier_problem(value: str) -> str | None:
    """Why value is not a verifier to accept (malformed, iterations below MIN_ITERATIONS), or None."""
    match = _VERIFIER.fullmatch(value)
    if match is None:
        return (
            "is not a well-formed SCRAM verifier; expected "
            "SCRAM-SHA-256$<iterations>:<base64 salt>$<StoredKey>:<ServerKey> (case and spacing exact)"
        )
    iterations = int(match["iterations"])
    if iterations < MIN_ITERATIONS:
        return (
            f"has {iterations} iterations, fewer than {MIN_ITERATIONS} (PostgreSQL's default); "
            "make a new verifier"
        )
    if iterations > MAX_ITERATIONS:
        return f"has {iterations} iterations, more than {MAX_ITERATIONS:,}; make a new verifier"
    try:
        salt = base64.b64decode(match["salt"], validate=True)
    except binascii.Error:
        return "has a salt that is not valid base64; make a new verifier"
    if len(salt) < 8:
        return f"has a {len(salt)}-byte salt, fewer than 8; make a new verifier"
    return None


def password_matches(password: str, verifier: str) -> bool:
    """True when password yields verifier (same salt and iterations): the client's password fits it."""
    match = _VERIFIER.fullmatch(verifier)
    if match is None:
        return False
    salt = base64.b64decode(match["salt"])
    try:
        _, stored_key, server_key, _ = _MECHANISM.make_auth_info(
            password, iteration_count=int(match["iterations"]), salt=salt
        )
    except scramp.ScramException:
        return False
    b64 = base64.b64encode
    return hmac.compare_digest(
        f"{b64(stored_key).decode()}:{b64(server_key).decode()}",
        f"{match['stored_key']}:{match['server_key']}",
    )
