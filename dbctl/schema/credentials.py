"""The login roles' credentials: each role's SCRAM verifier, the one PgBouncer holds too.

A credentials file is a JSON object mapping each login role (dbctl.names.LOGIN_ROLES) to either

- its SCRAM-SHA-256 verifier (``"SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"``), or
- an object in the shape of the role's secret (Secrets Manager's, or an entry of the local stack's
  ``.local/credentials.json``): ``{"scram_verifier": …, "password": …, "username": …}``; ``password`` and
  ``username`` are optional and, when given, checked (the password must fit the verifier).

A pooled role (dbctl.names.ALTERNATING_ROLES) logs in as one of two users, ``<role>_a`` or ``<role>_b``; its
secret's ``username`` names the active one. A bare verifier, or a ``username`` naming the role itself (the
single-user layout, before rotation), is the ``_a`` user's: the upgrade keeps the password and renames the
login. The result maps each login **user** to its verifier.

A plaintext password alone is refused. Its verifier would need a salt, and any salt dbctl picks differs from
the one in the verifier PgBouncer holds (locally ``.local/credentials.json`` feeds its userlist, on AWS the
secret's ``scram_verifier``): every pooled login would then fail. A salt derived from the password would also
make the role's fingerprint COMMENT (readable by every role) a password-guessing oracle.

Every problem is reported, one line each, naming the role; no message quotes a secret.

**Which passwords a migrate may set** (``PasswordSource``, checked by ``refuse_overwrites`` before anything
changes): a password must never move backwards because an operator passed an old file. PgBouncer checks
logins against its auth source (a stack's role secrets, or the local stack's ``.local/credentials.json``), so
the post-deploy step sets a login user's password only when the user has none that dbctl (or a rotation)
set, i.e. no fingerprint COMMENT (a new user), or when its verifiers come from that auth source itself
(``--stack``, ``dbctl local up``). A ``--credentials`` file that would change an existing password is refused,
naming the users: change it by rotation, or with ``--reset-passwords`` when the auth source already holds
the new verifier.
"""

from __future__ import annotations

import enum
import json
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import psycopg

from dbctl.core import names, roles, scram
from dbctl.core.errors import DbctlError

MAX_FILE_BYTES = 64 * 1024
_MD5 = re.compile(r"^md5[0-9a-fA-F]{32}$")
_SCRAM_PREFIX = "scram-sha-256$"
_OBJECT_KEYS = frozenset({names.SECRET_USERNAME_KEY, names.SECRET_PASSWORD_KEY, names.SECRET_VERIFIER_KEY})
_FORMS = (
    f'its SCRAM verifier, or {{"{names.SECRET_VERIFIER_KEY}": …, "{names.SECRET_PASSWORD_KEY}": …}} '
    "as in its secret or .local/credentials.json"
)


def _password_problem(value: str) -> str | None:
    if _MD5.fullmatch(value):
        return "is an md5 hash; md5 is refused (auth is SCRAM only): give the role's SCRAM verifier"
    if not value.strip():
        return "is empty or only whitespace"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "holds control characters (tab, newline, NUL, …), which SASLprep forbids; choose another"
    return None


def _verifier_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    return scram.verifier_problem(value)


def login_user(role: str, username: object) -> str | None:
    """The login user a secret's username means for role (None: not one of role's users)."""
    users = names.login_users(role)
    if username == role:
        return users[0]
    return username if isinstance(username, str) and username in users else None


def _role_verifier(role: str, value: object) -> tuple[str | None, list[str]]:
    """(verifier, problems) for one role's entry."""
    if isinstance(value, str):
        if _SCRAM_PREFIX in value.lower():
            problem = scram.verifier_problem(value)
            return (value, []) if problem is None else (None, [f"{role} {problem}"])
        problem = _password_problem(value)
        if problem is not None:
            return None, [f"{role} {problem}"]
        return None, [
            f"{role} is a plaintext password; a password alone would get a new verifier that PgBouncer's "
            f"auth file does not hold, and pooled logins would fail: give {_FORMS}"
        ]
    if not isinstance(value, Mapping):
        return None, [f"{role} must be {_FORMS}; got {type(value).__name__}"]
    problems = [f"{role}: unknown key {key!r}" for key in sorted(map(str, value)) if key not in _OBJECT_KEYS]
    verifier = value.get(names.SECRET_VERIFIER_KEY)
    problem = _verifier_problem(verifier)
    if problem is not None:
        problems.append(f"{role}.{names.SECRET_VERIFIER_KEY} {problem}")
    if login_user(role, value.get(names.SECRET_USERNAME_KEY, role)) is None:
        allowed = " or ".join(repr(user) for user in names.login_users(role))
        problems.append(f"{role}.{names.SECRET_USERNAME_KEY} names another role; it must be {allowed}")
    if names.SECRET_PASSWORD_KEY in value:
        password = value[names.SECRET_PASSWORD_KEY]
        password_problem = (
            "must be a string" if not isinstance(password, str) else _password_problem(password)
        )
        if password_problem is not None:
            problems.append(f"{role}.{names.SECRET_PASSWORD_KEY} {password_problem}")
        elif problem is None and not scram.password_matches(str(password), str(verifier)):
            problems.append(
                f"{role}.{names.SECRET_PASSWORD_KEY} does not fit its {names.SECRET_VERIFIER_KEY}; "
                "the application could not log in with it: give the pair from one secret"
            )
    return (str(verifier) if not problems else None), problems


def verifiers_from_mapping(data: object, source: str) -> dict[str, str]:
    """Validate {role: verifier or secret-shaped object} for exactly the login roles; return {login user:
    verifier} (spike_app's entry under spike_app_a or spike_app_b, as its username says).

    Raises one DbctlError listing every problem, one line each, each line starting with source.
    """
    if not isinstance(data, Mapping):
        raise DbctlError(
            f"{source}: expected a JSON object mapping each login role ({', '.join(names.LOGIN_ROLES)}) "
            f"to its SCRAM verifier, got {type(data).__name__}"
        )
    problems: list[str] = []
    missing = [role for role in names.LOGIN_ROLES if role not in data]
    if missing:
        problems.append(f"no credentials for {', '.join(missing)}; add each role's SCRAM verifier")
    unknown = sorted(str(key) for key in data if key not in names.LOGIN_ROLES)
    if unknown:
        problems.append(
            f"unknown role(s) {', '.join(unknown)}; the login roles are {', '.join(names.LOGIN_ROLES)}"
        )
    verifiers: dict[str, str] = {}
    for role in names.LOGIN_ROLES:
        if role not in data:
            continue
        value = data[role]
        verifier, role_problems = _role_verifier(role, value)
        problems += role_problems
        if verifier is not None:
            username = value.get(names.SECRET_USERNAME_KEY, role) if isinstance(value, Mapping) else role
            verifiers[str(login_user(role, username))] = verifier
    if problems:
        raise DbctlError("\n".join(f"{source}: {problem}" for problem in problems))
    return verifiers


def load_credentials_file(path: Path) -> dict[str, str]:
    """Read a credentials file and return {login role: verifier}. Errors never quote the file's contents."""
    source = f"credentials file {path}"
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise DbctlError(f"cannot read {source}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise DbctlError(
            f"{source} is larger than {MAX_FILE_BYTES // 1024} KiB; it should hold four roles' verifiers "
            "(is it the right file?)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DbctlError(f"{source} is not UTF-8 (byte {exc.start}); save it as UTF-8 JSON") from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DbctlError(
            f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "expected an object mapping each login role to its SCRAM verifier"
        ) from None
    return verifiers_from_mapping(parsed, source)


class PasswordSource(enum.Enum):
    """Where the verifiers a migrate is given come from, which decides the passwords it may set."""

    AUTH_SOURCE = "auth source"  # what PgBouncer checks: the role secrets (--stack), .local/credentials.json
    FILE = "file"  # --credentials: sets only the passwords of users that have none dbctl set
    RESET = "reset"  # --credentials with --reset-passwords: the operator says the auth source holds them


def overwritten_users(
    conn: psycopg.Connection[tuple[object, ...]], verifiers: Mapping[str, str]
) -> list[str]:
    """The login users whose password dbctl (the post-deploy step or a rotation) set, to another verifier
    than the one given: the users a migrate from a file would move to another password."""
    rows = conn.execute(
        "SELECT rolname, coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles"
        " WHERE rolname = ANY(%s) ORDER BY rolname",
        (sorted(verifiers),),
    ).fetchall()
    return [
        str(user)
        for user, comment in rows
        if str(comment).startswith(roles.COMMENT_PREFIX)
        and comment != roles.COMMENT_PREFIX + roles.fingerprint(str(user), verifiers[str(user)])
    ]


def refuse_overwrites(
    conn: psycopg.Connection[tuple[object, ...]], verifiers: Mapping[str, str], source: PasswordSource
) -> None:
    """Raise one DbctlError line when verifiers from a file would change a password dbctl already set."""
    if source is not PasswordSource.FILE:
        return
    users = overwritten_users(conn, verifiers)
    if users:
        raise DbctlError(
            f"the credentials would change the existing password of {', '.join(users)}, and an older file "
            "would undo a rotation and fail every pooled login; nothing was changed: give the current "
            "verifiers (the role secrets, or .local/credentials.json), change a password by rotation "
            "(`dbctl local rotate`, or the secret's rotation on AWS), or pass --reset-passwords once "
            "PgBouncer's auth source holds the new ones"
        )
