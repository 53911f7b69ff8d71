"""`dbctl local`: the real CLI, run as a separate process, bringing up a real PostgreSQL and PgBouncer.

One stack per module, in a temp dir (the hidden `--root`) on free ports, so the repository's own `.local/`
and `.env` are never touched. The pure helpers (URLs, .env, private files) are tested at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from dbctl.cli.targets import ROOT_ENV_VAR
from dbctl.core import names
from dbctl.core.scram import is_scram_verifier
from dbctl.local import env as local_env
from dbctl.local.env import env_urls, libpq_url, read_env
from dbctl.local.stack import server_dir
from dbctl.local.state import Credential, Paths, State, new_credential, write_private
from dbctl.pgbouncer.config import PREPARED_STATEMENTS_SINCE
from dbctl.pgbouncer.process import detect_version, find_pgbouncer
from dbctl.postgres.osproc import free_port
from dbctl.schema import migrate

REPO_ROOT = Path(__file__).resolve().parents[3]


def dbctl_local(
    root: Path, *args: str, timeout: float = 300, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m dbctl local --root ROOT ARGS` with our environment less PG* (plus `env`, when given)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    base.pop(ROOT_ENV_VAR, None)
    env = {**base, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dbctl", "local", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
    )


def new_root() -> Path:
    # Not pytest's tmp_path: as root it is 0700, which the `postgres` user running the servers can't enter.
    root = Path(tempfile.mkdtemp(prefix="dbctl-test-local-"))
    root.chmod(0o755)
    return root


@dataclass(frozen=True)
class LocalStack:
    root: Path
    pg_port: int
    pgbouncer_port: int
    up_output: str

    @property
    def paths(self) -> Paths:
        return Paths(self.root)

    def env(self) -> dict[str, str]:
        return read_env(self.paths)

    def connect(self, key: str) -> psycopg.Connection[tuple[object, ...]]:
        """Connect with one of .env's URLs, as an application would (libpq drops nothing: we strip
        Prisma's own `pgbouncer=true`, which libpq rejects)."""
        return psycopg.connect(libpq_url(self.env()[key]), autocommit=True, connect_timeout=10)


@contextlib.contextmanager
def running_stack(*up_args: str) -> Iterator[LocalStack]:
    """A local stack in a new temp root on free ports (`up` with up_args too), brought down and removed
    afterwards: the module fixtures' common body. The replica gets a free port of its own too: the default,
    pg port + 1, may belong to someone else."""
    root = new_root()
    pg_port, pgbouncer_port = free_port(), free_port()
    try:
        ports = (
            "--pg-port",
            str(pg_port),
            "--pgbouncer-port",
            str(pgbouncer_port),
            "--replica-port",
            str(free_port()),
        )
        result = dbctl_local(root, "up", *ports, *up_args)
        assert result.returncode == 0, result.stderr + result.stdout
        yield LocalStack(root, pg_port, pgbouncer_port, result.stdout + result.stderr)
    finally:
        dbctl_local(root, "down")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with running_stack() as s:
        yield s


def insert_user(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    user_id = f"u_{uuid.uuid4().hex}"
    conn.execute(
        'INSERT INTO "User" (id, email, "updatedAt") VALUES (%s, %s, CURRENT_TIMESTAMP)',
        (user_id, f"{user_id}@example.com"),
    )
    return user_id


def user_exists(conn: psycopg.Connection[tuple[object, ...]], user_id: str) -> bool:
    return conn.execute('SELECT 1 FROM "User" WHERE id = %s', (user_id,)).fetchone() is not None


def server_pids(s: LocalStack) -> tuple[str, str]:
    """(postmaster pid, pgbouncer pid) from their pid files."""
    base = server_dir(s.paths)
    postmaster = (base / "postgres" / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
    pgbouncer = (base / "pgbouncer" / "pgbouncer.pid").read_text().strip()
    return postmaster, pgbouncer


# ---------------------------------------------------------------- .env and files


@pytest.mark.integration
def test_env_has_exactly_the_seed_variables_and_private_files(stack: LocalStack) -> None:
    env = stack.env()
    assert list(env) == ["DATABASE_URL", "DIRECT_URL", "DATABASE_READ_URL", "SHADOW_DATABASE_URL"]
    assert f"@127.0.0.1:{stack.pgbouncer_port}/{names.DATABASE_NAME}?" in env["DATABASE_URL"]
    assert f"@127.0.0.1:{stack.pg_port}/{names.DATABASE_NAME}?" in env["DIRECT_URL"]
    assert f"@127.0.0.1:{stack.pgbouncer_port}/{names.READ_POOL_DATABASE}?" in env["DATABASE_READ_URL"]
    # Before PgBouncer 1.21 Prisma must use unnamed statements (pgbouncer=true); never on the direct URL.
    # ./dev builds production's 1.24 when the system's is older, so the flag is gone.
    old_pgbouncer = detect_version(find_pgbouncer()) < PREPARED_STATEMENTS_SINCE
    assert env["DATABASE_URL"].endswith("&pgbouncer=true") is old_pgbouncer
    assert env["DATABASE_READ_URL"].endswith("&pgbouncer=true") is old_pgbouncer
    assert "pgbouncer=true" not in env["DIRECT_URL"]
    for path in (stack.paths.env_file, stack.paths.credentials_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    creds = json.loads(stack.paths.credentials_file.read_text())
    for role in names.LOGIN_ROLES:
        # A new stack's pooled roles start on their _a user (a rotation switches to _b).
        assert creds[role][names.SECRET_USERNAME_KEY] == names.login_users(role)[0]
        assert is_scram_verifier(creds[role][names.SECRET_VERIFIER_KEY])
    assert (
        f"//{names.APP_ROLE}_a:" in env["DATABASE_URL"]
        and f"//{names.READONLY_ROLE}_a:" in env["DATABASE_READ_URL"]
    )


@pytest.mark.integration
def test_up_shows_progress_and_never_a_secret(stack: LocalStack) -> None:
    assert "initdb" in stack.up_output
    # The migration step, one line per migration with its timing.
    assert all(m.name in stack.up_output for m in migrate.load_migrations())
    creds = json.loads(stack.paths.credentials_file.read_text())
    for role, secret in creds.items():
        assert secret[names.SECRET_PASSWORD_KEY] not in stack.up_output, role
        assert secret[names.SECRET_VERIFIER_KEY].split("$")[-1] not in stack.up_output, role


@pytest.mark.integration
def test_userlist_holds_verifiers_only(stack: LocalStack) -> None:
    userlist = (server_dir(stack.paths) / "pgbouncer" / "userlist.txt").read_text()
    creds = json.loads(stack.paths.credentials_file.read_text())
    for role, secret in creds.items():
        assert secret[names.SECRET_PASSWORD_KEY] not in userlist, role
    assert f'"{names.APP_ROLE}_a" "SCRAM-SHA-256$' in userlist
    # The NOLOGIN role that holds the privileges is in no userlist; its _b user has no password before a
    # rotation prepares one.
    assert f'"{names.APP_ROLE}" ' not in userlist and f'"{names.APP_ROLE}_b" ' not in userlist


# ---------------------------------------------------------------- each role, with the right privileges


@pytest.mark.integration
def test_app_writes_through_pgbouncer(stack: LocalStack) -> None:
    with stack.connect("DATABASE_URL") as conn:
        assert conn.info.port == stack.pgbouncer_port
        assert conn.execute("SELECT current_user").fetchone() == (names.APP_ROLE,)
        user_id = insert_user(conn)
        assert user_exists(conn, user_id)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE app_must_not_create (id int)")


@pytest.mark.integration
def test_readonly_reads_through_the_read_pool_and_cannot_write(stack: LocalStack) -> None:
    with stack.connect("DATABASE_READ_URL") as conn:
        assert conn.info.port == stack.pgbouncer_port
        assert conn.info.dbname == names.READ_POOL_DATABASE
        assert conn.execute("SELECT current_user").fetchone() == (names.READONLY_ROLE,)
        conn.execute('SELECT count(*) FROM "User"')
        with pytest.raises(errors.ReadOnlySqlTransaction):
            insert_user(conn)


@pytest.mark.integration
def test_migrator_connects_direct_and_owns_the_schema(stack: LocalStack) -> None:
    with stack.connect("DIRECT_URL") as conn:
        assert conn.info.port == stack.pg_port
        assert conn.execute("SELECT session_user").fetchone() == (names.MIGRATOR_ROLE,)
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'User'").fetchone()
        assert owner == (names.OWNER_ROLE,)
        assert conn.execute("SELECT pg_has_role(%s, 'MEMBER')", (names.OWNER_ROLE,)).fetchone() == (True,)


@pytest.mark.integration
def test_psql_opens_as_the_chosen_role(stack: LocalStack) -> None:
    for role, expected in (("readonly", f"{names.READONLY_ROLE}_a"), ("migrator", names.MIGRATOR_ROLE)):
        result = dbctl_local(stack.root, "psql", "--role", role, "-AtXc", "select session_user")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected


@pytest.mark.integration
def test_status_reports_servers_migrations_and_pools(stack: LocalStack) -> None:
    result = dbctl_local(stack.root, "status")
    assert result.returncode == 0, result.stderr
    assert f"PostgreSQL  running on 127.0.0.1:{stack.pg_port}" in result.stdout
    assert f"PgBouncer   running on 127.0.0.1:{stack.pgbouncer_port}" in result.stdout
    assert "up to date" in result.stdout
    assert names.READ_POOL_DATABASE in result.stdout  # a SHOW POOLS row


# ---------------------------------------------------------------- idempotency, down/up, reset


@pytest.mark.integration
def test_up_twice_changes_nothing(stack: LocalStack) -> None:
    watched = [stack.paths.env_file, stack.paths.credentials_file, stack.paths.state_file]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in watched}
    pids = server_pids(stack)
    result = dbctl_local(stack.root, "up")
    assert result.returncode == 0, result.stderr
    assert "already running; nothing changed" in result.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in watched} == before
    assert server_pids(stack) == pids


@pytest.mark.integration
def test_down_then_up_keeps_data(stack: LocalStack) -> None:
    with stack.connect("DATABASE_URL") as conn:
        user_id = insert_user(conn)
    result = dbctl_local(stack.root, "down")
    assert result.returncode == 0, result.stderr
    with pytest.raises(psycopg.OperationalError):
        stack.connect("DIRECT_URL")
    # No flags: the ports come from .local/state.json.
    result = dbctl_local(stack.root, "up")
    assert result.returncode == 0, result.stderr
    with stack.connect("DATABASE_URL") as conn:
        assert user_exists(conn, user_id)


@pytest.mark.integration
def test_reset_without_yes_refuses_and_keeps_everything(stack: LocalStack) -> None:
    with stack.connect("DATABASE_URL") as conn:
        user_id = insert_user(conn)
    result = dbctl_local(stack.root, "reset")
    assert result.returncode != 0
    assert "WARNING: This deletes all data!" in result.stderr
    assert "--yes" in result.stderr
    with stack.connect("DATABASE_URL") as conn:
        assert user_exists(conn, user_id)


@pytest.mark.integration
@pytest.mark.parametrize("flag", ["--pg-port", "--pgbouncer-port"])
def test_a_busy_port_names_the_flag(flag: str) -> None:
    root = new_root()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            other = "--pgbouncer-port" if flag == "--pg-port" else "--pg-port"
            result = dbctl_local(root, "up", flag, str(port), other, str(free_port()))
        assert result.returncode != 0
        assert f"port {port}" in result.stderr
        assert flag in result.stderr
        assert not (root / ".local" / "postgres").exists()  # refused before initdb
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
def test_reset_with_yes_wipes_data_and_comes_back_up(stack: LocalStack) -> None:
    with stack.connect("DATABASE_URL") as conn:
        user_id = insert_user(conn)
    old_password = json.loads(stack.paths.credentials_file.read_text())[names.APP_ROLE]["password"]
    result = dbctl_local(stack.root, "reset", "--yes")
    assert result.returncode == 0, result.stderr
    assert "WARNING: This deletes all data!" in result.stderr
    assert json.loads(stack.paths.credentials_file.read_text())[names.APP_ROLE]["password"] != old_password
    with stack.connect("DATABASE_URL") as conn:
        assert not user_exists(conn, user_id)
        assert conn.execute('SELECT count(*) FROM "User"').fetchone() == (0,)


# ---------------------------------------------------------------- pure helpers


def test_url_percent_encodes_the_password_and_puts_pgbouncer_last() -> None:
    cred = Credential("spike_app", "p@ss/w:rd?&=", "SCRAM-SHA-256$4096:x$y:z")
    ca = Path("/home/me/my repo/.local/tls/ca.crt")
    url = local_env.url(cred, 6543, "spike_land", ca_file=ca, extra={"pgbouncer": "true"})
    assert url == (
        "postgresql://spike_app:p%40ss%2Fw%3Ard%3F%26%3D@127.0.0.1:6543/spike_land"
        "?sslmode=verify-full&sslrootcert=/home/me/my%20repo/.local/tls/ca.crt&pgbouncer=true"
    )
    assert libpq_url(url).endswith(
        "/spike_land?sslmode=verify-full&sslrootcert=/home/me/my%20repo/.local/tls/ca.crt"
    )
    # libpq reads the same parameters back, the path decoded.
    params = conninfo_to_dict(libpq_url(url))
    assert params["sslrootcert"] == str(ca) and params["password"] == "p@ss/w:rd?&="


def test_pgbouncer_flag_only_before_1_21() -> None:
    creds = {role: new_credential(role) for role in names.LOGIN_ROLES}
    state = State(5432, 6543)
    old = env_urls(creds, state, (1, 18), Path("/ca.crt"))
    new = env_urls(creds, state, (1, 21), Path("/ca.crt"))
    assert old["DATABASE_URL"].endswith("pgbouncer=true")
    assert "pgbouncer" not in new["DATABASE_URL"] + new["DATABASE_READ_URL"]


def test_write_private_is_0600_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "secret.json"
        write_private(path, "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
