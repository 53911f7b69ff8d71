"""SCRAM-SHA-256 verifiers in PostgreSQL's `pg_authid.rolpassword` format.

The verifier is what `ALTER ROLE … PASSWORD` stores and what PgBouncer's auth_file holds; the plaintext
password never has to reach either. scramp does the key derivation (RFC 5802/7677).
"""

import base64
import re

import scramp

# PostgreSQL's own default (scram_iterations); RDS uses it too.
DEFAULT_ITERATIONS = 4096
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
