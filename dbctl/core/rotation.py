"""Credential rotation with no downtime: the steps the local stack and the AWS rotation function share.

A pooled role (dbctl.names.ALTERNATING_ROLES) has two login users, ``<role>_a`` and ``<role>_b``; its secret
names the active one. A rotation follows Secrets Manager's four steps:

1. **create**: a new password and SCRAM verifier (random salt) for the role's *inactive* user
   (``next_secret``); on AWS the secret's AWSPENDING version, locally the entry's ``pending``;
2. **set**: that verifier on the server (``set_password``: ``ALTER ROLE`` through the roles step's COPY + DO
   block, so the verifier is in no statement text, log line or pg_stat_statements row) and in PgBouncer's
   userlist, which holds every user of the role's current, previous and pending versions;
3. **test**: a login as the pending user *through PgBouncer* (``check_login``), the path the app takes;
4. **finish**: the pending version becomes current (the app's next connection logs in as the new user);
   the old active user becomes the previous one and keeps working, untouched, until the next rotation
   prepares it again.

Nobody logs in as the inactive user before the switch, and nothing the active user depends on changes,
so connections opened before a rotation keep working and new logins succeed throughout. A rotation killed
between two steps leaves a stack where both work; running it again resumes at the step it stopped at (each
step is idempotent: the pending secret is reused, ``set_password`` is a no-op when its fingerprint matches).

A single-user role (the master user, whose password RDS's replicas follow by replication) gets its new
password on the same user: ``next_secret`` keeps the username.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from dbctl.core import names, roles
from dbctl.core.errors import DbctlError
from dbctl.core.scram import SALT_BYTES, scram_verifier

PASSWORD_BYTES = 24  # secrets.token_urlsafe(24): 32 URL-safe characters, 192 bits
# The PgBouncer database each pooled role's clients use (its own pool): where testSecret logs in.
POOL_DATABASE = {
    names.APP_ROLE: names.DATABASE_NAME,
    names.READONLY_ROLE: names.READ_POOL_DATABASE,
    names.MONITOR_ROLE: names.DATABASE_NAME,
}


class RotationError(DbctlError, RuntimeError):
    """A rotation step failed; the message names the step and the fix, never a secret."""


@dataclass(frozen=True)
class Secret:
    """One version of a login role's secret: the user it names, its password and that password's verifier."""

    username: str
    password: str
    scram_verifier: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            names.SECRET_USERNAME_KEY: self.username,
            names.SECRET_PASSWORD_KEY: self.password,
            names.SECRET_VERIFIER_KEY: self.scram_verifier,
        }


def inactive_user(role: str, active: str) -> str:
    """The user a rotation of role prepares: the other of <role>_a/<role>_b, or the same single user."""
    users = names.login_users(role)
    if role in names.ALTERNATING_ROLES:
        if active not in users:
            raise RotationError(
                f"{role}'s secret names {active!r}, not one of {', '.join(users)}; "
                "run the post-deploy step (dbctl migrate / dbctl local up) first"
            )
        return users[1 - users.index(active)]
    return active


def verifier_for(password: str) -> str:
    """A SCRAM-SHA-256 verifier of password with a new random salt."""
    return scram_verifier(password, secrets.token_bytes(SALT_BYTES))


def new_secret(user: str) -> Secret:
    """A new random password for user, and its verifier."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    return Secret(user, password, verifier_for(password))


def next_secret(role: str, active: str) -> Secret:
    """createSecret: a new password and verifier for the user that rotates (the inactive one of a pooled
    role; the same one for a single-user role such as the master user)."""
    return new_secret(inactive_user(role, active))


def set_password(conn: psycopg.Connection[tuple[object, ...]], user: str, verifier: str) -> bool:
    """setSecret on the server: user's password := verifier, unless its fingerprint says it already is.
    True when it changed. Runs as the master user (CREATEROLE); the verifier travels by COPY only."""
    row = conn.execute(
        "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = %s", (user,)
    ).fetchone()
    if row is None:
        raise RotationError(f"role {user} does not exist; run the post-deploy step (dbctl migrate) first")
    if row[0] == roles.COMMENT_PREFIX + roles.fingerprint(user, verifier):
        return False
    roles.apply(conn, roles.password_changes(user, verifier))
    return True


def set_own_password(conn: psycopg.Connection[tuple[object, ...]], verifier: str) -> None:
    """setSecret for a single-user role (the master user): its own password := verifier, on a session
    logged in with its current password (no fingerprint COMMENT: a role may not always comment on itself)."""
    row = conn.execute("SELECT session_user").fetchone()
    assert row is not None
    roles.apply(conn, [roles.password_change(str(row[0]), verifier)])


def check_login(
    connect: Callable[[], psycopg.Connection[tuple[object, ...]]],
    expected_user: str,
    *,
    timeout: float = 30,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """testSecret: log in (connect() as the pending user, through PgBouncer) and check session_user.

    Retried until timeout: a read pool's replica may replay the ALTER ROLE a moment after the primary.
    The error names the user and PostgreSQL's/PgBouncer's message (never the password)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect() as conn:
                row = conn.execute("SELECT session_user").fetchone()
            if row == (expected_user,):
                return
            problem = f"logged in as {row[0] if row else '?'}, not {expected_user}"
        except psycopg.Error as e:
            problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if time.monotonic() > deadline:
            raise RotationError(
                f"test: {expected_user} cannot log in with its new password ({problem}); the secret still "
                "names the old user, so nothing is broken: fix the cause and run the rotation again"
            )
        sleep(0.2)
