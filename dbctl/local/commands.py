"""The verbs of `dbctl local` as plain functions: the CLI (dbctl.cli.local) parses the flags, calls one of
these and prints what it returns. Each verb that changes the stack, or needs it steady, holds `.local/lock`
(dbctl.local.state.stack_lock) for its work; `echo` gets the progress lines.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

from dbctl.local import backup as local_backup
from dbctl.local import lifecycle, retention
from dbctl.local import rotation as local_rotation
from dbctl.local.stack import Echo, Stack, existing_stack, no_replica_reason, open_stack, running_stack
from dbctl.local.state import Credential, LocalError, Paths, stack_lock
from dbctl.postgres.install import find_binary, find_install
from dbctl.schema.connection import connect
from dbctl.schema.migrate import resolve_rolled_back


def check_major(postgres_major: int | None) -> None:
    """Fail before anything changes when that major can't run here."""
    if postgres_major is not None:
        find_install(postgres_major)


def start(
    paths: Paths,
    echo: Echo,
    *,
    pg_port: int | None = None,
    pgbouncer_port: int | None = None,
    postgres_major: int | None = None,
    replica: bool | None = None,
    replica_port: int | None = None,
    durable: bool = True,
) -> tuple[Stack, bool]:
    """`local up`: start the stack (creating it the first time) and write .env; (the stack, changed?)."""
    ports = [p for p in (pg_port, pgbouncer_port, replica_port) if p is not None]
    if len(set(ports)) != len(ports):
        raise LocalError("--pg-port, --pgbouncer-port and --replica-port must differ")
    check_major(postgres_major)
    with stack_lock(paths, echo):
        stack = open_stack(
            paths, pg_port, pgbouncer_port, postgres_major, replica=replica, replica_port=replica_port
        )
        if replica and not stack.cluster.install.tls:
            raise LocalError(no_replica_reason(stack.cluster) + "; run `dbctl local up` without --replica")
        taken = {stack.state.pg_port, stack.state.pgbouncer_port}
        if stack.state.replica and stack.state.effective_replica_port in taken:
            raise LocalError(
                f"the replica's port {stack.state.effective_replica_port} is PostgreSQL's or PgBouncer's; "
                "pick another with --replica-port <port>"
            )
        return stack, lifecycle.up(stack, echo, durable=durable)


def stop(paths: Paths, echo: Echo) -> None:
    """`local down`: stop the servers; the data stays."""
    with stack_lock(paths, echo):
        lifecycle.down(existing_stack(paths), echo)


def reset(
    paths: Paths,
    echo: Echo,
    *,
    confirmed: bool,
    pg_port: int | None = None,
    pgbouncer_port: int | None = None,
    postgres_major: int | None = None,
) -> Stack:
    """`local reset`: wipe the stack and bring a new one up; refused unless confirmed (--yes)."""
    if not confirmed:
        raise LocalError(
            f"{lifecycle.RESET_WARNING} `dbctl local reset` drops the local cluster in {paths.state_dir}, "
            "its credentials, CA and .env, then recreates them and applies all migrations. "
            "Re-run with --yes to do it."
        )
    check_major(postgres_major)
    with stack_lock(paths, echo):
        return lifecycle.reset(paths, echo, pg_port, pgbouncer_port, postgres_major)


def resolve(paths: Paths, echo: Echo, rolled_back: str) -> None:
    """`local resolve --rolled-back NAME`: `dbctl migrate resolve` on the local stack, as its master role, so
    the next `up` applies the (fixed) migration again."""
    with stack_lock(paths, echo):
        stack = running_stack(paths)
        conn, _ = connect(stack.cluster.admin_url(), application_name="dbctl local resolve")
        with conn:
            resolve_rolled_back(conn, rolled_back)


def exec_psql(paths: Paths, role: str, psql_args: Iterable[str]) -> NoReturn:
    """`local psql`: replace this process with psql as role (a key of lifecycle.PSQL_ROLES).

    exec, not a child: psql owns the terminal; the password travels in its environment only."""
    stack = existing_stack(paths)
    psql = str(find_binary("psql"))
    os.execvpe(psql, [psql, *psql_args], lifecycle.psql_env(stack, role))  # noqa: S606


def backup(paths: Paths, echo: Echo) -> tuple[Path, retention.Retention]:
    """`local backup`: a pg_dump into .local/backups/, then the seed's retention; (the dump, what is kept
    and what was pruned). Files named like backups that cannot be one (an impossible date) or are dated in
    the future are left alone, with a warning each."""
    with stack_lock(paths, echo):
        stack = running_stack(paths)
        now = dt.datetime.now(dt.UTC)
        path = local_backup.take_backup(stack.cluster, paths.backup_dir, now, echo=echo)
        now = dt.datetime.now(dt.UTC)  # the backup may be named for the next second: never "in the future"
        kept = retention.plan_retention(retention.list_backups(paths.backup_dir, now, echo), now)
        retention.prune(paths.backup_dir, kept)
    return path, kept


def restore_test(paths: Paths, echo: Echo) -> local_backup.RestoreReport:
    """`local restore-test`: restore the newest backup (not dated in the future) into a scratch database and
    compare it with the live one (dbctl.local.backup.restore_test)."""
    with stack_lock(paths, echo):
        return local_backup.restore_test(running_stack(paths).cluster, paths.backup_dir, echo=echo)


def rotate(
    paths: Paths, roles: Iterable[str], echo: Echo, *, kill_after: str | None = None
) -> Iterator[tuple[str, Credential]]:
    """`local rotate`: rotate each pooled role in turn, under one hold of the lock; yields (role, its new
    credential) as each is done. kill_after: see dbctl.local.rotation.rotate (tests only)."""
    with stack_lock(paths, echo):
        stack = running_stack(paths)
        for role in roles:
            yield role, local_rotation.rotate(stack, role, echo, kill_after=kill_after)
