"""The OS side of running a PostgreSQL (or PgBouncer) server here: as which OS user, with what
environment, on which free port, and what /proc says about a pid.

API
---
- When the process runs as root (CI, these machines), servers run as the OS user ``SERVICE_OS_USER``
  (``postgres``, which the Debian package creates) and their directories are chowned to it
  (``chown_tree``); a normal user runs them as themselves. ``service_owner()`` is that user's (uid, gid)
  as root, else None.
- ``runnable_by_service_user(base, *parts) -> Path``: as root, ``base`` itself when the service user can
  reach its ``parts``, else a copy of them under that user's home (a checkout under a 0700 directory).
- ``check_reachable(path)``: as root, raise ``ClusterError`` when the service user can't traverse a parent.
- ``run_as_service_user(args, cwd=, out_file=, timeout=)``: a server binary (initdb, pg_ctl, ...) run as
  the service user with ``server_environment()``, its output through a file.
- ``server_environment()``: the whole environment a server gets (PATH, a UTF-8 C locale, TZ): never our
  DATABASE_URL, PGPASSWORD or other PG* settings, which would sit in /proc/<pid>/environ for its lifetime.
- ``free_port() -> int`` and ``port_is_free(port) -> bool`` (127.0.0.1; a port whose old connections sit
  in TIME_WAIT is free, as it is to PostgreSQL and PgBouncer, which bind with SO_REUSEADDR).
- ``proc_link(pid, name)``: /proc/<pid>/<name> (exe, cwd) resolved, or None.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

from dbctl.postgres.errors import ClusterError
from dbctl.postgres.tls import Owner

# Every server here (the clusters, PgBouncer, the local stack) listens on this address only, and every URL
# handed out for them names it.
HOST = "127.0.0.1"
# The OS user the servers run as when dbctl runs as root (PostgreSQL and PgBouncer both refuse root).
SERVICE_OS_USER = "postgres"


def runs_as_root() -> bool:
    return os.geteuid() == 0


def service_ids() -> tuple[int, int]:
    """(uid, gid) of the service user, or ClusterError naming the package that creates it."""
    try:
        entry = pwd.getpwnam(SERVICE_OS_USER)
    except KeyError:
        raise ClusterError(
            f"running as root, and PostgreSQL refuses to run as root, but there is no OS user "
            f"{SERVICE_OS_USER!r} to run it as; install the Debian package: apt-get install -y postgresql"
        ) from None
    return entry.pw_uid, entry.pw_gid


def service_owner() -> Owner:
    """(uid, gid) of the OS user the servers run as when we are root; None when they run as us."""
    return service_ids() if runs_as_root() else None


def server_environment() -> dict[str, str]:
    """The whole environment of a server process (and initdb/pg_ctl): nothing inherited but PATH.

    A long-running server keeps its environment in /proc/<pid>/environ; a DATABASE_URL or PGPASSWORD
    exported in the shell that ran `dbctl local up` must not end up there."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}


def run_as_service_user(
    args: list[str], *, cwd: Path, out_file: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a server binary in cwd, as the service user when root; stdout is out_file's text afterwards.

    Output goes to a file, never a pipe, because pg_ctl leaves a daemon behind that would keep a pipe open."""
    uid: int | None = None
    gid: int | None = None
    extra_groups: list[int] | None = None
    if runs_as_root():
        uid, gid = service_ids()
        extra_groups = []
    with out_file.open("w") as out:
        result = subprocess.run(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=server_environment(),
            timeout=timeout,
            check=False,
            text=True,
            user=uid,
            group=gid,
            extra_groups=extra_groups,
        )
    result.stdout = out_file.read_text()
    return result


def chown_tree(path: Path) -> None:
    """Give path (recursively) to the service user when we are root; a no-op otherwise."""
    if not runs_as_root():
        return
    uid, gid = service_ids()
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def check_reachable(path: Path) -> None:
    """As root, every parent of path must be traversable by the service user, or initdb fails obscurely."""
    if not runs_as_root():
        return
    for parent in path.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise ClusterError(
                f"{parent} is not traversable by OS user {SERVICE_OS_USER!r}, which runs PostgreSQL "
                f"(we are root); put the cluster elsewhere (e.g. under /tmp) or chmod o+x {parent}"
            )


def _service_user_reaches(path: Path) -> bool:
    """Every parent of path, and path itself, readable and traversable by others (the service user)."""
    resolved = path.resolve()
    needed = stat.S_IROTH | stat.S_IXOTH
    return all(p.stat().st_mode & stat.S_IXOTH for p in resolved.parents) and (
        resolved.stat().st_mode & needed == needed
    )


def runnable_by_service_user(base: Path, *parts: str) -> Path:
    """As root, a directory laid out like `base` whose `parts` (relative paths) the service user can run.

    `base` itself when the service user reaches every part, else a copy of those parts (made once per
    source and modification time, root's and readable by all) under the service user's home: a checkout
    under a 0700 directory, such as `mktemp -d` or /root, holds binaries the server user can't execute."""
    if not runs_as_root() or all(_service_user_reaches(base / part) for part in parts):
        return base
    base = base.resolve()
    stamp = ":".join(f"{part}@{(base / part).stat().st_mtime_ns}" for part in parts)
    key = hashlib.sha256(f"{base}:{stamp}".encode()).hexdigest()[:12]
    service_ids()  # a clear error when there is no service user
    staged = Path(pwd.getpwnam(SERVICE_OS_USER).pw_dir) / "dbctl-bin" / f"{base.name}-{key}"
    if staged.exists():
        return staged
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.parent.chmod(0o755)
    tmp = Path(tempfile.mkdtemp(prefix=f".{base.name}-", dir=staged.parent))
    try:
        for part in parts:
            shutil.copytree(base / part, tmp / part, symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                entry = Path(root) / name
                if not entry.is_symlink():
                    mode = entry.stat().st_mode
                    executable = entry.is_dir() or mode & stat.S_IXUSR
                    entry.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (0o011 if executable else 0))
        tmp.chmod(0o755)
        tmp.rename(staged)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not staged.exists():  # another process may have won the race
            raise
    return staged


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port and a server could bind it.

    SO_REUSEADDR, as PostgreSQL and PgBouncer set it: connections in TIME_WAIT (a minute after a server
    closed them, e.g. at `down`) do not keep the port from them, so they must not make it look busy."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A TCP port on host that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def proc_link(pid: int, name: str) -> Path | None:
    """Where /proc/<pid>/<name> (exe, cwd) points, or None when there is no such process (or no access)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/{name}").removesuffix(" (deleted)"))
    except OSError:
        return None
