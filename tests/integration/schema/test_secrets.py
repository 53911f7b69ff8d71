"""Verifiers never reach what a low-privilege role can read, nor the server log (issue 11, item 2).

The server runs with the production parameter group's pg_stat_statements and log_statement settings, taken
from dbctl/stackconfig/parameters.py, so a setting dropped there fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbctl.core import names
from dbctl.postgres.cluster import Cluster
from dbctl.stackconfig.parameters import primary_parameters
from tests.integration.conftest import FreshDatabase, RunMigrate, secret_shaped

pytestmark = pytest.mark.integration

PROD = {p.name: p.value for p in primary_parameters(100)}
# What decides what pg_stat_statements records (pg_stat_statements.max is static and beside the point).
PGSS = {n: v for n, v in PROD.items() if n.startswith("pg_stat_statements.") and not n.endswith(".max")}


@contextmanager
def server_settings(cluster: Cluster, settings: Mapping[str, str]) -> Iterator[None]:
    """Set parameters cluster-wide (ALTER SYSTEM + reload) for the block, then put the old values back."""
    with psycopg.connect(cluster.superuser_conninfo(), autocommit=True) as conn:

        def current(name: str) -> str:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            assert row is not None
            return str(row[0])

        before = {name: current(name) for name in settings}
        wanted = {}
        for name, value in settings.items():  # the server's spelling of the value ("0" -> "off")
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                wanted[name] = current(name)
    try:
        for name, value in wanted.items():
            cluster.set_parameter(name, value)
        yield
    finally:
        for name, value in before.items():
            cluster.set_parameter(name, value)


def secret_parts(verifiers: Mapping[str, str]) -> list[str]:
    """Each verifier and its StoredKey and ServerKey alone: any of them in readable text is a leak."""
    parts: list[str] = []
    for verifier in verifiers.values():
        parts += [verifier, *verifier.rsplit("$", 1)[1].split(":")]
    return parts


@pytest.fixture
def new_credentials(tmp_path: Path, role_passwords: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A credentials file with verifiers never set before, so the run sets all four passwords."""
    shaped = secret_shaped({role: f"{pw}-{tmp_path.name}" for role, pw in role_passwords.items()})
    path = tmp_path / "new-credentials.json"
    path.write_text(json.dumps(shaped))
    return path, {role: entry[names.SECRET_VERIFIER_KEY] for role, entry in shaped.items()}


def test_spike_monitor_finds_no_verifier_in_pg_stat_statements(
    pg_cluster: Cluster,
    fresh_db: FreshDatabase,
    run_migrate: RunMigrate,
    new_credentials: tuple[Path, dict[str, str]],
    role_passwords: dict[str, str],
) -> None:
    path, verifiers = new_credentials
    assert PGSS["pg_stat_statements.track"] == "all"  # nested statements are recorded: the hard case
    with server_settings(pg_cluster, PGSS):
        result = run_migrate("migrate", credentials=path)
        assert result.returncode == 0, result.stderr
        # spike_monitor logs in with the password that fits the verifier just set.
        monitor_password = f"{role_passwords[names.MONITOR_ROLE]}-{path.parent.name}"
        with psycopg.connect(fresh_db.conninfo(names.MONITOR_ROLE, monitor_password)) as monitor:
            texts = [
                str(row[0])
                for row in monitor.execute(
                    "SELECT query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                    " WHERE d.datname = current_database() AND s.query IS NOT NULL"
                ).fetchall()
            ]
    assert any("pg_roles" in text for text in texts), "pg_stat_statements recorded nothing of the run"
    recorded = "\n".join(texts)
    for part in secret_parts(verifiers):
        assert part not in recorded
    assert "PASSWORD 'SCRAM" not in recorded.upper()


def test_the_server_log_holds_no_verifier_even_logging_every_statement(
    pg_cluster: Cluster,
    fresh_db: FreshDatabase,
    run_migrate: RunMigrate,
    new_credentials: tuple[Path, dict[str, str]],
) -> None:
    path, verifiers = new_credentials
    assert PROD["log_statement"] == "ddl"
    for log_statement in ("ddl", "all"):
        start = pg_cluster.log_file.stat().st_size
        settings = {"log_statement": log_statement, "log_min_duration_statement": "0"}
        with server_settings(pg_cluster, settings):
            result = run_migrate("migrate", "--json", credentials=path)
        assert result.returncode == 0, result.stderr
        with pg_cluster.log_file.open("rb") as log_file:
            log_file.seek(start)
            log = log_file.read().decode(errors="replace")
        assert "statement: " in log or "duration: " in log  # logging really was on
        for part in secret_parts(verifiers):
            assert part not in log, f"a verifier reached the log at log_statement={log_statement}"
        assert part not in result.stdout + result.stderr
        # The second round must set the passwords again: forget the fingerprints.
        with psycopg.connect(fresh_db.admin_conninfo, autocommit=True) as admin:
            for role in names.LOGIN_ROLES:
                admin.execute(sql.SQL("COMMENT ON ROLE {} IS NULL").format(sql.Identifier(role)))
