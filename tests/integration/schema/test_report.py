"""`dbctl report`: the real CLI against a real local stack (PostgreSQL + PgBouncer), as spike_monitor.

One stack for the module (test_local's fixture, in a temp dir on free ports). The app's traffic goes through
PgBouncer with .env's DATABASE_URL, as Spike Land's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from dbctl.cli.targets import ROOT_ENV_VAR
from dbctl.core import names
from dbctl.local.stack import existing_stack
from dbctl.postgres.osproc import free_port
from dbctl.postgres.spec import BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER
from dbctl.schema import maintenance, report
from tests.integration.local.test_local import REPO_ROOT, LocalStack, stack  # noqa: F401 - the module's fixture

EIGHT = (
    "connections",
    "slow_queries",
    "table_sizes",
    "index_usage",
    "unused_indexes",
    "bloat",
    "replication",
    "pgbouncer_pools",
)


def dbctl_report(
    s: LocalStack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MONITOR_"))}
    base.pop(ROOT_ENV_VAR, None)
    return subprocess.run(
        [sys.executable, "-m", "dbctl", "report", "--root", str(s.root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO_ROOT,
        env={**base, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )


def report_json(s: LocalStack, *args: str) -> dict[str, object]:
    result = dbctl_report(s, "--local", "--json", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def admin_conn(s: LocalStack, user: str = DEFAULT_ADMIN_USER) -> psycopg.Connection[tuple[object, ...]]:
    stack_ = existing_stack(s.paths)
    return psycopg.connect(
        stack_.cluster.conninfo(user, stack_.creds[user].password, names.DATABASE_NAME), autocommit=True
    )


@pytest.mark.integration
def test_json_has_the_eight_sections_and_maintenance(stack: LocalStack) -> None:  # noqa: F811
    with stack.connect("DATABASE_URL") as app:  # PgBouncer lists a pool once a client has used it
        app.execute("SELECT 1")
    data = report_json(stack)
    assert list(data) == [*EIGHT, "maintenance", "large_objects"]
    conns = data["connections"]
    assert isinstance(conns, list)
    monitor_user = f"{names.MONITOR_ROLE}_a"  # the login user (a new stack's first)
    assert any(c["user"] == monitor_user and c["application"] == "dbctl report" for c in conns)
    tables = {t["table"] for t in data["table_sizes"]}  # type: ignore[attr-defined]
    assert {"User", "Session", "_prisma_migrations"} <= tables
    assert all(
        t["total_bytes"] >= t["table_bytes"] + t["index_bytes"] - 8192 * 4  # toast may sit in both
        for t in data["table_sizes"]  # type: ignore[attr-defined]
    )
    indexes = {i["index"] for i in data["index_usage"]}  # type: ignore[attr-defined]
    assert "User_email_key" in indexes
    unused = {i["index"] for i in data["unused_indexes"]}  # type: ignore[attr-defined]
    # Never scanned, not backing a constraint: Session_userId_idx yes; a primary or unique key never.
    assert "Session_userId_idx" in unused
    assert not unused & {"User_pkey", "User_email_key", "Session_sessionToken_key"}
    bloat = data["bloat"]
    assert isinstance(bloat, dict)
    assert bloat["method"] == report.BLOAT_METHOD
    assert {"User", "Session"} <= {t["table"] for t in bloat["tables"]}
    assert "User_pkey" in {i["index"] for i in bloat["indexes"]}
    # test_local's stack has the local hot standby (wt-replica): the primary reports it, streaming.
    replication = data["replication"]
    assert isinstance(replication, dict)
    assert replication["role"] == "primary" and replication["note"] == ""
    assert [(r["replica"], r["state"]) for r in replication["replicas"]] == [
        ("spike_local_replica", "streaming")
    ]
    pools = data["pgbouncer_pools"]
    assert isinstance(pools, dict) and pools["reachable"] is True
    assert names.DATABASE_NAME in {p["database"] for p in pools["pools"]}
    upkeep = data["maintenance"]
    assert isinstance(upkeep, dict)
    assert [j["jobname"] for j in upkeep["jobs"]] == [maintenance.LO_JOB_NAME, maintenance.JOB_NAME]
    job = upkeep["jobs"][1]
    assert (job["jobname"], job["schedule"], job["command"]) == (
        maintenance.JOB_NAME,
        "0 3 * * 0",
        maintenance.JOB_COMMAND,
    )
    assert job["username"] == DEFAULT_ADMIN_USER and job["active"] is True


@pytest.mark.integration
def test_human_form_is_one_titled_table_per_section(stack: LocalStack) -> None:  # noqa: F811
    result = dbctl_report(stack, "--local")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    titles = [line for line in out.splitlines() if line.startswith("== ")]
    assert titles == [f"== {key} ==" for key in (*EIGHT, "maintenance", "large_objects")]
    assert f"report for {names.MONITOR_ROLE}_a@127.0.0.1:{stack.pg_port}/{names.DATABASE_NAME}" in out
    assert "method: pgstattuple_approx" in out
    assert "spike_local_replica" in out and "streaming" in out  # the local replica, in the replication table
    # A table: a header line, a dashed rule under it, then rows.
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("schema  table")))
    assert set(lines[header + 1].replace(" ", "")) == {"-"}


@pytest.mark.integration
def test_a_literal_the_app_ran_never_appears_in_the_report(stack: LocalStack) -> None:  # noqa: F811
    secret_email = f"person-{uuid.uuid4().hex}@example.com"
    secret_token = f"tok{uuid.uuid4().hex}"
    with stack.connect("DATABASE_URL") as app:
        # A plannable statement with an inline literal (pg_stat_statements normalises it to $1) and a
        # utility statement with a dollar-quoted one (PostgreSQL keeps that text as it was sent).
        app.execute(f"SELECT count(*) FROM \"User\" WHERE email = '{secret_email}'")  # noqa: S608
        app.execute(f"DO $body$BEGIN PERFORM length('{secret_token}'); END$body$")
    with admin_conn(stack) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s", (f"%{secret_token}%",)
        ).fetchone()
    assert kept == (1,), "pg_stat_statements keeps the utility statement's literal: redaction must hide it"
    as_json = dbctl_report(stack, "--local", "--json", "--top", "1000")
    human = dbctl_report(stack, "--local", "--top", "1000")
    for result in (as_json, human):
        assert result.returncode == 0, result.stderr
        assert secret_email not in result.stdout + result.stderr
        assert secret_token not in result.stdout + result.stderr
    queries = [q["query"] for q in json.loads(as_json.stdout)["slow_queries"]]
    assert 'SELECT count(*) FROM "User" WHERE email = $1' in queries
    assert "DO ?" in queries


@pytest.mark.integration
def test_maintenance_shows_the_last_run(stack: LocalStack) -> None:  # noqa: F811
    # A run as pg_cron records it (cron.job_run_details), written by the superuser: the job itself is
    # scheduled for Sunday 03:00 and a test does not wait for it.
    with admin_conn(stack) as conn:
        row = conn.execute(
            "SELECT jobid FROM cron.job WHERE jobname = %s", (maintenance.JOB_NAME,)
        ).fetchone()
    assert row is not None
    with admin_conn(stack, BOOTSTRAP_SUPERUSER) as su:
        su.execute(
            "INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status,"
            " return_message, start_time, end_time) VALUES (%s, nextval('cron.runid_seq'), 1, %s, %s, %s,"
            " 'succeeded', 'VACUUM', '2026-11-29 03:00:00+00', '2026-11-29 03:04:10+00')",
            (row[0], names.DATABASE_NAME, DEFAULT_ADMIN_USER, maintenance.JOB_COMMAND),
        )
    jobs = report_json(stack)["maintenance"]["jobs"]  # type: ignore[index]
    [job] = [j for j in jobs if j["jobname"] == maintenance.JOB_NAME]
    assert (job["last_status"], job["last_message"]) == ("succeeded", "VACUUM")
    assert job["last_start"] == "2026-11-29T03:00:00+00:00" and job["last_end"] == "2026-11-29T03:04:10+00:00"


@pytest.mark.integration
def test_large_objects_are_counted_by_owner(stack: LocalStack) -> None:  # noqa: F811
    with stack.connect("DATABASE_URL") as app:
        row = app.execute("SELECT lo_from_bytea(0, 'x')").fetchone()
        assert row is not None
        app.commit()
    try:
        rows = report_json(stack)["large_objects"]
        assert {"owner": names.APP_ROLE, "count": 1, "cleaned_up": False} in rows  # type: ignore[operator]
    finally:
        with stack.connect("DATABASE_URL") as app:
            app.execute("SELECT lo_unlink(%s)", (row[0],))
            app.commit()


@pytest.mark.integration
def test_pgbouncer_unreachable_is_said_and_the_rest_still_reports(stack: LocalStack) -> None:  # noqa: F811
    closed = free_port()
    stack_ = existing_stack(stack.paths)
    monitor = stack_.creds[names.MONITOR_ROLE]
    url = f"host=127.0.0.1 port={closed} dbname=pgbouncer user={monitor.username} password={monitor.password}"
    result = dbctl_report(stack, "--local", "--json", env={"MONITOR_PGBOUNCER_URL": url})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["pgbouncer_pools"]["reachable"] is False
    assert data["pgbouncer_pools"]["note"].startswith("PgBouncer not reachable")
    assert monitor.password not in result.stdout + result.stderr
    assert data["table_sizes"]


@pytest.mark.integration
def test_database_url_as_spike_monitor(stack: LocalStack) -> None:  # noqa: F811
    stack_ = existing_stack(stack.paths)
    monitor = stack_.creds[names.MONITOR_ROLE]
    url = stack_.cluster.url(monitor.username, monitor.password)
    result = dbctl_report(stack, "--json", env={"MONITOR_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == [*EIGHT, "maintenance", "large_objects"]
    assert data["pgbouncer_pools"]["reachable"] is False  # no --pgbouncer-url: said, not guessed
    assert monitor.password not in result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--local", "--stack", "prod"), "pass one of --local, --stack NAME or --database-url"),
        (("--via", "127.0.0.1:1"), "--via and --ssl-root-cert go with --stack"),
        ((), "no database: pass --local, --stack NAME"),
    ],
)
def test_bad_arguments_are_one_line(stack: LocalStack, args: tuple[str, ...], message: str) -> None:  # noqa: F811
    result = dbctl_report(stack, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


@pytest.mark.integration
def test_a_missing_privilege_fails_its_sections_only(stack: LocalStack) -> None:  # noqa: F811
    """Issue 25, item 6: `REVOKE pg_monitor FROM spike_monitor` made the whole report one error line."""
    with admin_conn(stack, BOOTSTRAP_SUPERUSER) as su:
        su.execute(f"REVOKE pg_monitor FROM {names.MONITOR_ROLE}")
        try:
            result = dbctl_report(stack, "--local", "--json")
            text = dbctl_report(stack, "--local")
        finally:
            su.execute(f"GRANT pg_monitor TO {names.MONITOR_ROLE}")
    assert result.returncode == 0, result.stderr + result.stdout
    data = json.loads(result.stdout)
    failed = report.failed_sections(data)
    assert "bloat" in failed and "permission denied" in data["bloat"]["error"]
    assert isinstance(data["table_sizes"], list) and data["table_sizes"]
    assert isinstance(data["connections"], list)
    assert text.returncode == 0, text.stderr
    assert "== bloat ==\nerror: permission denied" in text.stdout and "== table_sizes ==" in text.stdout
