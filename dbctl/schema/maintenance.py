"""Scheduled maintenance: pg_cron's weekly VACUUM ANALYZE, the report's helpers, as a convergent step.

``plan(conn) -> Plan`` reads the database and returns the ``roles.Change``s that bring it to the state below,
or a ``skipped`` reason when pg_cron cannot run here; ``apply(conn, changes)`` runs them in one transaction
(dbctl.roles' shape: plan, print, apply). It runs as the admin (RDS's master user, in rds_superuser):

- schema ``spike_ops`` (owned by the admin; never ``public``, which belongs to Prisma's schema), with
  ``USAGE`` for spike_monitor;
- ``pgstattuple`` in ``spike_ops`` when the server has it: the report's bloat estimate (its functions are
  executable by pg_stat_scan_tables, which spike_monitor holds through pg_monitor);
- ``pg_cron`` (in ``cron.database_name``; RDS lets rds_superuser create it), then the job ``JOB_NAME``
  running ``JOB_COMMAND`` at ``JOB_SCHEDULE`` (the seed's Sunday 03:00, UTC: pg_cron's default time zone
  is GMT), scheduled by the admin, so it runs as the admin, who owns the database and may vacuum every table;
- the job ``LO_JOB_NAME``: every minute, unlink the large objects of the roles that must not write (see
  ``LO_JOB_COMMAND``); the admin is granted those roles' privileges for it (INHERIT, not SET);
- ``spike_ops.cron_jobs()``, a SECURITY DEFINER function owned by the admin that returns the admin's jobs
  and each one's last run: cron.job and cron.job_run_details only show a role its own rows (row-level
  security), and spike_monitor gets EXECUTE on this function and nothing else of pg_cron.

pg_cron can only be created in the one database named by ``cron.database_name`` and only when the server
preloads it; anywhere else the step is skipped and says why (a per-test database, a PostgreSQL without
Debian's ``postgresql-<major>-cron``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dbctl.core import names, roles

SCHEMA = "spike_ops"
JOB_NAME = "spike-weekly-vacuum-analyze"
JOB_SCHEDULE = "0 3 * * 0"  # Sunday 03:00 (GMT), the seed's weekly automated maintenance
JOB_COMMAND = "VACUUM (ANALYZE)"
# Large objects of the roles that must not write. PostgreSQL checks no privilege to create one, and the
# functions that do (lo_create, lo_from_bytea, ...) belong to the bootstrap superuser (rdsadmin on RDS), so
# the admin cannot revoke them: spike_readonly can `BEGIN READ WRITE; SELECT lo_from_bytea(0, 'x')` where
# the read pool is the primary. This job unlinks such objects every minute (pg_cron's finest cron schedule
# before 1.5), which bounds what a reader can store to a minute's worth; the report counts them by owner.
LO_JOB_NAME = "spike-large-object-cleanup"
LO_JOB_SCHEDULE = "* * * * *"
# The roles and their login users (<role>_a/_b: a session that RESETs its role creates objects as the user).
LO_OWNERS = tuple(
    owner
    for role in (names.READONLY_ROLE, names.MONITOR_ROLE)
    for owner in dict.fromkeys((role, *names.login_users(role)))
)
# The role names are this module's constants, not input.
LO_JOB_COMMAND = (
    "SELECT pg_catalog.lo_unlink(m.oid) FROM pg_catalog.pg_largeobject_metadata m"  # noqa: S608
    f" WHERE m.lomowner::regrole::text IN ({', '.join(repr(owner) for owner in LO_OWNERS)})"
)
JOBS = ((JOB_NAME, JOB_SCHEDULE, JOB_COMMAND), (LO_JOB_NAME, LO_JOB_SCHEDULE, LO_JOB_COMMAND))
JOBS_FUNCTION = "cron_jobs"

Conn = psycopg.Connection[tuple[object, ...]]

# The body of spike_ops.cron_jobs(): the calling owner's jobs with their latest run (cron.job_run_details
# exists from pg_cron 1.3 on; Debian bookworm ships 1.4, RDS 1.6).
JOBS_FUNCTION_BODY = """
SELECT j.jobname::text, j.schedule::text, j.command::text, j.active, j.username::text,
       r.status::text, r.start_time, r.end_time, left(r.return_message, 200)::text
FROM cron.job j
LEFT JOIN LATERAL (
    SELECT d.status, d.start_time, d.end_time, d.return_message FROM cron.job_run_details d
    WHERE d.jobid = j.jobid ORDER BY d.start_time DESC NULLS LAST, d.runid DESC LIMIT 1
) r ON true
ORDER BY j.jobname
"""
JOBS_FUNCTION_RESULT = (
    "jobname text, schedule text, command text, active boolean, username text,"
    " last_status text, last_start timestamptz, last_end timestamptz, last_message text"
)


@dataclass
class Plan:
    changes: list[roles.Change] = field(default_factory=list)
    skipped: str = ""


def _one(conn: Conn, query: str, *params: object) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _cron_unavailable(conn: Conn) -> str:
    """Why pg_cron cannot be used in this database ('' when it can)."""
    if not _one(conn, "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron')"):
        return "pg_cron is not installed on this server (Debian: apt-get install postgresql-<major>-cron)"
    preload = str(_one(conn, "SELECT current_setting('shared_preload_libraries')") or "")
    if "pg_cron" not in [lib.strip() for lib in preload.split(",")]:
        return "pg_cron is not in shared_preload_libraries (add it and restart the server)"
    database = _one(conn, "SELECT current_setting('cron.database_name', true)")
    current = _one(conn, "SELECT current_database()")
    if database != current:
        return f"pg_cron runs in database {database!r} (cron.database_name), not in {current!r}"
    return ""


def _short(command: str) -> str:
    return command if len(command) <= 40 else command[:39] + "…"


def plan(conn: Conn) -> Plan:
    why = _cron_unavailable(conn)
    if why:
        return Plan(skipped=why)
    changes: list[roles.Change] = []
    schema = sql.Identifier(SCHEMA)
    monitor = sql.Identifier(names.MONITOR_ROLE)
    function = sql.Identifier(SCHEMA, JOBS_FUNCTION)
    schema_exists = _one(conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", SCHEMA)
    if not schema_exists:
        changes.append(
            roles.Change(f"create schema {SCHEMA}", sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        )
    if not schema_exists or not _one(
        conn, "SELECT has_schema_privilege(%s, %s, 'USAGE')", names.MONITOR_ROLE, SCHEMA
    ):
        changes.append(
            roles.Change(
                f"grant usage on schema {SCHEMA} to {names.MONITOR_ROLE}",
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, monitor),
            )
        )
    has_pgstattuple = _one(conn, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple')")
    if not has_pgstattuple and _one(
        conn, "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgstattuple')"
    ):
        changes.append(
            roles.Change(
                f"create extension pgstattuple in {SCHEMA} (bloat estimates for dbctl report)",
                sql.SQL("CREATE EXTENSION IF NOT EXISTS pgstattuple SCHEMA {}").format(schema),
            )
        )
    if not _one(conn, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')"):
        changes.append(
            roles.Change("create extension pg_cron", sql.SQL("CREATE EXTENSION IF NOT EXISTS pg_cron"))
        )
    body = _one(
        conn,
        "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND p.proname = %s AND p.pronargs = 0 AND p.prosecdef",
        SCHEMA,
        JOBS_FUNCTION,
    )
    if body != JOBS_FUNCTION_BODY:
        changes.append(
            roles.Change(
                f"create function {SCHEMA}.{JOBS_FUNCTION}() (the jobs and their last runs, for the report)",
                sql.SQL(
                    "CREATE OR REPLACE FUNCTION {}() RETURNS TABLE ({}) LANGUAGE sql STABLE SECURITY DEFINER"
                    " SET search_path = pg_catalog, pg_temp AS {}"
                ).format(function, sql.SQL(JOBS_FUNCTION_RESULT), sql.Literal(JOBS_FUNCTION_BODY)),
            )
        )
    exists = body is not None
    public_can = exists and _one(
        conn, "SELECT has_function_privilege('public', %s, 'EXECUTE')", f"{SCHEMA}.{JOBS_FUNCTION}()"
    )
    monitor_can = exists and _one(
        conn,
        "SELECT has_function_privilege(%s, %s, 'EXECUTE')",
        names.MONITOR_ROLE,
        f"{SCHEMA}.{JOBS_FUNCTION}()",
    )
    if not exists or public_can:
        changes.append(
            roles.Change(
                f"revoke execute on {SCHEMA}.{JOBS_FUNCTION}() from PUBLIC",
                sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(function),
            )
        )
    if not monitor_can:
        changes.append(
            roles.Change(
                f"grant execute on {SCHEMA}.{JOBS_FUNCTION}() to {names.MONITOR_ROLE}",
                sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(function, monitor),
            )
        )
    # lo_unlink needs the owner's privileges: the admin takes those roles' privileges (INHERIT, never SET).
    for owner in LO_OWNERS:
        changes += roles.grant_to_admin(
            conn,
            owner,
            set_role=False,
            description=f"grant {owner}'s privileges to the admin (to unlink its large objects)",
        )
    has_jobs = _one(conn, "SELECT to_regclass('cron.job') IS NOT NULL")
    database = _one(conn, "SELECT current_database()")
    for name, schedule, command in JOBS:
        job = None
        if has_jobs:
            job = conn.execute(
                "SELECT schedule, command, database, active FROM cron.job"
                " WHERE jobname = %s AND username = current_user",
                (name,),
            ).fetchone()
        if job is None or tuple(job) != (schedule, command, database, True):
            verb = "schedule" if job is None else "reschedule"
            changes.append(
                roles.Change(
                    f"{verb} {name}: {_short(command)} at '{schedule}' (pg_cron, GMT)",
                    # cron.schedule(name, ...) updates the caller's job of that name in place (pg_cron 1.3+).
                    sql.SQL("SELECT cron.schedule({}, {}, {})").format(
                        sql.Literal(name), sql.Literal(schedule), sql.Literal(command)
                    ),
                )
            )
    return Plan(changes)


def apply(conn: Conn, changes: Iterable[roles.Change]) -> None:
    """Run the changes in one transaction (roles.apply's)."""
    roles.apply(conn, changes)


def job_report(conn: Conn) -> dict[str, Any]:
    """The report's `maintenance` section: the jobs and each one's last run, through spike_ops.cron_jobs()."""
    fn = f"{SCHEMA}.{JOBS_FUNCTION}()"
    found = _one(conn, "SELECT to_regprocedure(%s) IS NOT NULL", fn)
    if not found:
        return {"scheduler": "pg_cron", "jobs": [], "note": f"no {fn}: pg_cron is not set up (dbctl migrate)"}
    if not _one(conn, "SELECT has_function_privilege(%s, 'EXECUTE')", fn):
        return {"scheduler": "pg_cron", "jobs": [], "note": f"{fn} is not executable by this role"}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {}()").format(sql.Identifier(SCHEMA, JOBS_FUNCTION)))
        jobs = [
            {
                **{k: v for k, v in row.items() if k not in ("last_start", "last_end")},
                "last_start": row["last_start"].isoformat() if row["last_start"] else None,
                "last_end": row["last_end"].isoformat() if row["last_end"] else None,
            }
            for row in cur.fetchall()
        ]
    return {"scheduler": "pg_cron", "jobs": jobs, "note": "" if jobs else "no job scheduled"}
