"""Prisma Migrate's session advisory lock, which dbctl migrate takes too.

``advisory_lock(conn, timeout)``: the session advisory lock 72707369 that ``prisma migrate deploy`` takes,
polled with pg_try_advisory_lock until the timeout. An idle session of a pooled role (which never runs
migrations) holding it is ended with pg_terminate_backend, and said so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from dbctl.core import names
from dbctl.core.errors import DbctlError

LOCK_KEY = 72707369  # Prisma Migrate's advisory lock key
Conn = psycopg.Connection[tuple[object, ...]]


# The roles that connect through PgBouncer (dbctl.pgbouncer.POOLED_ROLES): none of them ever runs migrations,
# so a lock 72707369 one of them holds is a stray (e.g. `SELECT pg_advisory_lock(72707369)` through a pool,
# which outlives its client on the pooled server connection), not another run.
NOT_MIGRATORS = tuple(user for role in names.ALTERNATING_ROLES for user in (role, *names.login_users(role)))


def _lock_holders(conn: Conn) -> list[tuple[object, ...]]:
    """(pid, user, application_name, backend_start, state) of each session holding the lock here."""
    return conn.execute(
        "SELECT a.pid, a.usename, a.application_name, a.backend_start, a.state"
        " FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (LOCK_KEY,),
    ).fetchall()


def _end_stray_holders(conn: Conn, holders: list[tuple[object, ...]]) -> list[str]:
    """Terminate idle sessions of NOT_MIGRATORS that hold the lock; one line per session ended.

    Only idle ones: their transaction is over and only the pool keeps the session (and the lock) alive. A
    holder inside a transaction is waited for (statement and idle-in-transaction timeouts bound it).
    """
    ended = []
    for pid, user, _app, _since, state in holders:
        if user in NOT_MIGRATORS and state == "idle":
            row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
            if row and row[0]:
                ended.append(
                    f"ended session {pid} of {user}, which held lock {LOCK_KEY} without running a migration"
                )
    return ended


@contextmanager
def advisory_lock(conn: Conn, timeout: float = 60.0, poll: float = 0.1) -> Iterator[list[str]]:
    """Hold Prisma's session advisory lock; wait up to timeout seconds for it.

    Yields the sessions it ended to get it: idle pooled-role sessions holding the key (_end_stray_holders).
    """
    deadline = time.monotonic() + timeout
    ended: list[str] = []
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if row and row[0]:
            break
        holders = _lock_holders(conn)
        try:
            ended += _end_stray_holders(conn, holders)
        except psycopg.errors.InsufficientPrivilege:
            raise DbctlError(
                f"a {'/'.join(NOT_MIGRATORS)} session holds advisory lock {LOCK_KEY} and this admin may not "
                "end it; grant it pg_signal_backend (RDS's master has it), or end that session by hand"
            ) from None
        if time.monotonic() >= deadline:
            who = ""
            if holders:
                pid, user, app, since, _ = holders[0]
                who = f" (pid {pid}, {user}, {app or 'unnamed'}, since {since})"
            raise DbctlError(
                f"another migration run holds advisory lock {LOCK_KEY}{who}; waited {timeout:.0f} s. "
                "Wait for it to finish (or stop it), then run again"
            )
        time.sleep(poll)
    try:
        yield ended
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
