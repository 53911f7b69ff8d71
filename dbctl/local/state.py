"""The local stack's own files in `.local/`: paths, ports, credentials and the lock (see dbctl.local).

Two rules hold here:
- a file we did not just create is never rewritten on a guess: a partial or corrupt `credentials.json` is one
  error that says how to recover, because new passwords would lock the user out of their data;
- `up`, `down` and `reset` hold `.local/lock` (flock), so two of them at once on one checkout take turns:
  the second waits, saying for whom, instead of generating a second set of passwords.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.core.scram import SALT_BYTES, is_scram_verifier, scram_verifier
from dbctl.postgres.spec import BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER
from dbctl.postgres.tls import write_file
from dbctl.schema.credentials import login_user

LOCK_TIMEOUT_S = 600
RESET_HINT = "`dbctl local reset --yes` (WARNING: This deletes all data!)"


class LocalError(DbctlError):
    """One clear line: what is wrong and how to fix it."""


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / ".local"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "credentials.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "lock"

    @property
    def ca_dir(self) -> Path:
        """The stack's CA: ca.crt (every URL's sslrootcert) and ca.key (0600, never leaves this dir)."""
        return self.state_dir / "tls"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def pgbouncer_dir(self) -> Path:
        return self.state_dir / "pgbouncer"

    @property
    def backup_dir(self) -> Path:
        """`dbctl local backup`'s dumps (0700); `reset` keeps them."""
        return self.state_dir / "backups"

    @property
    def replication_file(self) -> Path:
        """mode 0600: the replication role's password and verifier (the local replica streams as it)."""
        return self.state_dir / "replication.json"

    @property
    def env_file(self) -> Path:
        return self.root / ".env"


def write_private(path: Path, text: str) -> None:
    """Write text to path with mode 0600 from the first byte (no window where it is world-readable)."""
    write_file(path, text.encode("utf-8"), 0o600)


# ---------------------------------------------------------------- the lock


@contextlib.contextmanager
def stack_lock(paths: Paths, echo: Callable[[str], None], timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold .local/lock while changing the stack. The kernel drops a flock when its holder dies, so a
    killed run never leaves the stack locked."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if not waiting:
                    echo(f"another `dbctl local` (pid {holder}) is changing this stack; waiting for it ...")
                    waiting = True
                if time.monotonic() > deadline:
                    raise LocalError(
                        f"another `dbctl local` (pid {holder}) still holds {paths.lock_file} after "
                        f"{timeout:.0f} s; wait for it to finish, or stop it"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- state: the ports a stack was created with


@dataclass(frozen=True)
class State:
    pg_port: int
    pgbouncer_port: int
    postgres_major: int | None = None  # None: the system's PostgreSQL
    # The streaming replica the read pool uses (on by default; `up --no-replica` turns it off) and its port.
    replica: bool = True
    replica_port: int = 0  # 0: PostgreSQL's port + 1

    @property
    def effective_replica_port(self) -> int:
        return self.replica_port or self.pg_port + 1

    @classmethod
    def load(cls, paths: Paths) -> State | None:
        try:
            data = json.loads(paths.state_file.read_text(encoding="utf-8"))
            replica = data.get("replica", True)
            if not isinstance(replica, bool):
                raise ValueError(f"replica is {replica!r}, not true or false")
            major = data.get("postgres_major")
            return cls(
                pg_port=int(data["pg_port"]),
                pgbouncer_port=int(data["pgbouncer_port"]),
                postgres_major=None if major is None else int(major),
                replica=replica,
                replica_port=int(data.get("replica_port", 0)),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LocalError(f"{paths.state_file} is unreadable ({e}); fix it or run {RESET_HINT}") from e

    def save(self, paths: Paths) -> None:
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        data: dict[str, int | bool] = {
            "pg_port": self.pg_port,
            "pgbouncer_port": self.pgbouncer_port,
            "replica": self.replica,
            "replica_port": self.effective_replica_port,
        }
        if self.postgres_major is not None:
            data["postgres_major"] = self.postgres_major
        text = json.dumps(data, indent=2) + "\n"
        if not paths.state_file.exists() or paths.state_file.read_text(encoding="utf-8") != text:
            paths.state_file.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- credentials


# A pooled role's entry may also hold the other user's credential, under the name of its Secrets Manager
# version stage (AWSPREVIOUS: the user the last rotation switched away from; AWSPENDING: the user a rotation
# is preparing). PgBouncer's userlist holds all of them (dbctl.rotation).
PREVIOUS_KEY = "previous"
PENDING_KEY = "pending"


@dataclass(frozen=True)
class Credential:
    """A login role's secret: the active user (username), its password and verifier; for a pooled role
    also the previous and the pending user's credentials, when there are."""

    username: str
    password: str
    scram_verifier: str
    previous: Credential | None = None
    pending: Credential | None = None

    def as_secret(self) -> dict[str, str]:
        """The fields an AWS secret version holds (no previous/pending: those are other versions there)."""
        return {
            names.SECRET_USERNAME_KEY: self.username,
            names.SECRET_PASSWORD_KEY: self.password,
            names.SECRET_VERIFIER_KEY: self.scram_verifier,
        }

    def as_entry(self) -> dict[str, Any]:
        """The entry in credentials.json: as_secret, plus previous and pending when there are."""
        entry: dict[str, Any] = self.as_secret()
        for key, other in ((PREVIOUS_KEY, self.previous), (PENDING_KEY, self.pending)):
            if other is not None:
                entry[key] = other.as_secret()
        return entry

    def verifiers(self) -> dict[str, str]:
        """{login user: verifier} of every user this credential knows; the pending one wins over the
        previous one for the same user (a rotation is giving that user a new password)."""
        known = {}
        for credential in (self.previous, self, self.pending):
            if credential is not None:
                known[credential.username] = credential.scram_verifier
        return known


# The bootstrap superuser, the master role and every login role.
WANTED_ROLES = (BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER, *names.LOGIN_ROLES)


def new_credential(username: str) -> Credential:
    password = secrets.token_urlsafe(24)
    return Credential(username, password, scram_verifier(password, secrets.token_bytes(SALT_BYTES)))


def _parse_credential(role: str, secret: Any, where: str = "") -> Credential:
    """One entry. A pooled role's username may be the role itself (the single-user layout, before
    rotation): that is its `_a` user now, with the same password."""
    where = where or role
    if not isinstance(secret, dict):
        raise ValueError(f"{where} is not an object")
    fields = [secret.get(k) for k in (names.SECRET_USERNAME_KEY, names.SECRET_PASSWORD_KEY)]
    verifier = secret.get(names.SECRET_VERIFIER_KEY)
    username = login_user(role, fields[0])
    if username is None:
        allowed = " or ".join(repr(user) for user in names.login_users(role))
        raise ValueError(f"{where}.{names.SECRET_USERNAME_KEY} is not {allowed}")
    if not isinstance(fields[1], str) or not fields[1]:
        raise ValueError(f"{where}.{names.SECRET_PASSWORD_KEY} is missing or empty")
    if not isinstance(verifier, str) or not is_scram_verifier(verifier):
        raise ValueError(f"{where}.{names.SECRET_VERIFIER_KEY} is not a SCRAM-SHA-256 verifier")
    others: dict[str, Credential] = {}
    for key in (PREVIOUS_KEY, PENDING_KEY):
        if secret.get(key) is not None:
            if where != role or role not in names.ALTERNATING_ROLES:
                raise ValueError(f"{where}.{key}: only a pooled role's entry has one")
            other = _parse_credential(role, secret[key], f"{role}.{key}")
            if other.username == username:
                raise ValueError(f"{role}.{key} names the active user {username}; it must be the other one")
            others[key] = other
    return Credential(username, fields[1], verifier, others.get(PREVIOUS_KEY), others.get(PENDING_KEY))


def _single_user_layout(data: dict[str, Any]) -> bool:
    """True when credentials.json is from before alternating users (a pooled role's username is itself)."""
    return any(
        isinstance(data.get(role), dict) and data[role].get(names.SECRET_USERNAME_KEY) == role
        for role in names.ALTERNATING_ROLES
    )


def save_credentials(paths: Paths, creds: dict[str, Credential]) -> None:
    """Write credentials.json (mode 0600, atomically: a crash leaves the old file or the new one)."""
    text = json.dumps({role: c.as_entry() for role, c in creds.items()}, indent=2)
    write_private(paths.credentials_file, text + "\n")


def load_credentials(paths: Paths) -> dict[str, Credential] | None:
    """credentials.json, checked whole: every role present and well-formed. None when there is no file.

    Anything else is one LocalError; the file is left exactly as it is (it may be the only copy of the
    passwords of a cluster that holds the user's data)."""
    file = paths.credentials_file
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LocalError(f"{file} is unreadable ({e.strerror}); fix its permissions") from None
    try:
        data: Any = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        missing = [role for role in WANTED_ROLES if role not in data]
        if missing:
            raise ValueError(f"no entry for {', '.join(missing)}")
        creds = {role: _parse_credential(role, data[role]) for role in WANTED_ROLES}
    except (UnicodeDecodeError, ValueError) as e:
        problem = "not UTF-8" if isinstance(e, UnicodeDecodeError) else str(e).splitlines()[0]
        raise LocalError(
            f"{file} is incomplete or corrupt ({problem}); it was left untouched: restore it from a backup, "
            f"or start over with {RESET_HINT}"
        ) from None
    if file.stat().st_mode & 0o077:
        os.chmod(file, 0o600)
    return creds


def load_or_create_credentials(paths: Paths, cluster_exists: bool) -> dict[str, Credential]:
    """The stack's credentials; generated (once, mode 0600) only for a stack that has no cluster yet."""
    creds = load_credentials(paths)
    if creds is not None:
        data = json.loads(paths.credentials_file.read_bytes())
        if _single_user_layout(data):
            # The upgrade to alternating users: same passwords, the pooled roles' `_a` users named (the
            # roles step creates them next). The old file stays beside it until the next upgrade.
            write_private(paths.credentials_file.with_name("credentials.single-user.json"), json.dumps(data))
            save_credentials(paths, creds)
        return creds
    if cluster_exists:
        raise LocalError(
            f"{paths.credentials_file} is missing, but this stack's cluster exists: its passwords are "
            f"there only; restore the file from a backup, or start over with {RESET_HINT}"
        )
    creds = {role: new_credential(names.login_users(role)[0]) for role in WANTED_ROLES}
    save_credentials(paths, creds)
    return creds


def load_or_create_replication_credential(paths: Paths, role: str) -> Credential:
    """The replication role's credential: replication.json, made (0600) when missing. Unlike credentials.json
    it may be made anew: `up` sets the role's password from it each time, and no data depends on it."""
    file = paths.replication_file
    try:
        data: Any = json.loads(file.read_bytes().decode("utf-8"))
        return _parse_credential(role, data)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LocalError(
            f"{file} is unreadable or corrupt ({e}); remove it and run `dbctl local up`"
        ) from None
    credential = new_credential(role)
    write_private(file, json.dumps(credential.as_secret(), indent=2) + "\n")
    return credential
