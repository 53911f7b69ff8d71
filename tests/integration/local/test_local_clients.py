"""The local stack as clients see it: every .env URL, unchanged, with libpq (psql, psycopg, pgbench) and
node-postgres; the per-stack CA; the shadow database; and what the servers inherit from the shell.

One stack for the module, brought up from a shell that exports DATABASE_URL, PGPASSWORD and PGUSER (a
hostile but ordinary environment): nothing of it may reach the servers' /proc/<pid>/environ.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from dbctl.core import names
from dbctl.local.env import SHADOW_DATABASE, libpq_url
from dbctl.local.lifecycle import ensure_shadow_database
from dbctl.local.stack import existing_stack, server_dir
from dbctl.local.state import write_private
from dbctl.postgres.install import find_binary
from dbctl.postgres.osproc import free_port, port_is_free
from dbctl.postgres.tls import CertificateAuthority
from dbctl.schema import migrate
from tests.integration.helpers import node_tool
from tests.integration.local.test_local import REPO_ROOT, LocalStack, dbctl_local, new_root, server_pids
from tests.integration.postgres.test_cluster import time_wait_on

pytestmark = pytest.mark.integration

SECRET_ENV = {
    "DATABASE_URL": "postgresql://leak:leaked-db-url-secret@127.0.0.1:1/x",
    "PGPASSWORD": "leaked-pgpassword-secret",
    "PGUSER": "leaked_pguser",
}
# The login user each URL names (a new stack's pooled roles start on their _a user).
ROLE_OF = {
    "DATABASE_URL": f"{names.APP_ROLE}_a",
    "DIRECT_URL": names.MIGRATOR_ROLE,
    "DATABASE_READ_URL": f"{names.READONLY_ROLE}_a",
    "SHADOW_DATABASE_URL": names.MIGRATOR_ROLE,
}
NODE_DIR = Path(__file__).resolve().parents[1] / "node_pg"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    root = new_root()
    pg_port, pgbouncer_port = free_port(), free_port()
    try:
        result = dbctl_local(
            root, "up", "--pg-port", str(pg_port), "--pgbouncer-port", str(pgbouncer_port), env=SECRET_ENV
        )
        assert result.returncode == 0, result.stderr + result.stdout
        yield LocalStack(root, pg_port, pgbouncer_port, result.stdout + result.stderr)
    finally:
        dbctl_local(root, "down")
        shutil.rmtree(root, ignore_errors=True)


def split_password(url: str) -> tuple[str, str]:
    """(the URL without its password, the password): for psql/pgbench, whose command line must not hold it."""
    parts = urlsplit(url)
    assert parts.password is not None
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


def libpq_env(password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return {**env, "PGPASSWORD": password}


# ---------------------------------------------------------------- the CA and the URLs


def test_every_url_is_verify_full_with_the_stacks_ca(stack: LocalStack) -> None:
    ca = stack.paths.ca_dir / "ca.crt"
    for key, value in stack.env().items():
        query = parse_qs(urlsplit(value).query)
        assert query["sslmode"] == ["verify-full"], key
        assert query["sslrootcert"] == [str(ca)], key
        assert Path(query["sslrootcert"][0]).is_absolute()
    assert CertificateAuthority(stack.paths.ca_dir).signed(
        server_dir(stack.paths) / "postgres/tls/server.crt"
    )
    assert CertificateAuthority(stack.paths.ca_dir).signed(
        server_dir(stack.paths) / "pgbouncer/tls/server.crt"
    )


def test_the_ca_key_is_private_and_stays_in_local_tls(stack: LocalStack) -> None:
    key = stack.paths.ca_dir / "ca.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.stat().st_uid == os.geteuid()  # not the servers' user
    ca_key = key.read_bytes()
    places = {stack.root, server_dir(stack.paths)}
    copies = [
        p
        for place in places
        for p in place.rglob("*")
        if p.is_file() and p != key and p.read_bytes() == ca_key
    ]
    assert copies == []
    for server_key in ("postgres/tls/server.key", "pgbouncer/tls/server.key"):
        assert stat.S_IMODE((server_dir(stack.paths) / server_key).stat().st_mode) == 0o600


def test_psycopg_connects_with_every_url_and_verifies(stack: LocalStack) -> None:
    for key, role in ROLE_OF.items():
        with stack.connect(key) as conn:
            assert conn.execute("SELECT session_user").fetchone() == (role,), key
            assert conn.pgconn.ssl_in_use, key


def test_psql_and_pgbench_take_every_url_as_written(stack: LocalStack) -> None:
    """The URL as .env has it (less the password, which goes in PGPASSWORD, and Prisma's pgbouncer=true,
    which libpq rejects while the local PgBouncer is older than 1.21)."""
    psql, pgbench = find_binary("psql"), find_binary("pgbench")
    for key, role in ROLE_OF.items():
        url, password = split_password(libpq_url(stack.env()[key]))
        result = subprocess.run(
            [
                str(psql),
                "-qAtXc",
                # SET ROLE NONE: the migrator acts as spike_owner, which may not see its own session row
                "set role none; select session_user, ssl from pg_stat_ssl where pid = pg_backend_pid()",
                url,
            ],
            capture_output=True,
            text=True,
            env=libpq_env(password),
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"{key}: {result.stderr}"
        assert result.stdout.strip() == f"{role}|t", key
        bench = subprocess.run(
            [str(pgbench), "-n", "-t", "3", "-f", "/dev/stdin", url],
            input="select 1;\n",
            capture_output=True,
            text=True,
            env=libpq_env(password),
            timeout=60,
            check=False,
        )
        assert bench.returncode == 0, f"{key}: {bench.stderr}"
        assert "number of failed transactions: 0" in bench.stdout, key


def _node_modules() -> Path:
    """pg, installed from the committed lockfile (npm ci) into .local/node-pg/<lock hash>/ (git-ignored)."""
    node, npm = node_tool("node"), node_tool("npm")
    assert node and npm, "node and npm are needed for the node-postgres check: `./dev test` installs them"
    lock = (NODE_DIR / "package-lock.json").read_bytes()
    work = REPO_ROOT / ".local" / "node-pg" / hashlib.sha256(lock).hexdigest()[:12]
    if not (work / "node_modules" / "pg" / "package.json").exists():
        work.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NODE_DIR / name, work / name)
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"npm ci failed: {result.stderr}"
    shutil.copy(NODE_DIR / "check.mjs", work / "check.mjs")
    return work


def run_node_check(work: Path, env_file: Path) -> tuple[int, dict[str, dict[str, str]]]:
    result = subprocess.run(
        [node_tool("node") or "node", str(work / "check.mjs"), str(env_file), *ROLE_OF],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=work,
    )
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


def test_node_postgres_connects_with_every_url_as_written(stack: LocalStack) -> None:
    work = _node_modules()
    code, results = run_node_check(work, stack.paths.env_file)
    assert code == 0, results
    assert {key: r["user"] for key, r in results.items()} == ROLE_OF
    assert results["SHADOW_DATABASE_URL"]["db"] == SHADOW_DATABASE


def test_node_postgres_refuses_a_server_the_ca_did_not_sign(stack: LocalStack, tmp_path: Path) -> None:
    """The same URLs with another CA as sslrootcert: node-postgres verifies, so every connection fails."""
    work = _node_modules()
    other = CertificateAuthority(tmp_path / "other")
    other.ensure()
    text = stack.paths.env_file.read_text().replace(str(stack.paths.ca_dir / "ca.crt"), str(other.cert_file))
    env_file = tmp_path / "other.env"
    write_private(env_file, text)
    code, results = run_node_check(work, env_file)
    assert code != 0
    for key, r in results.items():
        assert "certificate" in r.get("error", ""), (key, r)


# ---------------------------------------------------------------- durability and TLS-only


def _durability(stack: LocalStack) -> tuple[str, ...]:
    with stack.connect("DIRECT_URL") as conn:
        row = conn.execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('full_page_writes')"
        ).fetchone()
    assert row is not None
    return tuple(str(v) for v in row)


def test_durable_by_default_and_unsafe_only_when_asked(stack: LocalStack) -> None:
    assert _durability(stack) == ("on", "on", "on")
    fast = dbctl_local(stack.root, "up", "--unsafe-fast")
    assert fast.returncode == 0, fast.stderr
    assert "UNSAFE" in fast.stderr
    assert _durability(stack) == ("off", "off", "off")
    status = dbctl_local(stack.root, "status")
    assert "UNSAFE" in status.stdout
    back = dbctl_local(stack.root, "up")
    assert back.returncode == 0, back.stderr
    assert _durability(stack) == ("on", "on", "on")


def test_direct_connections_without_tls_are_refused(stack: LocalStack) -> None:
    url = libpq_url(stack.env()["DIRECT_URL"]).replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(url, connect_timeout=10).close()


# ---------------------------------------------------------------- the shadow database


def prisma_reset_and_replay(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """What `prisma migrate dev` does to the shadow database: reset, then every migration as a script."""
    conn.execute('DROP SCHEMA "public" CASCADE')
    conn.execute('CREATE SCHEMA "public"')
    for m in migrate.load_migrations():
        conn.execute(m.sql_text.encode())  # bytes: one simple-query script, as Prisma sends it


@pytest.mark.parametrize("as_owner", [False, True], ids=["as-spike_migrator", "as-spike_owner"])
def test_the_migrator_may_reset_the_shadow_database(stack: LocalStack, as_owner: bool) -> None:
    """Either way the migrator's sessions start. Each case starts from the shadow database as `up` makes
    it (a reset as spike_migrator leaves a schema spike_owner does not own: a stack sticks to one way)."""
    live = existing_stack(stack.paths)
    with psycopg.connect(live.cluster.admin_conninfo("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(SHADOW_DATABASE)))
    assert ensure_shadow_database(live)
    with stack.connect("SHADOW_DATABASE_URL") as conn:
        assert conn.info.dbname == SHADOW_DATABASE
        if as_owner:  # as after `ALTER ROLE spike_migrator SET role spike_owner`
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(names.OWNER_ROLE)))
        prisma_reset_and_replay(conn)
        prisma_reset_and_replay(conn)  # and again: migrate dev resets it every time
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'User'").fetchone() == (1,)


def test_app_and_readonly_cannot_reach_the_shadow_database(stack: LocalStack) -> None:
    creds = json.loads(stack.paths.credentials_file.read_text())
    for role in (names.APP_ROLE, names.READONLY_ROLE):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(
                host="127.0.0.1",
                port=stack.pg_port,
                dbname=SHADOW_DATABASE,
                user=creds[role]["username"],
                password=creds[role]["password"],
                sslmode="verify-full",
                sslrootcert=str(stack.paths.ca_dir / "ca.crt"),
            ).close()


def test_shadow_database_survives_down_up_up(stack: LocalStack) -> None:
    for args in (("down",), ("up",), ("up",)):
        result = dbctl_local(stack.root, *args)
        assert result.returncode == 0, result.stderr
    with stack.connect("SHADOW_DATABASE_URL") as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (SHADOW_DATABASE,)
    with stack.connect("DIRECT_URL") as conn:
        count = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (SHADOW_DATABASE,))
        assert count.fetchone() == (1,)


# ---------------------------------------------------------------- issue 11 item 4: no inherited secrets


def test_servers_inherit_no_secret_from_the_shell(stack: LocalStack) -> None:
    for pid in server_pids(stack):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        keys = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
        assert not keys & {"DATABASE_URL", "PGPASSWORD", "PGUSER"}, (pid, keys)
        for value in SECRET_ENV.values():
            assert value.encode() not in b"\0".join(environ), pid


# ---------------------------------------------------------------- issue 11 item 13: exact checks


def test_up_right_after_down_with_connections_in_time_wait(stack: LocalStack) -> None:
    """TCP connections open at `down` are closed by the servers first, so their ports then sit in TIME_WAIT.
    (Sockets that say nothing after their SSLRequest: a client that sends anything after the server left
    gets a reset instead, and no TIME_WAIT.)

    Each one sends an SSLRequest and reads the answer first, so the server really holds it: PgBouncer
    listens with TCP_DEFER_ACCEPT (tcp_defer_accept = 1 s by default), and a socket that has sent nothing
    is still SYN-RECV on its side for that second; one `down` reaches sooner is dropped silently (no FIN,
    no TIME_WAIT), which made this test pass or fail by how long `down` took to start."""
    held = [socket.create_connection(("127.0.0.1", port)) for port in (stack.pg_port, stack.pgbouncer_port)]
    for sock in held:
        sock.settimeout(10)
        sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
        assert sock.recv(1) in (b"S", b"N")  # answered: the server has accepted the connection
    result = dbctl_local(stack.root, "down")
    assert result.returncode == 0, result.stderr
    for sock in held:
        sock.settimeout(10)
        assert sock.recv(1024) is not None  # until the server's FIN
        sock.close()
    assert all(time_wait_on(port) for port in (stack.pg_port, stack.pgbouncer_port))
    result = dbctl_local(stack.root, "up")
    assert result.returncode == 0, result.stderr
    with stack.connect("DATABASE_URL") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_stale_pid_files_never_point_at_another_process(stack: LocalStack) -> None:
    """After `down`, both pid files name a live process that is not ours (its command line even says
    pgbouncer and the ini's name): status says stopped, down leaves it alone, up starts the real servers."""
    assert dbctl_local(stack.root, "down").returncode == 0
    base = server_dir(stack.paths)
    decoy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(300)",
            "pgbouncer",
            str(base / "pgbouncer/pgbouncer.ini"),
        ]
    )
    try:
        (base / "pgbouncer" / "pgbouncer.pid").write_text(f"{decoy.pid}\n")
        (base / "postgres" / "data" / "postmaster.pid").write_text(f"{decoy.pid}\n{base / 'postgres/data'}\n")
        status = dbctl_local(stack.root, "status")
        assert "PostgreSQL  stopped" in status.stdout and "PgBouncer   stopped" in status.stdout, (
            status.stdout
        )
        assert dbctl_local(stack.root, "down").returncode == 0
        assert decoy.poll() is None  # never signalled
        result = dbctl_local(stack.root, "up")
        assert result.returncode == 0, result.stderr
        assert decoy.poll() is None
        with stack.connect("DATABASE_URL") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        decoy.kill()
        decoy.wait()


def test_every_status_failure_is_one_line(stack: LocalStack) -> None:
    """Wrong (well-formed) passwords for the admin and the monitor: status says so, one line each."""
    creds_file = stack.paths.credentials_file
    original = creds_file.read_bytes()
    creds = json.loads(original)
    for role in (names.MONITOR_ROLE, "spike_admin"):
        creds[role]["password"] = "not-the-password"
    try:
        write_private(creds_file, json.dumps(creds))
        result = dbctl_local(stack.root, "status")
    finally:
        write_private(creds_file, original.decode())
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    failures = [line for line in result.stdout.splitlines() if "authentication failed" in line]
    assert [line.split()[0] for line in failures] == ["replication", "migrations", "pools"], result.stdout


# ---------------------------------------------------------------- upgrade: a stack whose CA is missing


def test_up_makes_a_new_ca_for_a_stack_without_one(stack: LocalStack) -> None:
    """A stack from before the per-stack CA has none: `up` makes one, reissues both certificates and
    restarts what needs it; the URLs then verify against the new CA, and the old one no longer does."""
    old_ca = stack.paths.ca_dir / "ca.crt"
    saved_old = old_ca.read_bytes()
    pids = server_pids(stack)
    shutil.rmtree(stack.paths.ca_dir)
    result = dbctl_local(stack.root, "up")
    assert result.returncode == 0, result.stderr
    assert "a new CA" in result.stderr
    assert old_ca.read_bytes() != saved_old
    assert server_pids(stack)[0] == pids[0]  # PostgreSQL reloaded, not restarted
    for key in ROLE_OF:
        with stack.connect(key) as conn:
            assert conn.pgconn.ssl_in_use
    stale = stack.paths.root / "old-ca.crt"
    stale.write_bytes(saved_old)
    url = libpq_url(stack.env()["DIRECT_URL"]).replace(str(old_ca), str(stale))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(url, connect_timeout=10).close()


def test_a_port_held_open_is_still_busy() -> None:
    """SO_REUSEADDR in the probe does not hide a listener."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not port_is_free(busy.getsockname()[1])
