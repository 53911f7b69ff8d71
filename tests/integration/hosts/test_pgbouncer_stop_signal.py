"""How the real PgBouncer (the pinned 1.24.1 when ./dev built it) stops on each signal systemd could send.

The hosts' unit stops PgBouncer with `KillSignal=SIGINT` and `TimeoutStopSec=DRAIN_SECONDS`
(components/pgbouncer_image_document.py, the image's template unit). This shows why, on the binary itself,
with a client holding a transaction open through it and another idle (an app pool's connection, between
queries):

- SIGINT (safe shutdown): the transaction finishes (its statements and its COMMIT succeed), then PgBouncer
  closes both clients and exits: a stop takes as long as the longest transaction in flight;
- SIGTERM (systemd's default; since 1.23 "wait for every client to disconnect"): PgBouncer keeps running as
  long as the idle client stays, which an app pool's connection does for hours: systemd would SIGKILL it
  after TimeoutStopSec, transactions and all.

Each test prints what it measured (signal to exit); none asserts a duration beyond the ordering of events.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from components import pgbouncer_image_document as doc
from dbctl.core import names
from dbctl.pgbouncer.config import POOLED_ROLES, ServerTls
from dbctl.pgbouncer.process import PgBouncerServer
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.osproc import free_port
from tests.integration.conftest import login_user, scratch_database

pytestmark = pytest.mark.integration

# Long enough that a PgBouncer which would exit does so well within it (it exits in milliseconds).
OBSERVE_SECONDS = 3.0


@pytest.fixture(scope="module")
def database(pg_cluster: Cluster, verifiers: dict[str, str]) -> Iterator[str]:
    with scratch_database(pg_cluster, "pgb_stop_", verifiers) as name:
        yield name


@pytest.fixture
def bouncer(pg_cluster: Cluster, database: str, verifiers: dict[str, str]) -> Iterator[PgBouncerServer]:
    directory = Path(tempfile.mkdtemp(prefix="dbctl-test-pgbouncer-stop-"))
    server = PgBouncerServer(directory)
    config = server.config(
        primary_host=pg_cluster.host,
        primary_port=pg_cluster.port,
        server_dbname=database,
        listen_port=free_port(),
        server_tls=ServerTls(sslmode="verify-full", ca_file=str(pg_cluster.ca_file)),
    )
    server.start(config, {login_user(r): verifiers[login_user(r)] for r in POOLED_ROLES})
    assert server.is_running() and len(server.pids) == 1
    assert server.version >= (1, 23)  # the SIGTERM meaning this is about (the pinned hosts' 1.24.1 here)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _connect(server: PgBouncerServer, password: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        make_conninfo(
            host="127.0.0.1",
            port=str(_port(server)),
            user=login_user(names.APP_ROLE),
            password=password,
            dbname=names.DATABASE_NAME,
            sslmode="disable",
            connect_timeout="10",
        )
    )


def _port(server: PgBouncerServer) -> int:
    for line in server.ini_path.read_text().splitlines():
        if line.replace(" ", "").startswith("listen_port="):
            return int(line.split("=", 1)[1])
    raise AssertionError("no listen_port in pgbouncer.ini")


def _exited_within(server: PgBouncerServer, seconds: float) -> float | None:
    """Seconds until PgBouncer's process exited, or None if it still runs after `seconds`."""
    proc = server.process
    assert proc is not None
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if proc.poll() is not None:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def _send(server: PgBouncerServer, sig: signal.Signals) -> float:
    proc = server.process
    assert proc is not None and proc.poll() is None
    os.kill(proc.pid, sig)
    return time.monotonic()


def test_the_unit_stops_with_sigint_within_the_deregistration_delay() -> None:
    assert (doc.STOP_SIGNAL, doc.DRAIN_SECONDS) == ("SIGINT", 30)


def test_sigint_lets_the_open_transaction_commit_then_closes_every_client_and_exits(
    bouncer: PgBouncerServer, role_passwords: dict[str, str]
) -> None:
    password = role_passwords[names.APP_ROLE]
    busy, idle = _connect(bouncer, password), _connect(bouncer, password)
    idle.execute("select 1").fetchone()
    idle.commit()  # between transactions now, as an app pool's connection sits
    busy.execute("select 1").fetchone()  # psycopg opened a transaction: a server is bound to this client
    signalled = _send(bouncer, signal.SIGINT)
    # The transaction holds PgBouncer up: it neither exits nor cuts the client.
    assert _exited_within(bouncer, OBSERVE_SECONDS) is None
    assert busy.execute("select 2").fetchone() == (2,)  # still served inside its transaction
    busy.commit()  # COMMIT succeeds: nothing in flight was lost
    committed = time.monotonic()
    after_commit = _exited_within(bouncer, OBSERVE_SECONDS)
    assert after_commit is not None, "PgBouncer kept running after the last transaction ended on SIGINT"
    print(
        f"SIGINT: transaction open {committed - signalled:.2f} s after the signal (the test's own wait), "
        f"then PgBouncer exited {after_commit:.2f} s after its COMMIT"
    )
    for client in (busy, idle):  # both were closed by PgBouncer, which is gone
        with pytest.raises(psycopg.OperationalError):
            client.execute("select 3")
        client.close()


def test_sigterm_waits_for_an_idle_client_to_leave(
    bouncer: PgBouncerServer, role_passwords: dict[str, str]
) -> None:
    idle = _connect(bouncer, role_passwords[names.APP_ROLE])
    idle.execute("select 1").fetchone()
    idle.commit()
    signalled = _send(bouncer, signal.SIGTERM)
    # No transaction anywhere, yet PgBouncer stays: under systemd this is the stop that hangs to SIGKILL.
    assert _exited_within(bouncer, OBSERVE_SECONDS) is None
    assert idle.execute("select 4").fetchone() == (4,)  # the idle client is still served
    idle.commit()
    idle.close()
    left = time.monotonic()
    after_leave = _exited_within(bouncer, OBSERVE_SECONDS)
    assert after_leave is not None, "PgBouncer kept running after its last client left on SIGTERM"
    print(
        f"SIGTERM: still running {left - signalled:.2f} s after the signal with one idle client; "
        f"exited {after_leave:.2f} s after that client disconnected"
    )
