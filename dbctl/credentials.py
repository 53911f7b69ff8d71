"""The login roles' credentials: each role's password or SCRAM verifier, turned into the verifier to set.

A credentials file is a JSON object mapping each login role (dbctl.names.LOGIN_ROLES) to its plaintext
password or its SCRAM-SHA-256 verifier (``SCRAM-SHA-256$…``). Only verifiers ever go to the server.

A plaintext password gets a verifier whose salt is derived from (role, password) with HMAC-SHA256, so the same
password always gives the same verifier and a re-run can tell that nothing changed (the admin cannot read
pg_authid on RDS to compare). A verifier given as such (from Secrets Manager, random salt) is used as is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path

from dbctl import names, scram
from dbctl.errors import DbctlError


def verifier_for(role: str, secret: str) -> str:
    """The SCRAM verifier to set for role: secret itself if it is one, else one derived from the password."""
    if scram.is_scram_verifier(secret):
        return secret
    salt = hmac.new(secret.encode(), b"dbctl-scram-salt:" + role.encode(), hashlib.sha256).digest()
    return scram.scram_verifier(secret, salt[: scram.SALT_BYTES])


def verifiers_from_mapping(data: object, source: str) -> dict[str, str]:
    """Validate {role: password-or-verifier} for exactly the login roles and return {role: verifier}."""
    if not isinstance(data, Mapping):
        raise DbctlError(
            f"{source}: expected a JSON object mapping each login role ({', '.join(names.LOGIN_ROLES)}) "
            f"to its password or SCRAM verifier, got {type(data).__name__}"
        )
    missing = [role for role in names.LOGIN_ROLES if role not in data]
    if missing:
        raise DbctlError(
            f"{source}: no credentials for {', '.join(missing)}; add a password or verifier for each"
        )
    unknown = sorted(str(key) for key in data if key not in names.LOGIN_ROLES)
    if unknown:
        raise DbctlError(
            f"{source}: unknown role(s) {', '.join(unknown)}; "
            f"the login roles are {', '.join(names.LOGIN_ROLES)}"
        )
    verifiers: dict[str, str] = {}
    for role in names.LOGIN_ROLES:
        value = data[role]
        if not isinstance(value, str) or not value:
            raise DbctlError(f"{source}: {role} must be a non-empty string (a password or a SCRAM verifier)")
        if value.startswith("SCRAM-SHA-256$") and not scram.is_scram_verifier(value):
            raise DbctlError(
                f"{source}: {role} looks like a SCRAM verifier but is malformed; expected "
                "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
            )
        verifiers[role] = verifier_for(role, value)
    return verifiers


def load_credentials_file(path: Path) -> dict[str, str]:
    """Read a credentials file and return {login role: verifier}. Errors never quote the file's contents."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DbctlError(f"cannot read credentials file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DbctlError(
            f"credentials file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "expected an object mapping each login role to its password or verifier"
        ) from None
    return verifiers_from_mapping(data, f"credentials file {path}")
