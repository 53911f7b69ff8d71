"""The local stack's lifecycle: `up` (PostgreSQL, its replica, migrations and roles through
dbctl.local.migrations, the shadow database, PgBouncer, `.env`), `down`, `reset`; psql's environment.

Python API (the benchmark uses it): `open_stack(Paths(root), pg_port, pgbouncer_port) -> Stack`
(dbctl.local.stack), `up(stack, echo) -> bool` (False: was already up, nothing changed; a failed migration
raises LocalError once the servers are up), `down(stack, echo)`; `throwaway_stack(prefix)` for tests and
benchmarks. The caller holds `stack_lock` (dbctl.local.commands does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from dbctl.core import names
from dbctl.core.errors import DbctlError, one_line
from dbctl.local import replica as local_replica
from dbctl.local.bouncer import (
    ensure_pgbouncer_tls,
    pgbouncer_ini_stale,
    pgbouncer_running,
    pgbouncer_version,
    reload_pgbouncer,
    start_pgbouncer,
    stop_pgbouncer,
    userlist_stale,
)
from dbctl.local.env import SHADOW_DATABASE, env_urls, render_env
from dbctl.local.migrations import apply_migrations, local_advice
from dbctl.local.stack import Echo, Stack, no_replica_reason, open_stack, require_free_port, server_dir
from dbctl.local.state import LocalError, Paths, State, write_private
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.config import MAX_CONNECTIONS
from dbctl.postgres.errors import ClusterError
from dbctl.postgres.install import find_install, system_install
from dbctl.postgres.osproc import HOST, free_port
from dbctl.postgres.spec import DEFAULT_ADMIN_USER
from dbctl.schema import maintenance

RESET_WARNING = "WARNING: This deletes all data!"

UNSAFE_NOTE = (
    "UNSAFE: fsync, synchronous_commit and full_page_writes are off (--unsafe-fast): a crash can lose "
    "committed data; `dbctl local up` without the flag makes the stack durable again"
)


# ---------------------------------------------------------------- the shadow database and .env


def ensure_shadow_database(stack: Stack) -> bool:
    """`prisma migrate dev`'s shadow database, created once; True when it was created now.

    Prisma resets it with `DROP SCHEMA "public" CASCADE; CREATE SCHEMA "public"` and then replays every
    migration there as the DIRECT_URL role. Owned, with its schema public, by spike_owner: the migrator is a
    member (INHERIT) of spike_owner, so that works whether its sessions start as spike_migrator or (with
    `ALTER ROLE spike_migrator SET role spike_owner`) as spike_owner. Only spike_owner's members connect."""
    cluster = stack.cluster
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (SHADOW_DATABASE,)).fetchone():
            return False
        db, owner = sql.Identifier(SHADOW_DATABASE), sql.Identifier(names.OWNER_ROLE)
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, owner))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    with psycopg.connect(cluster.admin_conninfo(SHADOW_DATABASE), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(owner))
    return True


def write_env(stack: Stack, version: tuple[int, int]) -> bool:
    """Write .env (mode 0600) when its content would change; True when it did."""
    text = render_env(
        env_urls(
            stack.creds, stack.state, version, stack.authority.cert_file, direct_tls=stack.cluster.install.tls
        )
    )
    env_file = stack.paths.env_file
    if env_file.exists() and env_file.read_text(encoding="utf-8") == text:
        return False
    write_private(env_file, text)
    return True


# ---------------------------------------------------------------- up / down


def up(stack: Stack, echo: Echo, *, durable: bool = True) -> bool:
    """Bring the stack up; True when something changed, False when it was already up as asked.

    The caller holds stack_lock. TLS comes first: a stack from before the per-stack CA (or whose CA was
    removed) gets a new CA and certificates, and running servers pick them up."""
    cluster = stack.cluster
    if stack.state.replica and not cluster.install.tls:
        echo(f"no local replica: {no_replica_reason(cluster)}; the read pool uses the primary")
        stack.state = dataclasses.replace(stack.state, replica=False)
    changed = cluster.discard_unfinished_init()
    if changed:
        echo(f"removed what an interrupted `up` left half-made in {cluster.base_dir}")
    pg_running = cluster.is_running()
    bouncer_running = pgbouncer_running(stack)
    version = pgbouncer_version()
    replica = stack.replica
    replica_running = replica.is_running()
    if pg_running and bouncer_running:
        saved = State.load(stack.paths)
        if saved is not None and saved.pgbouncer_port != stack.state.pgbouncer_port:
            raise LocalError(
                f"the local stack is running with PgBouncer on port {saved.pgbouncer_port}; to move it to "
                f"{stack.state.pgbouncer_port}, run `dbctl local down` first"
            )
    if not pg_running:
        require_free_port(stack.state.pg_port, "--pg-port", "PostgreSQL")
    if not bouncer_running:
        require_free_port(stack.state.pgbouncer_port, "--pgbouncer-port", "PgBouncer")
    if stack.state.replica and not replica_running:
        require_free_port(stack.state.effective_replica_port, "--replica-port", "the replica")
    stack.state.save(stack.paths)
    if stack.authority.ensure():
        echo(f"TLS: a new CA for this stack ({stack.authority.cert_file}; its key stays in that directory)")
        changed = True
    exists = (cluster.data_dir / "PG_VERSION").exists()
    if exists and cluster.ensure_tls():
        echo("TLS: PostgreSQL's certificate (re)issued by the stack's CA")
        changed = True
        cluster.reload()
    if ensure_pgbouncer_tls(stack):
        changed = True
        if bouncer_running:
            echo("TLS: PgBouncer's certificate (re)issued by the stack's CA; restarting PgBouncer")
            stop_pgbouncer(stack)
            bouncer_running = False
    if not exists:
        echo(f"initdb: a new {cluster.install.describe()} cluster in {cluster.base_dir} (a few seconds) ...")
        started = time.monotonic()
        cluster.init(durable=durable, pgstattuple_schema=maintenance.SCHEMA)
        echo(f"initdb: done in {time.monotonic() - started:.1f} s; PostgreSQL on {HOST}:{cluster.port}")
        changed = True
    elif not pg_running:
        echo(f"starting PostgreSQL on {HOST}:{cluster.port} ...")
        cluster.start()
        changed = True
    if cluster.set_durability(durable):
        echo("durability: fsync, synchronous_commit and full_page_writes " + ("on" if durable else "off"))
        changed = True
    if not durable:
        echo(UNSAFE_NOTE)
    # Every `up` converges: pending migrations, role drift, a userlist behind credentials.json (an upgraded
    # credentials file, an interrupted rotation). The roles step comes first, so the server knows every
    # verifier before PgBouncer hands it out. A failed migration does not keep the servers down: as in
    # production, where the post-deploy step never stops PgBouncer, the app's URLs work and `up` then says
    # what failed.
    echo("migrations and roles (dbctl migrate's code) ...")
    failure: str | None = None
    try:
        changed |= apply_migrations(stack, echo)
    except (DbctlError, psycopg.Error) as exc:
        failure = local_advice(one_line(exc))
        echo("migrations and roles stopped (the error follows at the end); starting the servers anyway")
    if ensure_shadow_database(stack):
        echo(f"shadow database {SHADOW_DATABASE} for `prisma migrate dev` (SHADOW_DATABASE_URL)")
        changed = True
    changed |= up_replica(stack, echo, durable=durable)
    if bouncer_running and pgbouncer_ini_stale(stack):
        echo("PgBouncer's config changed (the read pool's server); restarting PgBouncer")
        stop_pgbouncer(stack)
        bouncer_running = False
    if bouncer_running and userlist_stale(stack):
        echo("PgBouncer's userlist changed (credentials.json); reloading PgBouncer")
        reload_pgbouncer(stack)
        changed = True
    if not bouncer_running:
        echo(f"starting PgBouncer {version[0]}.{version[1]} on {HOST}:{stack.state.pgbouncer_port} ...")
        start_pgbouncer(stack)
        changed = True
    changed |= write_env(stack, version)
    if failure is not None:
        raise LocalError(f"the servers are up and .env is written, but {failure}")
    return changed


def up_replica(stack: Stack, echo: Echo, *, durable: bool) -> bool:
    """The hot standby as state.json asks: made (pg_basebackup) or started, with the primary's durability
    and certificate authority; or, with --no-replica, stopped and removed. True when anything changed."""
    primary, replica = stack.cluster, stack.replica
    if not stack.state.replica:
        if not replica.base_dir.exists():
            return False
        echo("--no-replica: removing the replica; the read pool now points at the primary")
        return local_replica.remove(primary, replica)
    changed = False
    if not (replica.data_dir / "PG_VERSION").exists():
        echo(f"replica: pg_basebackup of the primary into {replica.base_dir} ...")
        started = time.monotonic()
        local_replica.create(primary, replica, stack.paths, MAX_CONNECTIONS)
        echo(f"replica: streaming on {HOST}:{replica.port} ({time.monotonic() - started:.1f} s)")
        changed = True
    else:
        cred = local_replica.credential(stack.paths)
        changed |= local_replica.ensure_role_and_slot(primary, cred)
        # The passfile and the CA copy it verifies the primary with, current (a new CA, a new credential).
        local_replica.primary_conninfo(primary, replica, cred)
        if replica.ensure_tls():
            echo("TLS: the replica's certificate (re)issued by the stack's CA")
            changed = True
            replica.reload()
        if not replica.is_running():
            echo(f"starting the replica on {HOST}:{replica.port} ...")
            replica.start()
            changed = True
    if replica.set_durability(durable):
        changed = True
    return changed


def down(stack: Stack, echo: Echo) -> None:
    """Stop the servers (PgBouncer, the primary, then its replica); the data stays."""
    if pgbouncer_running(stack):
        echo("stopping PgBouncer ...")
        stop_pgbouncer(stack)
    cluster = stack.cluster
    if cluster.is_running():
        echo("stopping PostgreSQL ...")
        cluster.stop()
    if stack.replica.is_running():
        echo("stopping the replica ...")
        stack.replica.stop()


@contextlib.contextmanager
def throwaway_stack(prefix: str, *, replica: bool = False, echo: Echo | None = None) -> Iterator[Stack]:
    """`up` in a new temp dir on free ports, stopped and removed afterwards: for tests and benchmarks. Not
    durable (fsync off: its data is thrown away). The dir is tempfile's, made 0755: as root the servers run
    as `postgres`, which must enter it (pytest's tmp_path is under a 0700 dir)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    stack = open_stack(Paths(root), free_port(), free_port(), replica=replica)
    try:
        up(stack, echo or (lambda message: None), durable=False)
        yield stack
    finally:
        down(stack, lambda message: None)
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- reset


def wipe(paths: Paths) -> None:
    """Everything of the stack but the lock we hold (a new lock file would let another run in) and the
    backups."""
    for child in paths.state_dir.iterdir() if paths.state_dir.is_dir() else ():
        if child in (paths.lock_file, paths.backup_dir):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if server_dir(paths) != paths.state_dir:
        shutil.rmtree(server_dir(paths), ignore_errors=True)
    paths.env_file.unlink(missing_ok=True)


def reset(
    paths: Paths, echo: Echo, pg_port: int | None, pgbouncer_port: int | None, postgres_major: int | None
) -> Stack:
    """Stop what runs, wipe the stack (its backups stay), and bring a new one up: the saved ports, major and
    replica choice unless given. The caller holds stack_lock."""
    try:
        saved = State.load(paths)
    except LocalError:
        saved = None  # unreadable: it is about to go anyway
    # Stop what runs, with or without readable credentials (stopping needs none).
    old = Stack(paths, saved or State(0, 0), {})
    if pgbouncer_running(old):
        stop_pgbouncer(old)
    # The old stack's own pg_ctl (its major may be the wheel's), or the system's if that is gone.
    install = system_install()
    with contextlib.suppress(ClusterError):
        install = find_install(old.state.postgres_major)
    Cluster(server_dir(paths) / "postgres", old.state.pg_port, install=install).stop()
    Cluster(server_dir(paths) / "replica", old.state.effective_replica_port, install=install).stop()
    echo(f"{RESET_WARNING} removing {paths.state_dir} ...")
    wipe(paths)
    State(
        pg_port or (saved.pg_port if saved else names.POSTGRES_PORT),
        pgbouncer_port or (saved.pgbouncer_port if saved else names.PGBOUNCER_PORT),
        postgres_major or (saved.postgres_major if saved else None),
        replica=saved.replica if saved else True,
        replica_port=saved.replica_port if saved and not pg_port else 0,
    ).save(paths)
    stack = open_stack(paths)
    up(stack, echo)
    return stack


# ---------------------------------------------------------------- psql


PSQL_ROLES = {
    # --role: (login role, via PgBouncer?, database)
    "app": (names.APP_ROLE, True, names.DATABASE_NAME),
    "readonly": (names.READONLY_ROLE, True, names.READ_POOL_DATABASE),
    "migrator": (names.MIGRATOR_ROLE, False, names.DATABASE_NAME),
    # The master role (RDS's master user): owns the pg_cron jobs, so only it sees them in cron.job.
    "admin": (DEFAULT_ADMIN_USER, False, names.DATABASE_NAME),
}


def psql_env(stack: Stack, role: str) -> dict[str, str]:
    """libpq environment for psql as role: the password in PGPASSWORD, never on a command line.

    verify-full against the stack's CA on both paths (PgBouncer's certificate is that CA's too), except
    the direct path to the wheel's PostgreSQL 18, which has no TLS (sslmode=disable)."""
    user, pooled, database = PSQL_ROLES[role]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=HOST,
        PGPORT=str(stack.state.pgbouncer_port if pooled else stack.state.pg_port),
        PGDATABASE=database,
        PGUSER=stack.creds[user].username,
        PGPASSWORD=stack.creds[user].password,
        PGSSLMODE="verify-full" if pooled or stack.cluster.install.tls else "disable",
        PGSSLROOTCERT=str(stack.cluster.ca_file),
        PGAPPNAME=f"dbctl local psql ({role})",
    )
    return env
