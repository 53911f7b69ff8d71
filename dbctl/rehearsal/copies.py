"""Where a rehearsal runs: never on the primary.

- ``rehearse_local(paths, migrations_dir, load)``: the latest backup `dbctl local backup` wrote
  (dbctl.local.backup) restored into a scratch database on the local stack's server, created with no PUBLIC
  access (CONNECT for spike_owner and spike_rw only); the pending migrations applied there as
  spike_migrator; the app's load, if asked, as the app's active login user; the scratch database dropped
  afterwards, also when something fails. A scratch database a killed rehearsal left is dropped at the next
  run, and said so.
- ``rehearse_copy(copy_url, primary_conninfo, migrations_dir)``: a copy the user made (e.g. a PITR clone of
  the stack's primary), rehearsed in place as the URL's user. Before anything runs, the URL must not reach
  the primary's server: same postmaster start time (and system identifier, where readable) means the same
  server, whatever the host name says.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import psycopg
from psycopg import sql

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.local import backup as local_backup
from dbctl.local import retention
from dbctl.local.stack import running_stack
from dbctl.local.state import Paths
from dbctl.rehearsal.engine import Rehearsal, Say, rehearse
from dbctl.rehearsal.load import Load
from dbctl.schema.connection import connect
from dbctl.schema.migrate import load_migrations

SCRATCH_PREFIX = f"{names.DATABASE_NAME}_rehearse_"


def _drop_leftovers(admin: psycopg.Connection[tuple[object, ...]], say: Say | None) -> None:
    rows = admin.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX.replace("_", r"\_") + "%",)
    ).fetchall()
    for (name,) in rows:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))
        if say:
            say(f"dropped {name}, the scratch copy of a rehearsal that did not finish")


def rehearse_local(
    paths: Paths, migrations_dir: Path, *, load: bool = False, say: Say | None = None
) -> Rehearsal:
    """Rehearse the pending migrations on a scratch copy of the latest local backup, then drop it."""
    migrations = load_migrations(migrations_dir)
    stack = running_stack(paths)
    backups = retention.list_backups(paths.backup_dir, dt.datetime.now(dt.UTC), say)  # none dated ahead
    if not backups:
        raise DbctlError(
            f"no backup in {paths.backup_dir} to rehearse on; take one with `dbctl local backup`"
        )
    latest = backups[-1]
    cluster = stack.cluster
    scratch = f"{SCRATCH_PREFIX}{secrets.token_hex(4)}"
    pg_restore = local_backup.client_binary("pg_restore", local_backup.server_major(cluster))
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as admin:
        _drop_leftovers(admin, say)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        try:
            admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(scratch)))
            groups = sql.SQL(", ").join(map(sql.Identifier, (names.OWNER_ROLE, names.READWRITE_ROLE)))
            grant = sql.SQL("GRANT CONNECT ON DATABASE {} TO {}")
            admin.execute(grant.format(sql.Identifier(scratch), groups))
            with psycopg.connect(cluster.admin_conninfo(scratch), autocommit=True) as conn:
                # pg_restore gives objects to spike_owner before it restores the schema's ACL.
                owner = sql.Identifier(names.OWNER_ROLE)
                conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(owner))
            if say:
                say(f"restoring {latest.name} into {scratch}")
            env = local_backup.client_env(cluster, scratch, "dbctl migrate rehearse")
            local_backup.restore_archive(pg_restore, paths.backup_dir / latest.name, env)
            migrator = stack.creds[names.MIGRATOR_ROLE]
            app = stack.creds[names.APP_ROLE]
            return rehearse(
                f"a copy of {latest.name}",
                cluster.admin_conninfo(scratch),
                cluster.conninfo(migrator.username, migrator.password, scratch),
                migrations,
                load=Load(cluster.conninfo(app.username, app.password, scratch)) if load else None,
                say=say,
            )
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
            if say:
                say(f"dropped {scratch}")


def _identity(conninfo: str, label: str) -> tuple[object, ...]:
    """What tells one PostgreSQL server from another: its postmaster's start time and system identifier."""
    conn, _where = connect(conninfo, application_name="dbctl migrate rehearse check")
    with conn:
        started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        try:
            system = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        except psycopg.errors.InsufficientPrivilege:
            system = None
    if started is None:
        raise DbctlError(f"cannot read {label}'s identity")
    return (started[0], system[0] if system else None)


def local_primary(paths: Paths) -> str:
    """The local stack's primary, as the admin: what a --copy-url must not be."""
    return running_stack(paths).cluster.admin_conninfo(names.DATABASE_NAME)


def rehearse_copy(
    copy_url: str, primary_conninfo: str, migrations_dir: Path, *, say: Say | None = None
) -> Rehearsal:
    """Rehearse on a copy the user made; refused, before anything runs, when the URL reaches the primary."""
    migrations = load_migrations(migrations_dir)
    copy_started, copy_system = _identity(copy_url, "the copy")
    primary_started, primary_system = _identity(primary_conninfo, "the primary")
    if copy_started == primary_started and (copy_system is None or copy_system == primary_system):
        raise DbctlError(
            "the rehearsal URL reaches the primary's own server (same postmaster start time); nothing was "
            "run. Give the URL of a copy: a PITR clone (docs/migrations.md) or `dbctl migrate rehearse` "
            "without a URL for the latest local backup"
        )
    _conn, where = connect(copy_url, application_name="dbctl migrate rehearse")
    _conn.close()
    return rehearse(f"the copy at {where}", copy_url, copy_url, migrations, say=say)
