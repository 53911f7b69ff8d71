"""Two PgBouncer processes on one port (so_reuseport + [peers]) on the real binary, in front of a real
PostgreSQL: both serve, every cancel request reaches the process running the query, and the server never
sees more than processes x pool size connections. Nothing here measures time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dbctl.core import names
from dbctl.postgres.cluster import Cluster
from tests.integration.conftest import login_user
from tests.integration.pgbouncer.test_pgbouncer import Bouncer, _cleanup, _start, database

pytestmark = pytest.mark.integration
__all__ = ["database"]  # the module fixture reused from test_pgbouncer

PROCESSES = 2
QUERIES = 16  # all right by chance without [peers]: 2**-16


@pytest.fixture(scope="module")
def two(pg_cluster: Cluster, database: str, verifiers: dict[str, str]) -> Iterator[Bouncer]:
    started = _start(pg_cluster, database, verifiers, processes=PROCESSES)
    yield started
    _cleanup(started)


def console(bouncer: Bouncer, peer_id: int, password: str) -> psycopg.Connection[tuple[object, ...]]:
    """Process `peer_id`'s admin console, over its own Unix socket (TCP reaches either process)."""
    return psycopg.connect(
        make_conninfo(
            host=bouncer.config.socket_dir(peer_id),
            port=str(bouncer.config.listen_port),
            user=login_user(names.MONITOR_ROLE),
            password=password,
            dbname="pgbouncer",
        ),
        autocommit=True,
    )


def app_clients(bouncer: Bouncer, monitor_password: str) -> dict[int, int]:
    """Per process: how many spike_app clients it holds (SHOW CLIENTS)."""
    counts = {}
    for peer_id in bouncer.config.peer_ids:
        with console(bouncer, peer_id, monitor_password) as conn:
            cur = conn.execute("SHOW CLIENTS")
            user = [c.name for c in cur.description or []].index("user")
            counts[peer_id] = sum(1 for row in cur.fetchall() if row[user] == login_user(names.APP_ROLE))
    return counts


def server_backends(cluster: Cluster, database: str) -> int:
    """spike_app's connections to the pools' database, as PostgreSQL counts them."""
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = %s",
            (login_user(names.APP_ROLE), database),
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for(condition: Callable[[], bool], what: str, attempts: int = 400) -> None:
    event = threading.Event()
    for _ in range(attempts):
        if condition():
            return
        event.wait(0.05)
    raise AssertionError(f"never happened: {what}")


def test_both_processes_run_on_one_port_and_accept_clients(
    two: Bouncer, role_passwords: dict[str, str]
) -> None:
    monitor = role_passwords[names.MONITOR_ROLE]
    assert two.server.is_running() and len(set(two.server.pids)) == PROCESSES
    for peer_id, pid in zip(two.config.peer_ids, two.server.pids, strict=True):
        pidfile = two.config.process_path(two.config.pidfile or "", peer_id)
        assert int(open(pidfile).read().split()[0]) == pid  # noqa: SIM115
        with console(two, peer_id, monitor) as conn:
            rows = {r[0]: r[1] for r in conn.execute("SHOW CONFIG").fetchall()}
        assert (rows["peer_id"], rows["so_reuseport"], rows["listen_port"]) == (
            str(peer_id),
            "1",
            str(two.config.listen_port),
        )
    app = role_passwords[names.APP_ROLE]
    clients = [psycopg.connect(two.conninfo(names.APP_ROLE, app)) for _ in range(24)]
    try:
        for conn in clients:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        counts = app_clients(two, monitor)
        assert sum(counts.values()) == len(clients)
        assert all(n > 0 for n in counts.values()), counts  # the kernel gave each process some
    finally:
        for conn in clients:
            conn.close()


def test_every_cancel_request_reaches_the_process_that_runs_the_query(
    two: Bouncer, database: str, role_passwords: dict[str, str]
) -> None:
    """Each cancel request is a new TCP connection, which the kernel hands to either process; the one that
    does not own the query forwards it to its peer over the peer's Unix socket."""
    app, monitor = role_passwords[names.APP_ROLE], role_passwords[names.MONITOR_ROLE]
    conns = [psycopg.connect(two.conninfo(names.APP_ROLE, app), autocommit=True) for _ in range(QUERIES)]
    outcomes: dict[int, str] = {}

    def sleep(i: int) -> None:
        try:
            conns[i].execute("SELECT pg_sleep(60)")
            outcomes[i] = "finished"
        except psycopg.errors.QueryCanceled as e:
            # The app role's statement_timeout (30 s) cancels too: only the user's cancel counts.
            outcomes[i] = "cancelled" if "due to user request" in str(e) else f"not cancelled: {e}"
        except psycopg.Error as e:
            outcomes[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=sleep, args=(i,)) for i in range(QUERIES)]
    try:
        counts = app_clients(two, monitor)
        assert all(n > 0 for n in counts.values()), counts  # both processes own some of the queries
        for t in threads:
            t.start()

        def all_sleeping() -> bool:
            with psycopg.connect(two.cluster.admin_conninfo("postgres"), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                    " AND query = 'SELECT pg_sleep(60)'",
                    (database,),
                ).fetchone()
            return row is not None and row[0] == QUERIES

        wait_for(all_sleeping, f"{QUERIES} queries running on the server")
        for conn in conns:
            conn.cancel()
        for t in threads:
            t.join(60)
        assert outcomes == dict.fromkeys(range(QUERIES), "cancelled")
    finally:
        for conn in conns:
            conn.close()


def test_the_server_never_sees_more_than_processes_x_pool_size(
    pg_cluster: Cluster, database: str, verifiers: dict[str, str], role_passwords: dict[str, str]
) -> None:
    pool = 3
    # A database of its own, so the module's other PgBouncer (its idle server connections) is not counted;
    # the roles exist (cluster-wide) and PUBLIC may connect to a new database.
    budget_db = f"{database}_budget"
    pg_cluster.create_database(budget_db)
    started = _start(
        pg_cluster,
        budget_db,
        verifiers,
        processes=PROCESSES,
        default_pool_size=pool,
        min_pool_size=0,
        reserve_pool_size=0,
    )
    app = role_passwords[names.APP_ROLE]
    peak = 0
    done = threading.Event()
    failures: list[str] = []

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server_backends(pg_cluster, budget_db))

    def client() -> None:
        try:
            with psycopg.connect(started.conninfo(names.APP_ROLE, app), autocommit=True) as conn:
                for _ in range(3):
                    conn.execute("SELECT pg_sleep(0.2)")
        except psycopg.Error as e:
            failures.append(f"{type(e).__name__}: {e}")

    watcher = threading.Thread(target=watch)
    burst = [threading.Thread(target=client) for _ in range(40)]
    try:
        watcher.start()
        for t in burst:
            t.start()
        for t in burst:
            t.join(120)
    finally:
        done.set()
        watcher.join(30)
        _cleanup(started)
        with psycopg.connect(pg_cluster.admin_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(budget_db)))
    assert failures == []
    # Each process caps its own pool (max_db_connections = pool): together at most processes x pool, and
    # under this burst more than one process's pool, so the budget must count every process.
    assert pool < peak <= PROCESSES * pool, peak
