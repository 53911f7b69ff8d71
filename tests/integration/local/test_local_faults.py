"""The local stack under faults (issue 11, items 10-12): two `up` at once, a damaged credentials.json, and
an `up` killed while it builds the cluster. Each test has a fresh root of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbctl.core import names
from dbctl.local.env import libpq_url, read_env
from dbctl.local.stack import server_dir
from dbctl.local.state import Paths, State
from dbctl.postgres.osproc import free_port, port_is_free
from tests.integration.local.test_local import REPO_ROOT, dbctl_local, new_root

pytestmark = pytest.mark.integration


@pytest.fixture
def root() -> Iterator[Path]:
    path = new_root()
    try:
        yield path
    finally:
        dbctl_local(path, "down")
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(server_dir(Paths(path)), ignore_errors=True)


def start_up(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.Popen(
        [sys.executable, "-m", "dbctl", "local", "--root", str(root), "up", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        start_new_session=True,  # its own process group: initdb and the servers it starts go with a killpg
    )


def connect_direct(root: Path) -> psycopg.Connection[tuple[object, ...]]:
    url = read_env(Paths(root))["DIRECT_URL"]
    return psycopg.connect(libpq_url(url), connect_timeout=10)


# ---------------------------------------------------------------- item 10: two `up` at once


def test_two_ups_at_once_make_one_stack(root: Path) -> None:
    ports = ("--pg-port", str(free_port()), "--pgbouncer-port", str(free_port()))
    first, second = start_up(root, *ports), start_up(root, *ports)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    said = "".join(out + err for out, err in outputs)
    assert "waiting for it" in said  # the one that came second said why it waited
    assert "already running; nothing changed" in said  # ... and then found the stack made
    with connect_direct(root) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (names.MIGRATOR_ROLE,)


# ------------------------------------------------------- item 11: credentials.json is never overwritten


@pytest.mark.parametrize(
    "content",
    [b"{}", b'{"spike_app": {"username": "spike_app"', b"\xff\xfe not utf-8", b"[]"],
    ids=["empty-object", "truncated", "not-utf8", "not-an-object"],
)
@pytest.mark.parametrize("command", ["status", "up", "down"])
def test_a_damaged_credentials_file_is_one_error_and_left_untouched(
    root: Path, content: bytes, command: str
) -> None:
    paths = Paths(root)
    State(free_port(), free_port()).save(paths)
    paths.credentials_file.write_bytes(content)
    result = dbctl_local(root, command)
    assert result.returncode != 0
    assert paths.credentials_file.read_bytes() == content
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "credentials.json is incomplete or corrupt" in error[0], result.stderr
    assert "reset --yes" in error[0]
    assert not (paths.state_dir / "postgres").exists()


def test_a_missing_credentials_file_beside_a_cluster_is_refused(root: Path) -> None:
    result = dbctl_local(
        root, "up", "--pg-port", str(free_port()), "--pgbouncer-port", str(free_port()), "--no-replica"
    )
    assert result.returncode == 0, result.stderr
    assert dbctl_local(root, "down").returncode == 0
    paths = Paths(root)
    saved = paths.credentials_file.read_bytes()
    paths.credentials_file.unlink()
    again = dbctl_local(root, "up")
    assert again.returncode != 0
    assert "credentials.json is missing, but this stack's cluster exists" in again.stderr
    assert not paths.credentials_file.exists()  # no new passwords that would not open the cluster
    paths.credentials_file.write_bytes(saved)


# ---------------------------------------------------------------- item 12: an interrupted first `up`


def _wait_for(predicate: object, timeout: float = 120) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the moment to interrupt never came"
        time.sleep(0.01)


@pytest.mark.parametrize("moment", ["initdb", "server-started"])
def test_an_interrupted_first_up_leaves_nothing_half_made(root: Path, moment: str) -> None:
    paths = Paths(root)
    base = server_dir(paths) / "postgres"
    pg_port, pgbouncer_port = free_port(), free_port()
    proc = start_up(root, "--pg-port", str(pg_port), "--pgbouncer-port", str(pgbouncer_port))
    marker = "data/global" if moment == "initdb" else "data/postmaster.pid"
    _wait_for(lambda: any(base.glob(f".init-*/{marker}")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Nothing in place that a later start would take for a cluster, and no password file outside the
    # private build dir.
    assert not (base / "data").exists()
    assert not list(base.glob("bootstrap.pw"))
    # The next `up` clears the leftovers (stopping a server they had started), then builds the stack.
    result = dbctl_local(root, "up")
    assert result.returncode == 0, result.stderr
    assert "interrupted `up`" in result.stderr
    assert not list(base.glob(".init-*"))
    with connect_direct(root) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (names.MIGRATOR_ROLE,)
    assert json.loads(paths.state_file.read_text())["pg_port"] == pg_port
    assert dbctl_local(root, "down").returncode == 0
    assert port_is_free(pg_port)  # no server left behind from the interrupted run
