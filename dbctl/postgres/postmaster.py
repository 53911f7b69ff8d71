"""A cluster's server process: start, stop, reload, wait until it accepts connections, find its pid.

API (each takes the ``ClusterSpec``; ``Cluster`` has them as methods)
---
- ``run(cluster, args, timeout=)``: a server binary (initdb, pg_ctl, pg_basebackup) run in ``base_dir`` as
  the service user (see ``dbctl.postgres.osproc``), its output in ``base_dir/pg_ctl.out``.
- ``start(cluster)``, ``stop(cluster)``, ``reload(cluster)``, ``is_running(cluster)``,
  ``wait_ready(cluster, timeout)``. ``postmaster_pid`` trusts ``postmaster.pid`` only when that pid is a
  ``postgres`` whose working directory is this data dir, so a stale pid file never makes ``stop`` signal
  another process (``start`` removes such a file).
- ``log_tail(cluster)``: the end of the server log, for error messages.
"""

from __future__ import annotations

import socket
import subprocess
import time

from dbctl.postgres.errors import ClusterError
from dbctl.postgres.osproc import port_is_free, proc_link, run_as_service_user
from dbctl.postgres.spec import ClusterSpec


def run(cluster: ClusterSpec, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a server binary in base_dir, as the service user when root; stdout is its output."""
    return run_as_service_user(
        args, cwd=cluster.base_dir, out_file=cluster.base_dir / "pg_ctl.out", timeout=timeout
    )


def log_tail(cluster: ClusterSpec, lines: int = 20) -> str:
    try:
        return "\n".join(cluster.log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def postmaster_pid(cluster: ClusterSpec) -> int | None:
    """The pid in postmaster.pid when that process is a postgres running in this data dir, else None.

    Exact, unlike `pg_ctl status` (any live pid will do there): the postmaster's working directory is
    its data dir, so a stale file whose pid was reused by another process is never taken for it."""
    try:
        pid = int((cluster.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    exe, cwd = proc_link(pid, "exe"), proc_link(pid, "cwd")
    if exe is None or cwd is None or exe.name != "postgres":
        return None
    return pid if cwd == cluster.data_dir.resolve() else None


def is_running(cluster: ClusterSpec) -> bool:
    return postmaster_pid(cluster) is not None


def start(cluster: ClusterSpec, timeout: float = 60) -> None:
    if is_running(cluster):
        return
    if not cluster.data_dir.is_dir():
        raise ClusterError(f"no cluster in {cluster.data_dir}; create it first")
    # Not our postmaster (is_running said so): a stale file, which PostgreSQL would refuse to start over
    # when its pid now belongs to another live process.
    (cluster.data_dir / "postmaster.pid").unlink(missing_ok=True)
    if not cluster.on_socket and not port_is_free(cluster.port, cluster.host):
        raise ClusterError(
            f"port {cluster.host}:{cluster.port} is taken by another process; stop it or pick another port"
        )
    result = run(
        cluster,
        [
            cluster.binary("pg_ctl"),
            "start",
            "--pgdata",
            str(cluster.data_dir),
            "--log",
            str(cluster.log_file),
            "--wait",
            "--timeout",
            str(int(timeout)),
        ],
        timeout=timeout + 10,
    )
    if result.returncode != 0:
        raise ClusterError(
            f"PostgreSQL did not start (pg_ctl exit {result.returncode}): {result.stdout.strip()}\n"
            f"server log {cluster.log_file}:\n{log_tail(cluster)}"
        )
    wait_ready(cluster, timeout)


def stop(cluster: ClusterSpec, timeout: float = 60) -> None:
    if not is_running(cluster):
        return
    result = run(
        cluster,
        [
            cluster.binary("pg_ctl"),
            "stop",
            "--pgdata",
            str(cluster.data_dir),
            "--mode",
            "fast",
            "--wait",
            "-t",
            str(int(timeout)),
        ],
        timeout=timeout + 10,
    )
    if result.returncode != 0:
        raise ClusterError(f"PostgreSQL did not stop: {result.stdout.strip()}")


def reload(cluster: ClusterSpec) -> None:
    """pg_ctl reload: the server re-reads its config files and TLS certificate."""
    if not is_running(cluster):
        return
    result = run(cluster, [cluster.binary("pg_ctl"), "reload", "--pgdata", str(cluster.data_dir)])
    if result.returncode != 0:
        raise ClusterError(f"PostgreSQL did not reload: {result.stdout.strip()}")


def wait_ready(cluster: ClusterSpec, timeout: float = 30) -> None:
    """Wait until the server accepts TCP connections on host:port (authentication not attempted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cluster.on_socket:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(1)
                    sock.connect(f"{cluster.host}/.s.PGSQL.{cluster.port}")
                    return
            with socket.create_connection((cluster.host, cluster.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"PostgreSQL at {cluster.host}:{cluster.port} not ready after {timeout:.0f} s; "
                    f"server log {cluster.log_file}:\n{log_tail(cluster)}"
                ) from None
            time.sleep(0.05)
