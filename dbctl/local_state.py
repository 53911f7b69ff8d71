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

import click

from dbctl import names
from dbctl.cluster import BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER
from dbctl.scram import SALT_BYTES, is_scram_verifier, scram_verifier
from dbctl.tls import write_file

LOCK_TIMEOUT_S = 600
RESET_HINT = "`dbctl local reset --yes` (WARNING: This deletes all data!)"


class LocalError(click.ClickException):
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


@dataclass(frozen=True)
class Credential:
    username: str
    password: str
    scram_verifier: str

    def as_secret(self) -> dict[str, str]:
        return {
            names.SECRET_USERNAME_KEY: self.username,
            names.SECRET_PASSWORD_KEY: self.password,
            names.SECRET_VERIFIER_KEY: self.scram_verifier,
        }


# The bootstrap superuser, the master role and every login role.
WANTED_ROLES = (BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER, *names.LOGIN_ROLES)


def new_credential(username: str) -> Credential:
    password = secrets.token_urlsafe(24)
    return Credential(username, password, scram_verifier(password, secrets.token_bytes(SALT_BYTES)))


def _parse_credential(role: str, secret: Any) -> Credential:
    if not isinstance(secret, dict):
        raise ValueError(f"{role} is not an object")
    fields = [secret.get(k) for k in (names.SECRET_USERNAME_KEY, names.SECRET_PASSWORD_KEY)]
    verifier = secret.get(names.SECRET_VERIFIER_KEY)
    if fields[0] != role:
        raise ValueError(f"{role}.{names.SECRET_USERNAME_KEY} is not {role!r}")
    if not isinstance(fields[1], str) or not fields[1]:
        raise ValueError(f"{role}.{names.SECRET_PASSWORD_KEY} is missing or empty")
    if not isinstance(verifier, str) or not is_scram_verifier(verifier):
        raise ValueError(f"{role}.{names.SECRET_VERIFIER_KEY} is not a SCRAM-SHA-256 verifier")
    return Credential(role, fields[1], verifier)


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
        return creds
    if cluster_exists:
        raise LocalError(
            f"{paths.credentials_file} is missing, but this stack's cluster exists: its passwords are "
            f"there only; restore the file from a backup, or start over with {RESET_HINT}"
        )
    creds = {role: new_credential(role) for role in WANTED_ROLES}
    text = json.dumps({role: c.as_secret() for role, c in creds.items()}, indent=2)
    write_private(paths.credentials_file, text + "\n")
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
