"""Run a real `pgbouncer` with files from dbctl.pgbouncer: find it, start it, reload it, stop it.

Used by the integration tests and the local stack. The AWS hosts run PgBouncer under systemd instead.

API
---
- ``find_pgbouncer() -> Path``: the binary. First production's version as ``./dev`` builds it when the
  system's is older (``.tools/pgbouncer-<version>/bin/pgbouncer``, the highest version there), then PATH,
  then /usr/sbin (Debian installs it there, outside a normal user's PATH). Missing:
  ``PgBouncerNotFoundError`` naming the Debian package ``pgbouncer``.
- ``detect_version(binary) -> (major, minor)`` from ``pgbouncer --version``.
- ``PgBouncerServer(directory, binary=None)``: one PgBouncer whose files live in ``directory``
  (``pgbouncer.ini``, ``userlist.txt`` mode 0600, ``pgbouncer.log``, ``pgbouncer.pid``).

  - ``config(**settings) -> PgBouncerConfig``: settings for this binary's version with the file paths filled.
    With ``processes=N`` (N > 1): N processes on one port (so_reuseport, peers), each with its own
    ``pgbouncer-<i>.ini``, ``.log``, ``.pid`` and Unix socket directory ``s<i>`` (its admin console; a
    readiness check, a reload's ping reach each process there, since TCP reaches any of them). ``pids``
    lists them; ``start``, ``reload``, ``stop`` and ``is_running`` cover every process.
  - ``start(config, verifiers, timeout=30)``: write the files, start pgbouncer in the foreground (as the OS
    user ``postgres`` when we are root: PgBouncer refuses to run as root), wait until it accepts TCP
    connections. If pgbouncer exits instead (e.g. it rejects the config), ``PgBouncerServerError`` carries
    pgbouncer's own ERROR/FATAL lines.
  - ``reload(config, verifiers, timeout=10)``: rewrite the files and SIGHUP (an online reload: connected
    clients stay); raises with pgbouncer's error lines if it rejected the new config (it keeps the old one).
  - ``stop(timeout=10)``: the immediate shutdown (SIGQUIT from 1.23 on, whose SIGTERM waits for every
    client to leave; SIGTERM before), SIGKILL if it lingers. ``is_running()``; usable as a context manager
    (stops on exit). ``immediate_shutdown_signal(version)`` names that signal.
"""

from __future__ import annotations

import os
import pwd
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from dbctl.core.errors import DbctlError
from dbctl.pgbouncer.config import (
    PEER_ID_PLACEHOLDER,
    PgBouncerConfig,
    Version,
    parse_version,
    render_ini,
    render_userlist,
)
from dbctl.postgres.osproc import SERVICE_OS_USER, port_is_free, runnable_by_service_user, server_environment

PACKAGE = "pgbouncer"
# Where ./dev builds production's PgBouncer when the system's is older (git-ignored).
TOOLS_DIR = Path(__file__).resolve().parents[2] / ".tools"
_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin")
_BUILD_DIR = re.compile(r"pgbouncer-(\d+(?:\.\d+)+)")
_VERSION_LINE = re.compile(r"PgBouncer (\d+\.\d+(?:\.\d+)?)")
_ERROR_LINE = re.compile(r"\b(ERROR|FATAL|WARNING)\b")
# File descriptors beyond max_client_conn: server connections, listen sockets, log, DNS.
_FD_MARGIN = 256
# PgBouncer 1.23 made SIGTERM a "super safe shutdown" (it waits until every client has disconnected);
# SIGQUIT is now the immediate shutdown SIGTERM used to be (before 1.23 SIGQUIT is not among its signals).
SIGQUIT_SHUTDOWN_SINCE: Version = (1, 23)
# The PostgreSQL protocol's SSLRequest: any PgBouncer answers it with one byte, 'S' or 'N'.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class PgBouncerServerError(DbctlError, RuntimeError):
    """PgBouncer could not be found, started, reloaded or stopped. The message says why and what to do."""


class PgBouncerNotFoundError(PgBouncerServerError):
    """The pgbouncer binary is not installed."""


def _built(tools_dir: Path) -> list[str]:
    """./dev's builds in tools_dir, highest version first."""
    found = [(m, p) for p in tools_dir.glob("pgbouncer-*") if (m := _BUILD_DIR.fullmatch(p.name))]
    found.sort(key=lambda mp: tuple(int(x) for x in mp[0][1].split(".")), reverse=True)
    return [str(p / "bin" / "pgbouncer") for _, p in found]


def find_pgbouncer() -> Path:
    """The pgbouncer binary: ./dev's build of production's version, then PATH, then the sbin/bin dirs."""
    candidates = [*_built(TOOLS_DIR), shutil.which("pgbouncer"), *(f"{d}/pgbouncer" for d in _SEARCH_DIRS)]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise PgBouncerNotFoundError(
        f"pgbouncer not found on PATH or in {', '.join(_SEARCH_DIRS)}; "
        f"install the Debian package: sudo apt-get install -y {PACKAGE}"
    )


def immediate_shutdown_signal(version: Version) -> signal.Signals:
    """The signal that makes this PgBouncer version close every connection and exit now."""
    return signal.SIGQUIT if version >= SIGQUIT_SHUTDOWN_SINCE else signal.SIGTERM


def detect_version(binary: Path) -> Version:
    """(major, minor) of the binary, from the first line of `pgbouncer --version`."""
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    match = _VERSION_LINE.search(result.stdout + result.stderr)
    if result.returncode != 0 or match is None:
        raise PgBouncerServerError(
            f"`{binary} --version` did not report a PgBouncer version (exit {result.returncode}); "
            f"reinstall the {PACKAGE} package"
        )
    return parse_version(match[1])


def _service_ids() -> tuple[int, int] | None:
    """(uid, gid) of the service user when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_OS_USER)
    except KeyError:
        raise PgBouncerServerError(
            f"running as root, and PgBouncer refuses to run as root, but there is no OS user "
            f"{SERVICE_OS_USER!r}; install the Debian package: apt-get install -y postgresql"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _write_private(path: Path, text: str, mode: int, ids: tuple[int, int] | None) -> None:
    """Write text atomically to path with mode (never briefly world-readable), owned by the service user."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, text.encode())
        if ids is not None:
            os.fchown(fd, *ids)
    finally:
        os.close(fd)
    tmp.replace(path)


def _error_lines(*texts: str) -> str:
    lines = [line for text in texts for line in text.splitlines() if _ERROR_LINE.search(line)]
    return "\n".join(lines) or "(pgbouncer printed no error)"


class PgBouncerServer:
    """One PgBouncer (one process or several on one port) whose files live in `directory`; see the module
    docstring."""

    def __init__(self, directory: Path, binary: Path | None = None) -> None:
        self.directory = Path(directory)
        self.binary = binary or find_pgbouncer()
        self.version = detect_version(self.binary)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._config: PgBouncerConfig | None = None
        self._verifiers: dict[str, str] = {}
        self._log_offsets: dict[int, int] = {}

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The (first) pgbouncer process, None when stopped."""
        return self._procs.get(1)

    @property
    def pids(self) -> list[int]:
        """Every running process's pid, by peer id."""
        return [proc.pid for _, proc in sorted(self._procs.items())]

    @property
    def ini_path(self) -> Path:
        return self.directory / "pgbouncer.ini"

    @property
    def userlist_path(self) -> Path:
        return self.directory / "userlist.txt"

    @property
    def log_path(self) -> Path:
        return self.directory / "pgbouncer.log"

    @property
    def pid_path(self) -> Path:
        return self.directory / "pgbouncer.pid"

    def _stem(self, config: PgBouncerConfig, peer_id: int) -> str:
        return "pgbouncer" if config.processes == 1 else f"pgbouncer-{peer_id}"

    def ini_path_of(self, config: PgBouncerConfig, peer_id: int) -> Path:
        return self.directory / f"{self._stem(config, peer_id)}.ini"

    def log_path_of(self, config: PgBouncerConfig, peer_id: int) -> Path:
        return Path(config.process_path(config.logfile or str(self.log_path), peer_id))

    def _console_path(self, config: PgBouncerConfig, peer_id: int) -> Path:
        return self.directory / f"{self._stem(config, peer_id)}.out"

    def config(self, **settings: object) -> PgBouncerConfig:
        """A PgBouncerConfig for this binary's version, with auth_file/logfile/pidfile in `directory`; with
        `processes` > 1 each process's logfile, pidfile and unix_socket_dir (`s<peer id>`) there too."""
        several = settings.get("processes", 1) != 1
        peer = PEER_ID_PLACEHOLDER
        values: dict[str, object] = {
            "version": self.version,
            "auth_file": str(self.userlist_path),
            "logfile": str(self.directory / f"pgbouncer-{peer}.log") if several else str(self.log_path),
            "pidfile": str(self.directory / f"pgbouncer-{peer}.pid") if several else str(self.pid_path),
            **({"unix_socket_dir": str(self.directory / f"s{peer}")} if several else {}),
            **settings,
        }
        return PgBouncerConfig.model_validate(values)

    def _write(self, config: PgBouncerConfig, verifiers: Mapping[str, str]) -> None:
        if config.auth_file != str(self.userlist_path):
            raise PgBouncerServerError(
                f"config.auth_file is {config.auth_file}, but this server keeps it at {self.userlist_path}; "
                "build the config with PgBouncerServer.config()"
            )
        ids = _service_ids()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if ids is not None:
            os.chown(self.directory, *ids)
        _write_private(self.userlist_path, render_userlist(verifiers), 0o600, ids)
        for peer_id in config.peer_ids:
            if config.unix_socket_dir:
                socket_dir = Path(config.socket_dir(peer_id))
                socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                if ids is not None:
                    os.chown(socket_dir, *ids)
            _write_private(self.ini_path_of(config, peer_id), render_ini(config, peer_id), 0o600, ids)

    def _listen_host(self, config: PgBouncerConfig) -> str:
        first = config.listen_addr.split(",")[0]
        return "127.0.0.1" if first in ("*", "0.0.0.0") else first  # noqa: S104 - we connect, not bind

    def _connect(self, config: PgBouncerConfig, peer_id: int) -> socket.socket:
        """A connection to process `peer_id`: its Unix socket when there are several (TCP may reach any)."""
        if config.processes == 1:
            return socket.create_connection((self._listen_host(config), config.listen_port), timeout=5)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(f"{config.socket_dir(peer_id)}/.s.PGSQL.{config.listen_port}")
        except OSError:
            sock.close()
            raise
        return sock

    def _raise_fd_limit(self, config: PgBouncerConfig) -> None:
        needed = config.max_client_conn + _FD_MARGIN
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise PgBouncerServerError(
                f"max_client_conn {config.max_client_conn} needs about {needed} file descriptors, but "
                f"the hard limit is {hard}; raise it (ulimit -Hn, or LimitNOFILE under systemd) "
                "or lower max_client_conn"
            )
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))

    def start(self, config: PgBouncerConfig, verifiers: Mapping[str, str], timeout: float = 30) -> None:
        """Write the files and run every pgbouncer process until stop(); raise with its own errors if one
        won't start (the others are stopped then)."""
        if any(proc.poll() is None for proc in self._procs.values()):
            raise PgBouncerServerError(f"pgbouncer already runs from {self.directory}; stop() it first")
        host = self._listen_host(config)
        if not port_is_free(config.listen_port, host):
            raise PgBouncerServerError(
                f"port {host}:{config.listen_port} is taken by another process; stop it or pick another "
                "listen_port"
            )
        self._write(config, verifiers)
        # The children inherit our limits; pgbouncer needs one descriptor per client connection.
        self._raise_fd_limit(config)
        ids = _service_ids()
        # As root it runs as the service user, which may not reach a build under a 0700 checkout.
        bindir = self.binary.parent
        runnable = runnable_by_service_user(bindir.parent, bindir.name) / bindir.name / self.binary.name
        self._config, self._verifiers = config, dict(verifiers)
        for peer_id in config.peer_ids:
            self._log_offsets[peer_id] = len(self._read(self.log_path_of(config, peer_id)))
            with self._console_path(config, peer_id).open("wb") as console:
                self._procs[peer_id] = subprocess.Popen(
                    [str(runnable), str(self.ini_path_of(config, peer_id))],
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    env=server_environment(),
                    start_new_session=True,
                    user=ids[0] if ids else None,
                    group=ids[1] if ids else None,
                    extra_groups=[] if ids else None,
                )
        for peer_id in config.peer_ids:
            self._wait_ready(config, peer_id, timeout)

    def _wait_ready(self, config: PgBouncerConfig, peer_id: int, timeout: float) -> None:
        proc = self._procs[peer_id]
        log_path = self.log_path_of(config, peer_id)
        deadline = time.monotonic() + timeout
        where = f"{self._listen_host(config)}:{config.listen_port}"
        while True:
            code = proc.poll()
            if code is not None:
                del self._procs[peer_id]
                self.stop()
                raise PgBouncerServerError(
                    f"pgbouncer exited with code {code} instead of starting "
                    f"({self.ini_path_of(config, peer_id)}):\n"
                    f"{_error_lines(self._read(self._console_path(config, peer_id)), self._read(log_path))}"
                )
            try:
                # "process up" is logged once the listen sockets are open; the connect proves it serves.
                if "process up" in self._read(log_path)[self._log_offsets[peer_id] :]:
                    with self._connect(config, peer_id):
                        return
                raise OSError("not up yet")
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PgBouncerServerError(
                        f"pgbouncer did not accept connections on {where} within {timeout:.0f} s; "
                        f"its log {log_path}:\n{_error_lines(self._read(log_path))}"
                    ) from None
                time.sleep(0.05)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def _ping(self, config: PgBouncerConfig, peer_id: int) -> None:
        """One protocol round trip: when it returns, that process's event loop has handled earlier signals."""
        with self._connect(config, peer_id) as sock:
            sock.sendall(_SSL_REQUEST)
            sock.recv(1)

    def _sighup(
        self, config: PgBouncerConfig, verifiers: Mapping[str, str], timeout: float, pid: int | None = None
    ) -> str:
        """Write the files, SIGHUP every process (or pid: a single pgbouncer another run started from this
        directory), wait until each ran the reload; return what they logged about it."""
        running = self._config or config
        if pid is not None:
            logs = {1: self.log_path_of(running, 1)}
        else:
            assert self._config is not None
            logs = {i: self.log_path_of(running, i) for i in self._procs}
        offsets = {i: len(self._read(path)) for i, path in logs.items()}
        self._write(config, verifiers)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
        else:
            for proc in self._procs.values():
                proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        logged = []
        for peer_id, path in logs.items():
            while "got SIGHUP" not in self._read(path)[offsets[peer_id] :]:
                if time.monotonic() > deadline:
                    raise PgBouncerServerError(
                        f"pgbouncer did not log the SIGHUP reload within {timeout:.0f} s ({path})"
                    )
                time.sleep(0.05)
            self._ping(running, peer_id)
            new_lines = self._read(path)[offsets[peer_id] :]
            logged.append(new_lines[new_lines.index("got SIGHUP") :])
        return "\n".join(logged)

    def reload(self, config: PgBouncerConfig, verifiers: Mapping[str, str], timeout: float = 10) -> None:
        """Rewrite the files and SIGHUP every process; connected clients stay. Raise if it rejects the config.

        A rejected reload is not clean in PgBouncer: the settings read before the bad line are applied
        and the rest are not (1.18 drops client TLS that way). So on rejection the last good files are
        written back and reloaded before raising. The number of processes cannot change in a reload.
        """
        if self._config is None or not self.is_running():
            raise PgBouncerServerError("pgbouncer is not running; start() it before reload()")
        if config.processes != self._config.processes:
            raise PgBouncerServerError(
                f"pgbouncer runs {self._config.processes} process(es), the new config {config.processes}; "
                "stop() and start() to change that"
            )
        logged = self._sighup(config, verifiers, timeout)
        if "loading failed" not in logged:
            self._config, self._verifiers = config, dict(verifiers)
            return
        restored = self._sighup(self._config, self._verifiers, timeout)
        outcome = (
            "restored the previous config"
            if "loading failed" not in restored
            else "could NOT restore the previous config either; restart it"
        )
        raise PgBouncerServerError(f"pgbouncer rejected the new config ({outcome}):\n{_error_lines(logged)}")

    def reload_pid(
        self, pid: int, config: PgBouncerConfig, verifiers: Mapping[str, str], timeout: float = 10
    ) -> None:
        """reload() for a pgbouncer this object did not start (pid: the one running from this directory,
        e.g. `dbctl local up`'s); raise with its errors if it rejects the files."""
        logged = self._sighup(config, verifiers, timeout, pid)
        if "loading failed" in logged:
            raise PgBouncerServerError(f"pgbouncer rejected the new files:\n{_error_lines(logged)}")

    def is_running(self) -> bool:
        """Every process started is still running."""
        return bool(self._procs) and all(proc.poll() is None for proc in self._procs.values())

    def stop(self, timeout: float = 10) -> None:
        """PgBouncer's immediate shutdown (immediate_shutdown_signal) for every process, then SIGKILL if one
        lingers."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(immediate_shutdown_signal(self.version))
        for proc in self._procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._procs.clear()

    def __enter__(self) -> PgBouncerServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
