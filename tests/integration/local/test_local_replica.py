"""The local stack's hot standby (issue 17), against the real servers `dbctl local up` starts.

- DATABASE_READ_URL reaches a server in recovery, with production's standby settings;
- a write through DATABASE_URL shows up through DATABASE_READ_URL (the lag is printed);
- the read pool refuses writes because the server is in recovery, not because of a role setting;
- hot_standby_feedback keeps a long replica query alive through a vacuum on the primary (and without it,
  the same query is cancelled: the control that shows the test can fail);
- with two more replicas (a fixture on Unix sockets in two directories, one port number: PgBouncer's host
  list shares one `port`, and tests send traffic only to 127.0.0.1), the read pool spreads server
  connections over both.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql

from dbctl.core import names
from dbctl.local import replica as local_replica
from dbctl.local.bouncer import pooled_verifiers
from dbctl.local.env import libpq_url, read_env
from dbctl.local.stack import Stack, existing_stack
from dbctl.local.state import Paths
from dbctl.pgbouncer.config import PgBouncerConfig, ServerTls, render_ini
from dbctl.pgbouncer.process import PgBouncerServer, detect_version, find_pgbouncer
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.config import MAX_CONNECTIONS
from dbctl.postgres.osproc import HOST, free_port, service_owner
from tests.integration.local.test_local import (
    LocalStack,
    dbctl_local,
    insert_user,
    new_root,
    running_stack,
    user_exists,
)

# A guard against a hang, not a timing assertion: replication on one machine takes milliseconds.
CATCH_UP_S = 60

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack() as s:
        yield s


def opened(stack: LocalStack) -> Stack:
    return existing_stack(stack.paths)


def wait_for_replay(primary: Cluster, replica: Cluster) -> None:
    """Until the replica has replayed everything the primary has written so far."""
    with psycopg.connect(primary.admin_conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    target = row[0]
    deadline = time.monotonic() + CATCH_UP_S
    with psycopg.connect(replica.admin_conninfo("postgres"), autocommit=True) as conn:
        while True:
            done = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
            if done and done[0]:
                return
            assert time.monotonic() < deadline, f"the replica did not replay up to {target}"
            time.sleep(0.01)


# ---------------------------------------------------------------- the read URL reaches a hot standby


@pytest.mark.integration
def test_database_read_url_reaches_a_hot_standby_with_productions_settings(stack: LocalStack) -> None:
    s = opened(stack)
    with stack.connect("DATABASE_READ_URL") as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), inet_server_port(), current_setting('hot_standby_feedback'), "
            "current_setting('max_standby_streaming_delay'), current_setting('max_standby_archive_delay')"
        ).fetchone()
    assert row == (True, s.state.effective_replica_port, "on", "30s", "30s")
    with stack.connect("DATABASE_URL") as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), inet_server_port()").fetchone() == (
            False,
            stack.pg_port,
        )
    # The replica's certificate is its own, from the stack's CA (PgBouncer verifies it: verify-full).
    assert s.replica.cert_file.read_bytes() != s.cluster.cert_file.read_bytes()
    assert s.authority.signed(s.replica.cert_file)


@pytest.mark.integration
def test_status_shows_the_replica_streaming_and_its_lag(stack: LocalStack) -> None:
    result = dbctl_local(stack.root, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    (replica,) = [line for line in result.stdout.splitlines() if line.startswith("Replica ")]
    assert f"running on 127.0.0.1:{opened(stack).state.effective_replica_port}" in replica
    (replication,) = [line for line in result.stdout.splitlines() if line.startswith("replication ")]
    assert "in recovery: True; streaming, replay lag " in replication and " bytes" in replication


@pytest.mark.integration
def test_a_write_through_database_url_shows_up_through_database_read_url(stack: LocalStack) -> None:
    with stack.connect("DATABASE_URL") as writer, stack.connect("DATABASE_READ_URL") as reader:
        user_id = insert_user(writer)
        committed = time.perf_counter()
        polls = 0
        while not user_exists(reader, user_id):
            polls += 1
            assert time.perf_counter() - committed < CATCH_UP_S, "the write never reached the replica"
        seen_ms = (time.perf_counter() - committed) * 1000
    s = opened(stack)
    with psycopg.connect(s.cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(extract(epoch FROM replay_lag) * 1000, 0)::float8 FROM pg_stat_replication "
            "WHERE application_name = %s",
            (local_replica.SLOT,),
        ).fetchone()
    assert row is not None
    print(
        f"\nread-your-write lag through the read pool: visible after {seen_ms:.1f} ms ({polls} empty "
        f"read(s) first); the primary's replay_lag: {row[0]:.1f} ms"
    )


@pytest.mark.integration
def test_the_read_pool_refuses_writes_because_the_server_is_in_recovery(stack: LocalStack) -> None:
    """As spike_app, which may INSERT (it does on the primary), with read-only switched off in the session:
    the read pool's server still refuses, and says recovery is why."""
    app = stack.env()["DATABASE_URL"]
    via_read_pool = libpq_url(app).replace(f"/{names.DATABASE_NAME}?", f"/{names.READ_POOL_DATABASE}?")
    with psycopg.connect(via_read_pool, connect_timeout=10) as conn:
        conn.execute("SET default_transaction_read_only = off")
        settings = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
        ).fetchone()
        assert settings == (True, "off")
        with pytest.raises(errors.ReadOnlySqlTransaction, match="cannot execute INSERT in a read-only"):
            insert_user(conn)
        conn.rollback()
        with pytest.raises(psycopg.Error, match="cannot set transaction read-write mode during recovery"):
            conn.execute("SET transaction_read_only = off")
        conn.rollback()
    with stack.connect("DATABASE_URL") as primary:
        assert user_exists(primary, insert_user(primary))  # the same role writes on the primary


# ---------------------------------------------------------------- hot_standby_feedback


def _long_query_through_a_vacuum(primary: Cluster, replica: Cluster, database: str) -> int:
    """A replica transaction reads a table; the primary deletes every row and vacuums it; once the replica
    has replayed that, the same transaction reads the table again. Returns what the second read counted."""
    table = sql.Identifier(f"t_{uuid.uuid4().hex[:8]}")
    count = sql.SQL("SELECT count(*) FROM {}").format(table)
    with psycopg.connect(primary.admin_conninfo(database), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} AS SELECT g AS id FROM generate_series(1, 1000) g").format(table)
        )
    wait_for_replay(primary, replica)
    with psycopg.connect(replica.admin_conninfo(database)) as long_query:
        long_query.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        first = long_query.execute(count).fetchone()
        assert first == (1000,)
        with psycopg.connect(primary.admin_conninfo(database), autocommit=True) as conn:
            with conn.transaction():
                conn.execute(sql.SQL("DELETE FROM {}").format(table))
                deleted_by = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
            assert deleted_by is not None
            if replica_feedback_on(replica):
                # Feedback arrives every wal_receiver_status_interval: wait until the primary holds back.
                deadline = time.monotonic() + CATCH_UP_S
                while not primary_holds_back(primary, int(str(deleted_by[0]))):
                    assert time.monotonic() < deadline, "the replica's xmin never reached the primary"
                    time.sleep(0.1)
            conn.execute(sql.SQL("VACUUM {}").format(table))
        wait_for_replay(primary, replica)
        row = long_query.execute(count).fetchone()
        assert row is not None
        return int(str(row[0]))


def replica_feedback_on(replica: Cluster) -> bool:
    with psycopg.connect(replica.admin_conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('hot_standby_feedback')").fetchone()
    return row == ("on",)


def primary_holds_back(primary: Cluster, xid: int) -> bool:
    """The replica's slot carries its fed-back xmin at or before xid: vacuum keeps the rows it needs.
    (With a slot, the feedback lands in pg_replication_slots.xmin, not pg_stat_replication.backend_xmin.)"""
    with psycopg.connect(primary.admin_conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT xmin::text::bigint <= %s FROM pg_replication_slots WHERE slot_name = %s",
            (xid, local_replica.SLOT),
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.integration
def test_hot_standby_feedback_keeps_a_long_replica_query_alive_through_a_vacuum(stack: LocalStack) -> None:
    s = opened(stack)
    database = f"feedback_{uuid.uuid4().hex[:8]}"
    s.cluster.create_database(database)
    try:
        # Production's settings: the rows the replica's snapshot needs survive the vacuum; no cancellation.
        assert _long_query_through_a_vacuum(s.cluster, s.replica, database) == 1000
        # The control: without feedback and with no standby delay, replaying the vacuum cancels the query.
        with psycopg.connect(s.replica.superuser_conninfo("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET hot_standby_feedback = off")
            conn.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + CATCH_UP_S
        while primary_holds_back(s.cluster, 2**40):
            assert time.monotonic() < deadline, "the primary still holds back for the replica"
            time.sleep(0.1)
        with pytest.raises(psycopg.Error, match="conflict with recovery"):
            _long_query_through_a_vacuum(s.cluster, s.replica, database)
    finally:
        with psycopg.connect(s.replica.superuser_conninfo("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET hot_standby_feedback")
            conn.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
            conn.execute("SELECT pg_reload_conf()")
        with psycopg.connect(s.cluster.admin_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(database)))


# ---------------------------------------------------------------- two replicas behind one read pool


def parent_pid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("PPid:")).split()[1])


@pytest.fixture(scope="module")
def socket_replicas(stack: LocalStack) -> Iterator[list[Cluster]]:
    """Two more hot standbys of the stack's primary, on Unix sockets only (listen_addresses ''), in two
    directories on one port number: a PgBouncer host list shares one `port`, and tests send traffic only to
    127.0.0.1, so a second address is no option. They stream from the primary on 127.0.0.1."""
    s = opened(stack)
    base = Path(tempfile.mkdtemp(prefix="dbctl-test-replicas-"))
    base.chmod(0o755)
    port = free_port()
    replicas: list[Cluster] = []
    try:
        for n in (1, 2):
            sockets = base / f"s{n}"  # short: a socket path must fit in 107 bytes
            sockets.mkdir(mode=0o755)
            owner = service_owner()
            if owner is not None:
                os.chown(sockets, *owner)
            replica = dataclasses.replace(
                s.replica, base_dir=base / f"replica{n}", host=str(sockets), port=port
            )
            replicas.append(replica)
            local_replica.create(
                s.cluster, replica, stack.paths, MAX_CONNECTIONS, slot=f"spike_test_replica_{n}"
            )
        yield replicas
    finally:
        for n, replica in enumerate(replicas, 1):
            local_replica.remove(s.cluster, replica, slot=f"spike_test_replica_{n}")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.integration
def test_the_read_pool_spreads_connections_over_two_replicas(
    stack: LocalStack, socket_replicas: list[Cluster]
) -> None:
    s = opened(stack)
    version = detect_version(find_pgbouncer())
    directory = Path(tempfile.mkdtemp(prefix="dbctl-test-two-replicas-"))
    directory.chmod(0o755)
    server = PgBouncerServer(directory / "pgbouncer")
    hosts = tuple(r.host for r in socket_replicas)
    config: PgBouncerConfig = server.config(
        primary_host=HOST,
        primary_port=s.state.pg_port,
        read_hosts=hosts,
        read_port=socket_replicas[0].port,
        listen_addr=HOST,
        listen_port=free_port(),
        min_pool_size=0,
        # No TLS on a Unix socket (PgBouncer and libpq never negotiate it there); the TLS side of a host list
        # (verify-full needs 1.25, pgbouncer#1300) is the settings check's, see test_pgbouncer_config.
        server_tls=ServerTls(sslmode="disable"),
    )
    line = next(x for x in render_ini(config).splitlines() if x.startswith(names.READ_POOL_DATABASE))
    assert f"host={hosts[0]},{hosts[1]} " in line
    assert ("load_balance_hosts=round-robin" in line) is (version >= (1, 24))
    readonly = s.creds[names.READONLY_ROLE]
    clients: list[Conn] = []
    try:
        server.start(config, pooled_verifiers(s.creds))
        # Eight clients inside a transaction at once: eight server connections, opened one after another.
        for _ in range(8):
            conn = psycopg.connect(
                host=HOST,
                port=config.listen_port,
                dbname=names.READ_POOL_DATABASE,
                user=readonly.username,
                password=readonly.password,
                sslmode="disable",
                connect_timeout=10,
            )
            clients.append(conn)
        pids = [c.execute("SELECT pg_backend_pid()").fetchone() for c in clients]
        # Which replica serves each: a backend's parent is its postmaster (read while the clients hold them).
        postmasters = {r.postmaster_pid(): r.host for r in socket_replicas}
        seen = [(postmasters.get(parent_pid(int(str(row[0])))), int(str(row[0]))) for row in pids if row]
    finally:
        for conn in clients:
            conn.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    per_replica: dict[str | None, set[int]] = {}
    for host, pid in seen:
        per_replica.setdefault(host, set()).add(pid)
    print(f"\nread pool over two replicas (Unix sockets): backend pids per replica {per_replica}")
    assert set(per_replica) == set(hosts)
    assert sum(len(pids) for pids in per_replica.values()) == 8
    assert all(len(pids) >= 2 for pids in per_replica.values())  # round-robin: every other new connection


# ---------------------------------------------------------------- off and on, down, up and reset


def in_recovery(root: Path) -> bool:
    env = read_env(Paths(root))
    with psycopg.connect(libpq_url(env["DATABASE_READ_URL"]), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def slots(s: Stack) -> list[object]:
    with psycopg.connect(s.cluster.superuser_conninfo("postgres"), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]


@pytest.mark.integration
def test_no_replica_is_remembered_and_down_up_reset_handle_the_replica() -> None:
    root = new_root()
    paths = Paths(root)
    ports = ["--pg-port", str(free_port()), "--pgbouncer-port", str(free_port())]
    replica_port = str(free_port())
    try:
        light = dbctl_local(root, "up", *ports, "--no-replica", "--replica-port", replica_port)
        assert light.returncode == 0, light.stderr
        s = existing_stack(paths)
        assert not s.state.replica and not s.replica.base_dir.exists() and slots(s) == []
        assert not in_recovery(root)  # the read pool on the primary
        assert "Replica     none (--no-replica)" in dbctl_local(root, "status").stdout
        assert dbctl_local(root, "up").stderr.count("pg_basebackup") == 0  # the choice is remembered

        on = dbctl_local(root, "up", "--replica")
        assert on.returncode == 0, on.stderr
        assert "pg_basebackup" in on.stderr and "restarting PgBouncer" in on.stderr
        s = existing_stack(paths)
        assert s.state.replica and s.replica.port == int(replica_port) and in_recovery(root)
        assert slots(s) == [local_replica.SLOT]

        assert dbctl_local(root, "down").returncode == 0
        assert not s.replica.is_running() and not s.cluster.is_running()
        stopped = dbctl_local(root, "status")
        assert stopped.returncode == 1 and f"Replica     stopped (port {replica_port})" in stopped.stdout
        again = dbctl_local(root, "up")
        assert again.returncode == 0 and "starting the replica" in again.stderr
        assert in_recovery(root) and dbctl_local(root, "status").returncode == 0

        reset = dbctl_local(root, "reset", "--yes")
        assert reset.returncode == 0, reset.stderr
        assert "pg_basebackup" in reset.stderr and in_recovery(root)

        off = dbctl_local(root, "up", "--no-replica")
        assert off.returncode == 0 and "removing the replica" in off.stderr
        s = existing_stack(paths)
        assert not s.replica.base_dir.exists() and slots(s) == [] and not in_recovery(root)
    finally:
        dbctl_local(root, "down")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
def test_no_bootstrap_verifier_reaches_pg_stat_statements(stack: LocalStack) -> None:
    # The stack's own CREATE ROLE … PASSWORD '<verifier>' (the admin, the replicator) run as the bootstrap
    # superuser; spike_monitor reads every statement's text through pg_monitor.
    s = existing_stack(stack.paths)
    monitor = s.creds[names.MONITOR_ROLE]
    conninfo = s.cluster.conninfo(monitor.username, monitor.password, names.DATABASE_NAME)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        recorded = conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
        leaked = conn.execute(
            "SELECT left(query, 40) FROM pg_stat_statements WHERE query ILIKE %s", ("%SCRAM-SHA-256$%",)
        ).fetchall()
    assert recorded is not None and recorded[0] > 0  # it does record (the view is not empty)
    assert leaked == []
