"""dbctl.cluster gives an RDS-shaped PostgreSQL: TLS that verifies, SCRAM only, a non-superuser admin."""

import os
import pwd
from pathlib import Path

import psycopg
import pytest

from dbctl import names
from dbctl.cluster import Cluster, port_is_free

pytestmark = pytest.mark.integration


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
    assert row == (True, False, True, True, True)
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
