"""The pool under faults and hostile clients (issue 11, items 1, 6, 7, 9), through the real pgbouncer.

Each test starts its own PgBouncer on the rendered config; the restart test has a PostgreSQL of its own.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.postgres import postmaster
from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.postgres.install import find_binary
from dbctl.schema import deploy, maintenance, migrate
from tests.integration.conftest import (
    REPO_ROOT,
    login_user,
    migrate_command,
    scratch_database,
    secret_shaped,
)
from tests.integration.pgbouncer.test_pgbouncer import Bouncer, _cleanup, _start

pytestmark = pytest.mark.integration
RECOVERY_BOUND_S = 6.0


@pytest.fixture
def database(pg_cluster: Cluster, verifiers: dict[str, str]) -> Iterator[str]:
    with scratch_database(pg_cluster, "pool_", verifiers) as name:
        yield name


@pytest.fixture
def one_connection_pool(pg_cluster: Cluster, database: str, verifiers: dict[str, str]) -> Iterator[Bouncer]:
    """Pools of exactly one server connection: consecutive clients share it, so state could carry over."""
    started = _start(
        pg_cluster, database, verifiers, default_pool_size=1, min_pool_size=0, reserve_pool_size=0
    )
    yield started
    _cleanup(started)


def cli_migrate(cluster: Cluster, database: str, credentials: Path) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": cluster.admin_url(database), "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        migrate_command("migrate", "--json", "--credentials", str(credentials)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
    )


def test_any_credentials_form_leaves_server_and_pooler_one_verifier(
    pg_cluster: Cluster,
    database: str,
    one_connection_pool: Bouncer,
    role_passwords: dict[str, str],
    tmp_path: Path,
) -> None:
    """Today plaintext passwords got new verifiers on the server; PgBouncer kept the old: logins failed."""
    app = one_connection_pool.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE])
    plaintext = tmp_path / "plaintext.json"
    plaintext.write_text(json.dumps(role_passwords))
    refused = cli_migrate(pg_cluster, database, plaintext)
    assert refused.returncode == 2
    assert "spike_app is a plaintext password" in json.loads(refused.stdout)["error"]
    with psycopg.connect(app) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (names.APP_ROLE,)

    shaped = tmp_path / "secrets.json"
    shaped.write_text(json.dumps(secret_shaped(role_passwords)))
    accepted = cli_migrate(pg_cluster, database, shaped)
    assert accepted.returncode == 0, accepted.stdout
    assert json.loads(accepted.stdout)["role_changes"] == []  # the server already had these verifiers
    with psycopg.connect(app) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (names.APP_ROLE,)


def test_session_state_does_not_reach_the_next_pooled_client(
    one_connection_pool: Bouncer, role_passwords: dict[str, str]
) -> None:
    """Today `SET default_transaction_read_only = off` stayed on the server connection for the next client."""
    readonly = one_connection_pool.conninfo(
        names.READONLY_ROLE, role_passwords[names.READONLY_ROLE], names.READ_POOL_DATABASE
    )
    # Session-level SETs outlive the transaction they ran in.
    with psycopg.connect(readonly, autocommit=True) as first, first.transaction():
        first.execute("SET TRANSACTION READ WRITE")
        first.execute("SET default_transaction_read_only = off")
        first.execute("SET statement_timeout = 0")
        first.execute("PREPARE left_behind AS SELECT 1")
        first.execute("LISTEN left_behind")
        backend = first.execute("SELECT pg_backend_pid()").fetchone()
    with psycopg.connect(readonly, autocommit=True) as second:
        assert second.execute("SELECT pg_backend_pid()").fetchone() == backend  # the same server connection
        assert second.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert second.execute("SHOW statement_timeout").fetchone() == ("5min",)
        assert second.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert second.execute("SELECT count(*) FROM pg_listening_channels()").fetchone() == (0,)


def test_a_lock_taken_through_the_pool_is_gone_when_its_transaction_ends(
    pg_cluster: Cluster, database: str, one_connection_pool: Bouncer, role_passwords: dict[str, str]
) -> None:
    """Today pg_advisory_lock(72707369) through the read pool outlived its client and blocked migrations."""
    readonly = one_connection_pool.conninfo(
        names.READONLY_ROLE, role_passwords[names.READONLY_ROLE], names.READ_POOL_DATABASE
    )
    with psycopg.connect(readonly, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
    with psycopg.connect(pg_cluster.admin_conninfo(database), autocommit=True) as admin:
        held = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s", (migrate.LOCK_KEY,)
        ).fetchone()
    assert held == (0,)  # DISCARD ALL (server_reset_query_always) released it with the transaction


def test_the_runner_ends_an_idle_pooled_role_session_holding_the_migration_lock(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    """Whatever way a pooled role got the lock (a pool without the reset, a direct login), it is no run."""
    holder = psycopg.connect(
        pg_cluster.conninfo(login_user(names.READONLY_ROLE), role_passwords[names.READONLY_ROLE], database),
        autocommit=True,
    )
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        pid = holder.info.backend_pid
        report = deploy.run_migrate(pg_cluster.admin_url(database), verifiers, lock_wait=30)
        lock_step = next(step for step in report.steps if step.step == "lock")
        assert f"ended session {pid} of spike_readonly_a" in lock_step.detail
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
    finally:
        holder.close()


def test_a_migration_run_holding_the_lock_is_still_waited_for(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str]
) -> None:
    """The admin (or spike_migrator, as prisma migrate deploy) holding it is another run: never ended."""
    with psycopg.connect(pg_cluster.admin_conninfo(database), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        with pytest.raises(DbctlError, match="another migration run holds advisory lock 72707369"):
            deploy.run_migrate(pg_cluster.admin_url(database), verifiers, lock_wait=1)
        assert other.execute("SELECT 1").fetchone() == (1,)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A PostgreSQL of this test's own: it gets restarted."""
    with throwaway_cluster("dbctl-test-restart-", pgstattuple_schema=maintenance.SCHEMA) as cluster:
        yield cluster


def test_pooled_queries_work_again_soon_after_a_restart_under_load(
    own_cluster: Cluster, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    """Today server_login_retry=15: after a 0.3 s restart clients got "server login has been failing"
    for 15 s."""
    deploy.run_migrate(own_cluster.admin_url(names.DATABASE_NAME), verifiers)
    bouncer = _start(own_cluster, names.DATABASE_NAME, verifiers)
    app = bouncer.conninfo(names.APP_ROLE, role_passwords[names.APP_ROLE]).replace(
        "connect_timeout=30", "connect_timeout=5"
    )
    events: list[tuple[float, str]] = []  # (monotonic time, "ok" or the error's first line)
    stop = threading.Event()

    def client() -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        for _ in range(20000):  # bounded: about 3 s of steady load plus the outage
            if stop.is_set():
                break
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(app, autocommit=True)
                conn.execute("SELECT 1")
                events.append((time.monotonic(), "ok"))
            except psycopg.Error as exc:
                events.append((time.monotonic(), str(exc).strip().splitlines()[0]))
                if conn is not None:
                    conn.close()
                time.sleep(0.02)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)
        before = own_cluster.postmaster_pid()
        # One pg_ctl restart, as a minor-version patch or a crash recovery does.
        restart_args = ["restart", "--pgdata", str(own_cluster.data_dir), "-m", "fast", "-w"]
        restart = postmaster.run(own_cluster, [str(find_binary("pg_ctl")), *restart_args])
        assert restart.returncode == 0
        own_cluster.wait_ready()
        ready = time.monotonic()
        restarted = own_cluster.postmaster_pid() not in (None, before)
        deadline = ready + 20
        while time.monotonic() < deadline and not any(t > ready and e == "ok" for t, e in list(events)):
            time.sleep(0.05)
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        _cleanup(bouncer)
    errors = [e for _, e in events if e != "ok"]
    first_ok = min((t for t, e in events if t > ready and e == "ok"), default=None)
    # PgBouncer may hide a short restart from every client (it queues them while it logs in again), so
    # errors are counted, not required; a new postmaster proves the restart happened.
    assert restarted, "pg_ctl restart left the same postmaster: nothing was measured"
    assert first_ok is not None, "no pooled query worked within 20 s of the server accepting connections"
    recovered = first_ok - ready
    # Clients already waiting for a login may still get the cached error just after the first success.
    late = sum(1 for t, e in events if t > first_ok and e != "ok")
    print(
        f"\nrestart under load: {len(errors)} client errors ({late} after the first success); pooled queries "
        f"work again {recovered:.2f} s after PostgreSQL accepts connections "
        f"(server_login_retry = {bouncer.config.server_login_retry} s)"
    )
    # The target is 2 s (measured: under 1 s). The bound is generous so a loaded machine cannot
    # flake it; the old server_login_retry = 15 s cannot meet it (measured 14.6 s).
    assert recovered < RECOVERY_BOUND_S
