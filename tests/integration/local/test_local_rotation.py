"""Credential rotation on the local stack (real PostgreSQL 15, replica, PgBouncer): `dbctl local rotate`.

- the acceptance test: clients run queries through PgBouncer throughout two consecutive rotations (a new
  connection per query for the write pool and the read pool, and one connection opened before the first
  rotation): 0 failed queries;
- a rotation killed between prepare and switch leaves old connections and new logins working, and a rerun
  completes it with the password it had saved;
- a stack built by the single-user layout's code (an earlier commit's dbctl, run from `git archive`)
  upgrades with `up`, keeping its data and passwords.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import psycopg
import pytest

from dbctl.cli.targets import ROOT_ENV_VAR
from dbctl.core import names
from dbctl.local import env as local_env
from dbctl.local.env import libpq_url
from dbctl.local.stack import existing_stack
from dbctl.local.state import Credential
from dbctl.postgres.osproc import free_port
from tests.integration.local.test_local import (
    REPO_ROOT,
    LocalStack,
    dbctl_local,
    insert_user,
    running_stack,
    user_exists,
)

pytestmark = pytest.mark.integration

# The last commit with one login user per pooled role (before alternating users): the upgrade test builds
# its stack with that commit's dbctl. CI checks out the whole history for it (test.yml's fetch-depth: 0).
SINGLE_USER_COMMIT = "4826f97993c2a6fdc8b70a46cc489ce28c8f6d4b"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack() as s:
        yield s


def creds(s: LocalStack) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads(s.paths.credentials_file.read_text())
    return data


def connect_url(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10)


class Client(threading.Thread):
    """Runs `query` until stopped; each failure is recorded with its message. A per-query client connects
    anew each time with the URL it last read (as an app caches its secret) and, on an authentication
    failure, re-reads .env once and retries (what docs/connecting-the-app.md asks of an app): a query fails
    only when that retry fails too."""

    def __init__(self, run: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.run_query = run
        self.stop = threading.Event()
        self.rotating = threading.Event()
        self.ok = 0
        self.during_rotation = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.run_query()
                self.ok += 1
                self.during_rotation += self.rotating.is_set()
            except psycopg.Error as e:
                self.failures.append(str(e).strip().splitlines()[0])


def per_query_client(s: LocalStack, key: str, sql_text: str, rereads: list[int]) -> Callable[[], None]:
    cached = {"url": s.env()[key]}

    def once() -> None:
        try:
            conn = connect_url(cached["url"])
        except psycopg.OperationalError as e:
            # PostgreSQL says "password authentication failed", PgBouncer "SASL authentication failed".
            if "authentication failed" not in str(e):
                raise
            cached["url"] = s.env()[key]  # re-read the secret once, then reconnect
            rereads.append(1)
            conn = connect_url(cached["url"])
        with conn:
            conn.execute(sql_text).fetchall()

    return once


def test_two_rotations_with_clients_running_throughout_fail_no_query(stack: LocalStack) -> None:
    before = creds(stack)
    first_user = str(before[names.APP_ROLE][names.SECRET_USERNAME_KEY])
    old_app_url = stack.env()["DATABASE_URL"]
    long_lived = connect_url(old_app_url)
    long_lived_user = long_lived.execute("SELECT session_user").fetchone()
    rereads: list[int] = []
    outputs: list[str] = []
    writer = Client(per_query_client(stack, "DATABASE_URL", 'SELECT count(*) FROM "User"', rereads))
    reader = Client(per_query_client(stack, "DATABASE_READ_URL", 'SELECT count(*) FROM "App"', rereads))
    held = Client(lambda: long_lived.execute("SELECT 1").fetchall())
    clients = (writer, reader, held)
    for client in clients:
        client.start()
    try:
        for _ in range(2):
            for client in clients:
                client.rotating.set()
            result = dbctl_local(stack.root, "rotate")
            for client in clients:
                client.rotating.clear()
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout + result.stderr)
    finally:
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(timeout=30)
    print(
        f"\nqueries: write pool {writer.ok} ({writer.during_rotation} during a rotation), read pool "
        f"{reader.ok} ({reader.during_rotation}), long-lived {held.ok} ({held.during_rotation}); "
        f"re-reads of .env after an authentication failure: {len(rereads)}"
    )
    assert [c.failures for c in clients] == [[], [], []]
    assert all(c.during_rotation > 0 for c in clients), "a client ran no query while a rotation ran"

    # Two rotations: _a -> _b -> _a, with a new password each time; the long-lived connection is still the
    # _a session it was, and keeps working until it reconnects.
    after = creds(stack)
    assert long_lived_user == (first_user,)
    assert long_lived.execute("SELECT session_user, current_user").fetchone() == (first_user, names.APP_ROLE)
    long_lived.close()
    for role in names.ALTERNATING_ROLES:
        assert after[role][names.SECRET_USERNAME_KEY] == before[role][names.SECRET_USERNAME_KEY]
        assert after[role][names.SECRET_PASSWORD_KEY] != before[role][names.SECRET_PASSWORD_KEY]
        assert "pending" not in after[role]
        previous = after[role]["previous"]
        assert (
            isinstance(previous, dict) and previous[names.SECRET_USERNAME_KEY] == names.login_users(role)[1]
        )
    # The first password of _a no longer logs in (it was really rotated); the new .env does.
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed"):
        connect_url(old_app_url).close()
    with stack.connect("DATABASE_URL") as conn:
        assert conn.execute("SELECT session_user").fetchone() == (first_user,)
    # No password or verifier in what rotate printed.
    for role in names.ALTERNATING_ROLES:
        for secret in (after[role], after[role]["previous"], before[role]):
            assert isinstance(secret, dict)
            assert str(secret[names.SECRET_PASSWORD_KEY]) not in "".join(outputs)
            assert str(secret[names.SECRET_VERIFIER_KEY]).split("$")[-1] not in "".join(outputs)
    status = dbctl_local(stack.root, "status")
    assert "roles: no drift" in status.stdout, status.stdout + status.stderr


def test_a_rotation_killed_between_prepare_and_switch_keeps_both_working_and_a_rerun_finishes(
    stack: LocalStack,
) -> None:
    active = creds(stack)[names.APP_ROLE]
    old_url = stack.env()["DATABASE_URL"]
    held = connect_url(old_url)

    killed = dbctl_local(stack.root, "rotate", "--role", "app", "--kill-after", "set")
    assert killed.returncode == -9, killed.stderr

    entry = creds(stack)[names.APP_ROLE]
    pending = entry["pending"]
    assert isinstance(pending, dict)
    # Not switched: the secret and .env still name the active user, and it still logs in.
    assert entry[names.SECRET_USERNAME_KEY] == active[names.SECRET_USERNAME_KEY]
    assert stack.env()["DATABASE_URL"] == old_url
    assert held.execute("SELECT 1").fetchone() == (1,)
    with connect_url(old_url) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (active[names.SECRET_USERNAME_KEY],)
    # The prepared user logs in through PgBouncer already (server and userlist both have it).
    prepared = Credential(str(pending["username"]), str(pending["password"]), "")
    prepared_url = local_env.url(
        prepared, stack.pgbouncer_port, names.DATABASE_NAME, ca_file=stack.paths.ca_dir / "ca.crt"
    )
    with connect_url(prepared_url) as conn:
        assert conn.execute("SELECT session_user").fetchone() == (pending["username"],)

    rerun = dbctl_local(stack.root, "rotate", "--role", "app")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming the rotation" in rerun.stderr
    done = creds(stack)[names.APP_ROLE]
    assert done[names.SECRET_USERNAME_KEY] == pending["username"]
    assert done[names.SECRET_PASSWORD_KEY] == pending["password"]  # the saved one, not a third password
    assert "pending" not in done
    assert held.execute("SELECT 1").fetchone() == (1,)
    held.close()
    with stack.connect("DATABASE_URL") as conn:
        assert conn.execute("SELECT session_user").fetchone() == (pending["username"],)
    for secret in (pending["password"], active[names.SECRET_PASSWORD_KEY]):
        assert str(secret) not in killed.stderr + killed.stdout + rerun.stderr + rerun.stdout


def test_rotate_refuses_a_stopped_stack_in_one_line() -> None:
    root = Path(tempfile.mkdtemp(prefix="dbctl-test-rotate-"))
    try:
        result = dbctl_local(root, "rotate")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: no local stack in {root / '.local'}; create it with `dbctl local up`"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- the upgrade from the single-user layout


def _old_code(into: Path) -> Path:
    """SINGLE_USER_COMMIT's dbctl/, sql/ and components/ (git archive; nothing in the repository changes)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", SINGLE_USER_COMMIT, "dbctl", "sql", "components"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert archive.returncode == 0, (
        f"git archive {SINGLE_USER_COMMIT} failed ({archive.stderr.decode().strip()}): the upgrade test "
        "needs the repository's history (a full clone; CI: actions/checkout with fetch-depth: 0)"
    )
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    # Its PgBouncer: the one ./dev built into .tools/ (when there is one), as a checkout of it would use.
    if (REPO_ROOT / ".tools").is_dir():
        (into / ".tools").symlink_to(REPO_ROOT / ".tools")
    return into


def test_a_stack_built_by_the_single_user_code_upgrades_with_its_data_and_passwords() -> None:
    code = Path(tempfile.mkdtemp(prefix="dbctl-old-code-"))
    code.chmod(0o755)  # the `postgres` user runs PgBouncer from its .tools/
    _old_code(code)
    root = Path(tempfile.mkdtemp(prefix="dbctl-test-upgrade-"))
    root.chmod(0o755)
    ports = [
        "--pg-port",
        str(free_port()),
        "--pgbouncer-port",
        str(free_port()),
        "--replica-port",
        str(free_port()),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != ROOT_ENV_VAR}
    try:
        old = subprocess.run(
            [sys.executable, "-m", "dbctl", "local", "--root", str(root), "up", *ports],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=code,
            env={**env, "PYTHONPATH": str(code)},
        )
        assert old.returncode == 0, old.stderr
        before = json.loads((root / ".local" / "credentials.json").read_text())
        assert before[names.APP_ROLE][names.SECRET_USERNAME_KEY] == names.APP_ROLE  # the single-user layout
        s = LocalStack(root, int(ports[1]), int(ports[3]), old.stdout + old.stderr)
        with s.connect("DATABASE_URL") as conn:
            assert conn.execute("SELECT session_user").fetchone() == (names.APP_ROLE,)
            user_id = insert_user(conn)

        upgraded = dbctl_local(root, "up")
        assert upgraded.returncode == 0, upgraded.stderr

        after = json.loads(s.paths.credentials_file.read_text())
        for role in names.LOGIN_ROLES:
            want = names.login_users(role)[0]
            assert after[role][names.SECRET_USERNAME_KEY] == want
            assert after[role][names.SECRET_PASSWORD_KEY] == before[role][names.SECRET_PASSWORD_KEY]
        assert json.loads((root / ".local" / "credentials.single-user.json").read_text()) == before
        with s.connect("DATABASE_URL") as conn:
            assert conn.execute("SELECT session_user, current_user").fetchone() == (
                f"{names.APP_ROLE}_a",
                names.APP_ROLE,
            )
            assert user_exists(conn, user_id)
        with s.connect("DATABASE_READ_URL") as conn:
            assert conn.execute("SELECT session_user").fetchone() == (f"{names.READONLY_ROLE}_a",)
        # The old login is a NOLOGIN role now, its password gone; nothing left to converge.
        with psycopg.connect(existing_stack(s.paths).cluster.admin_conninfo(), autocommit=True) as admin:
            row = admin.execute(
                "SELECT rolcanlogin, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
                (names.APP_ROLE,),
            ).fetchone()
        assert row == (False, None)
        status = dbctl_local(root, "status")
        assert "roles: no drift" in status.stdout, status.stdout + status.stderr
        # And it rotates like a new stack.
        rotated = dbctl_local(root, "rotate", "--role", "app")
        assert rotated.returncode == 0, rotated.stderr
        with s.connect("DATABASE_URL") as conn:
            assert conn.execute("SELECT session_user").fetchone() == (f"{names.APP_ROLE}_b",)
    finally:
        dbctl_local(root, "down")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(code, ignore_errors=True)
