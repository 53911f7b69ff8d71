"""What makes a local cluster look like RDS to dbctl: a non-superuser admin and RDS's superuser-only bits.

API (each takes the ``ClusterSpec``; run by ``bootstrap.init`` as the bootstrap superuser)
---
- ``make_rds_like(cluster, pgstattuple_schema=None)``: an ``rds_superuser`` NOLOGIN role holding
  pg_monitor (WITH ADMIN OPTION) and pg_signal_backend, the admin (master) role
  ``NOSUPERUSER CREATEROLE CREATEDB LOGIN`` in it, the ``spike_land`` database owned by the admin, and
  pg_stat_statements pre-created in template1 and spike_land (so databases created later have it too);
  then ``create_superuser_extensions``.
- ``create_superuser_extensions(cluster, pgstattuple_schema)``: pg_cron (when preloaded) and pgstattuple
  (in ``pgstattuple_schema``, which the caller names: the app's, e.g. dbctl.schema.maintenance's; not
  created when None) in spike_land when the server has them, as RDS's rds_superuser may.
- ``create_database(cluster, name)``: CREATE DATABASE as the admin (owner: the admin), like a fresh RDS
  database.
- ``hide_secret_statements(conn)``: keep a superuser session's ``… PASSWORD '<verifier>'`` statements out of
  pg_stat_statements and the server log.
"""

from __future__ import annotations

import os

import psycopg
from psycopg import sql

from dbctl.core import names, scram
from dbctl.postgres.install import preload_libraries
from dbctl.postgres.spec import ClusterSpec

RDS_SUPERUSER = "rds_superuser"


def hide_secret_statements(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """For a bootstrap-superuser session about to run `CREATE/ALTER ROLE … PASSWORD '<verifier>'` as a
    literal: keep it out of pg_stat_statements (which spike_monitor reads through pg_monitor) and out of the
    server log. Both settings are superuser-only, as the bootstrap user is; dbctl's own roles step, which
    must work as RDS's admin, sends verifiers by COPY instead (dbctl.core.roles)."""
    conn.execute("SET pg_stat_statements.track_utility = off")
    conn.execute("SET log_statement = 'none'")


def make_rds_like(cluster: ClusterSpec, pgstattuple_schema: str | None = None) -> None:
    admin_verifier = scram.scram_verifier(cluster.admin_password, os.urandom(scram.SALT_BYTES))
    rds_superuser, admin = sql.Identifier(RDS_SUPERUSER), sql.Identifier(cluster.admin_user)
    with psycopg.connect(cluster.superuser_conninfo("postgres"), autocommit=True) as conn:
        hide_secret_statements(conn)
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(rds_superuser))
        conn.execute(sql.SQL("GRANT pg_monitor TO {} WITH ADMIN OPTION").format(rds_superuser))
        conn.execute(sql.SQL("GRANT pg_signal_backend TO {} WITH ADMIN OPTION").format(rds_superuser))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE CREATEDB PASSWORD {}").format(
                admin, sql.Literal(admin_verifier)
            )
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(rds_superuser, admin))
    # In template1 first, so every database created later (per-test ones too) has pg_stat_statements.
    with psycopg.connect(cluster.superuser_conninfo("template1"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    create_database(cluster, names.DATABASE_NAME)
    create_superuser_extensions(cluster, pgstattuple_schema)


def create_superuser_extensions(cluster: ClusterSpec, pgstattuple_schema: str | None) -> None:
    """pg_cron and pgstattuple in spike_land, when the server has them, as RDS's rds_superuser may.

    Locally the admin is no superuser and neither extension is trusted, so the bootstrap superuser
    creates them (pgstattuple in `pgstattuple_schema`, owned by the admin; not at all when None) and gives
    rds_superuser pg_cron's schema, as RDS does; the post-deploy step then finds them and goes on."""
    with psycopg.connect(cluster.superuser_conninfo(names.DATABASE_NAME), autocommit=True) as conn:
        available = {
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM pg_available_extensions WHERE name IN ('pg_cron', 'pgstattuple')"
            ).fetchall()
        }
        if "pgstattuple" in available and pgstattuple_schema is not None:
            schema = sql.Identifier(pgstattuple_schema)
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                    schema, sql.Identifier(cluster.admin_user)
                )
            )
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS pgstattuple SCHEMA {}").format(schema))
        if "pg_cron" in available and "pg_cron" in preload_libraries(cluster.install):
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA cron TO {}").format(sql.Identifier(RDS_SUPERUSER)))


def create_database(cluster: ClusterSpec, name: str) -> None:
    """CREATE DATABASE name as the admin, who owns it (as the master user does on RDS)."""
    with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
