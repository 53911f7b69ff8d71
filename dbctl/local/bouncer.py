"""The local stack's PgBouncer: the AWS tier's config (same renderer) pointed at the local servers, its TLS
from the stack's CA, and the process (start, reload, stop), found again through its pid file.

`up` leaves PgBouncer running after it exits; later commands find it by its pid file (`pgbouncer_pid`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

from dbctl.core import names
from dbctl.local.stack import Stack
from dbctl.local.state import Credential, LocalError, State
from dbctl.pgbouncer.config import (
    POOLED_ROLES,
    ClientTls,
    PgBouncerConfig,
    ServerTls,
    render_ini,
    render_userlist,
)
from dbctl.pgbouncer.process import (
    PgBouncerServer,
    PgBouncerServerError,
    detect_version,
    find_pgbouncer,
    immediate_shutdown_signal,
)
from dbctl.postgres.osproc import HOST, service_owner
from dbctl.postgres.tls import write_file

# SHOW POOLS' columns that `local status` and `dbctl report --local` show, in this order.
POOL_COLUMNS = ("database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait")


# ---------------------------------------------------------------- config


def read_pool_servers(state: State) -> tuple[tuple[str, ...], int | None]:
    """The read pool's (hosts, port): the local replica, or none (the primary serves it, as in a stack
    without one)."""
    if state.replica:
        return (HOST,), state.effective_replica_port
    return (), None


def pgbouncer_config(stack: Stack, server: PgBouncerServer) -> PgBouncerConfig:
    """The AWS tier's settings (same renderer, same defaults), pointed at the local cluster.

    The read pool points at the local replica, or (--no-replica, or a PostgreSQL without TLS) at the primary,
    as in a stack without one. Server TLS: verify-full against the stack's CA (none on the wheel's
    PostgreSQL 18, which has no TLS). Client TLS: PgBouncer's own certificate from the same CA (SAN
    127.0.0.1 + localhost), so .env's verify-full URLs work through it as they do direct."""
    tls = stack.pgbouncer_tls_dir
    read_hosts, read_port = read_pool_servers(stack.state)
    return server.config(
        primary_host=HOST,
        primary_port=stack.state.pg_port,
        read_hosts=read_hosts,
        read_port=read_port,
        listen_addr=HOST,
        listen_port=stack.state.pgbouncer_port,
        server_tls=(
            ServerTls(sslmode="verify-full", ca_file=str(tls / "ca.crt"))
            if stack.cluster.install.tls
            else ServerTls(sslmode="disable")  # the wheel's PostgreSQL 18: no TLS on 127.0.0.1
        ),
        client_tls=ClientTls(
            sslmode="require", key_file=str(tls / "server.key"), cert_file=str(tls / "server.crt")
        ),
    )


def pooled_verifiers(creds: Mapping[str, Credential]) -> dict[str, str]:
    """userlist.txt's {user: verifier}: every user of a pooled role that has one (active, previous,
    pending), so a connection opened as the previous user and a login as the pending one both work."""
    return {user: v for role in POOLED_ROLES for user, v in creds[role].verifiers().items()}


def ensure_pgbouncer_tls(stack: Stack) -> bool:
    """PgBouncer's certificate from the stack's CA, and the CA certificate beside it; True when (re)made."""
    tls, owner = stack.pgbouncer_tls_dir, service_owner()
    ca_copy = tls / "ca.crt"
    ca_pem = stack.authority.cert_file.read_bytes()
    current = (
        ca_copy.exists() and ca_copy.read_bytes() == ca_pem and stack.authority.signed(tls / "server.crt")
    )
    if current:
        return False
    tls.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        os.chown(stack.pgbouncer_dir, *owner)
        os.chown(tls, *owner)
    stack.authority.issue(tls / "server.crt", tls / "server.key", owner)
    write_file(ca_copy, ca_pem, 0o644, owner)
    return True


def userlist_stale(stack: Stack) -> bool:
    """True when PgBouncer's userlist.txt is not what credentials.json renders now."""
    server = PgBouncerServer(stack.pgbouncer_dir)
    try:
        current = server.userlist_path.read_text(encoding="utf-8")
    except OSError:
        return True
    return current != render_userlist(pooled_verifiers(stack.creds))


def pgbouncer_ini_stale(stack: Stack) -> bool:
    """True when the running PgBouncer's pgbouncer.ini is not what this stack's settings render now."""
    server = PgBouncerServer(stack.pgbouncer_dir)
    try:
        current = server.ini_path.read_text(encoding="utf-8")
    except OSError:
        return True
    return current != render_ini(pgbouncer_config(stack, server))


# ---------------------------------------------------------------- the process


def pgbouncer_version() -> tuple[int, int]:
    """The version of the PgBouncer `up` would start."""
    return detect_version(find_pgbouncer())


def pgbouncer_pid(stack: Stack) -> int | None:
    """The pid in PgBouncer's pid file when that process is exactly our pgbouncer, else None.

    A stale file can name a pid the system has since given to another process, so the pid counts only when
    the process runs a `pgbouncer` executable with exactly this stack's pgbouncer.ini as its argument."""
    directory = stack.pgbouncer_dir
    try:
        pid = int((directory / "pgbouncer.pid").read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        exe = Path(os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)"))
    except (OSError, ValueError):
        return None
    if len(argv) != 2 or exe.name != "pgbouncer":
        return None
    binary, ini = (Path(os.fsdecode(arg)).resolve() for arg in argv)
    return pid if ini == (directory / "pgbouncer.ini").resolve() and binary == exe.resolve() else None


def pgbouncer_running(stack: Stack) -> bool:
    return pgbouncer_pid(stack) is not None


def start_pgbouncer(stack: Stack) -> None:
    """Render the config (shared renderer, this binary's version) and start PgBouncer; it outlives us."""
    server = PgBouncerServer(stack.pgbouncer_dir)
    ensure_pgbouncer_tls(stack)
    # Not our pgbouncer (pgbouncer_running said so): a stale file, over which pgbouncer refuses to start
    # when its pid now belongs to another live process.
    server.pid_path.unlink(missing_ok=True)
    server.start(pgbouncer_config(stack, server), pooled_verifiers(stack.creds))


def reload_pgbouncer(stack: Stack) -> None:
    """Rewrite the running PgBouncer's files from credentials.json and SIGHUP it: connected clients stay,
    and the next login is checked against the new userlist (when this returns, PgBouncer has reloaded)."""
    pid = pgbouncer_pid(stack)
    if pid is None:
        raise LocalError("PgBouncer is not running; start the stack with `dbctl local up`")
    server = PgBouncerServer(stack.pgbouncer_dir)
    try:
        server.reload_pid(pid, pgbouncer_config(stack, server), pooled_verifiers(stack.creds))
    except PgBouncerServerError as e:
        raise LocalError(str(e)) from None


def stop_pgbouncer(stack: Stack, timeout: float = 10) -> None:
    """PgBouncer's immediate shutdown (SIGQUIT from 1.23 on, SIGTERM before) and wait for the process to go.

    Not SIGTERM on 1.23+: that waits for every client to disconnect, so with an app connected `down` waited
    out the timeout and then had to SIGKILL it."""
    pid = pgbouncer_pid(stack)
    if pid is None:
        return
    try:
        version = detect_version(Path(f"/proc/{pid}/exe").resolve(strict=True))
    except (OSError, PgBouncerServerError):
        version = pgbouncer_version()  # the one `up` would start
    os.kill(pid, immediate_shutdown_signal(version))
    deadline = time.monotonic() + timeout
    while pgbouncer_pid(stack) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


# ---------------------------------------------------------------- the admin console


def _console(stack: Stack) -> psycopg.Connection[tuple[object, ...]]:
    """PgBouncer's admin console, as spike_monitor (a stats_user)."""
    monitor = stack.creds[names.MONITOR_ROLE]
    return psycopg.connect(
        host=HOST,
        port=stack.state.pgbouncer_port,
        dbname="pgbouncer",
        user=monitor.username,
        password=monitor.password,
        sslmode="verify-full",
        sslrootcert=str(stack.cluster.ca_file),
        connect_timeout=5,
        autocommit=True,
    )


def show_pools(stack: Stack) -> list[tuple[str, ...]]:
    """PgBouncer's SHOW POOLS, over the admin console: a header of POOL_COLUMNS, then one row per pool."""
    with _console(stack) as conn:
        cur = conn.execute("SHOW POOLS")
        columns = [c.name for c in cur.description or ()]
        rows = cur.fetchall()
    shown = [c for c in POOL_COLUMNS if c in columns]
    return [tuple(shown), *(tuple(str(row[columns.index(c)]) for c in shown) for row in rows)]


def pgbouncer_binary(stack: Stack) -> str:
    """Which PgBouncer: the running one's version (SHOW VERSION) and binary, else the one `up` would start."""
    pid = pgbouncer_pid(stack)
    if pid is None:
        binary = find_pgbouncer()
        major, minor = detect_version(binary)
        return f"PgBouncer {major}.{minor} ({binary})"
    try:
        binary = Path(f"/proc/{pid}/exe").resolve(strict=True)
    except OSError:
        binary = find_pgbouncer()
    try:
        with _console(stack) as conn:
            row = conn.execute("SHOW VERSION").fetchone()
    except psycopg.Error:
        row = None  # the console refused us (the pools line says why): ask the running binary instead
    if row is None:
        major, minor = detect_version(binary)
        return f"PgBouncer {major}.{minor} ({binary})"
    return f"{row[0]} ({binary})"
