"""Each role, tried for real as itself after `dbctl migrate`; convergence after hand-made grants; secrets."""

from __future__ import annotations

import json
import os
import uuid

import psycopg
import pytest
from psycopg import errors, sql

from dbctl.core import names, roles, scram
from dbctl.postgres.cluster import Cluster
from dbctl.schema import deploy
from dbctl.schema.credentials import verifiers_from_mapping
from tests.integration.conftest import FreshDatabase, RunMigrate, login_user, secret_shaped
from tests.integration.helpers import migrate_in_process

pytestmark = [pytest.mark.integration, pytest.mark.all_majors]
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def migrated(fresh_db: FreshDatabase, role_passwords: dict[str, str]) -> FreshDatabase:
    migrate_in_process(fresh_db, role_passwords)
    return fresh_db


def connect_as(db: FreshDatabase, role: str, passwords: dict[str, str]) -> Conn:
    return psycopg.connect(db.conninfo(role, passwords[role]), autocommit=True)


def insert_user(conn: Conn, user_id: str) -> None:
    conn.execute(
        'INSERT INTO "User" (id, email, "updatedAt") VALUES (%s, %s, now())', (user_id, f"{user_id}@x")
    )


def test_app_can_use_data_but_not_change_schema(
    migrated: FreshDatabase, role_passwords: dict[str, str]
) -> None:
    with connect_as(migrated, names.APP_ROLE, role_passwords) as conn:
        insert_user(conn, "u1")
        conn.execute('UPDATE "User" SET name = %s WHERE id = %s', ("Ada", "u1"))
        assert conn.execute('SELECT name FROM "User" WHERE id = %s', ("u1",)).fetchone() == ("Ada",)
        conn.execute(
            'INSERT INTO "App" (id, name, "userId", "updatedAt") VALUES (%s, %s, %s, now())',
            ("a1", "x", "u1"),
        )
        conn.execute('DELETE FROM "App" WHERE id = %s', ("a1",))
        for statement in (
            'CREATE TABLE "Evil" (id int)',
            'ALTER TABLE "User" ADD COLUMN evil int',
            'DROP TABLE "Session"',
            'TRUNCATE "User" CASCADE',
            'CREATE INDEX evil ON "User"(name)',
            "SELECT * FROM _prisma_migrations",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)


def test_readonly_reads_and_cannot_write(migrated: FreshDatabase, role_passwords: dict[str, str]) -> None:
    with connect_as(migrated, names.APP_ROLE, role_passwords) as app:
        insert_user(app, "r1")
    with connect_as(migrated, names.READONLY_ROLE, role_passwords) as conn:
        assert conn.execute('SELECT count(*) FROM "User"').fetchone() == (1,)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5min",)
        with pytest.raises(errors.ReadOnlySqlTransaction):
            insert_user(conn, "r2")
        # Even when it turns read-only off, it has no write privilege.
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            'INSERT INTO "User" (id, "updatedAt") VALUES (\'r3\', now())',
            "UPDATE \"User\" SET name = 'x'",
            'DELETE FROM "User"',
            'TRUNCATE "User" CASCADE',
            'CREATE TABLE "Evil" (id int)',
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_monitor_sees_activity_and_statements_but_no_data(
    migrated: FreshDatabase, role_passwords: dict[str, str]
) -> None:
    with connect_as(migrated, names.APP_ROLE, role_passwords) as app:
        app.execute("SELECT 1 AS marker_for_monitor")
        with connect_as(migrated, names.MONITOR_ROLE, role_passwords) as conn:
            row = conn.execute(
                "SELECT query FROM pg_stat_activity WHERE usename = %s AND datname = current_database()",
                (login_user(names.APP_ROLE),),
            ).fetchone()
            assert row is not None and "marker_for_monitor" in str(row[0])
            statements = conn.execute(
                "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s", ("%marker_for_monitor%",)
            ).fetchone()
            assert statements is not None and int(str(statements[0])) >= 1
            for table in ("User", "Account", "_prisma_migrations"):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
            groups = conn.execute(
                "SELECT array_agg(g.rolname ORDER BY g.rolname) FROM pg_auth_members m"
                " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member"
                " WHERE r.rolname = current_user"
            ).fetchone()
            assert groups == (["pg_monitor"],)


def test_role_outside_the_groups_cannot_connect(migrated: FreshDatabase) -> None:
    outsider = f"outsider_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    verifier = scram.scram_verifier(password, os.urandom(16))
    with psycopg.connect(migrated.admin_conninfo, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(outsider), sql.Literal(verifier)
            )
        )
        try:
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(migrated.conninfo(outsider, password)).close()
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(outsider)))


def test_a_verifier_from_dbctl_scram_logs_in_with_its_password(
    fresh_db: FreshDatabase, role_passwords: dict[str, str]
) -> None:
    """Credentials given as verifiers (random salt, as Secrets Manager holds them) work for a real login."""
    given = {role: scram.scram_verifier(pw, os.urandom(16)) for role, pw in role_passwords.items()}
    deploy.run_migrate(fresh_db.admin_conninfo, verifiers_from_mapping(given, "test"))
    for role in (names.APP_ROLE, names.READONLY_ROLE, names.MONITOR_ROLE, names.MIGRATOR_ROLE):
        with connect_as(fresh_db, role, role_passwords) as conn:
            # A pooled role's user logs in, and its session acts as the role (role=).
            assert conn.execute("SELECT session_user").fetchone() == (login_user(role),)
            current = names.OWNER_ROLE if role == names.MIGRATOR_ROLE else role
            assert conn.execute("SELECT current_user").fetchone() == (current,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(fresh_db.conninfo(names.APP_ROLE, "not-the-password")).close()


def test_hand_made_grants_are_taken_back(
    migrated: FreshDatabase, run_migrate: RunMigrate, role_passwords: dict[str, str]
) -> None:
    with psycopg.connect(migrated.admin_conninfo, autocommit=True) as admin:
        for statement in (
            'GRANT TRUNCATE, REFERENCES ON "User" TO spike_app',
            'GRANT SELECT ON "Account" TO spike_monitor',
            'GRANT INSERT ON "Session" TO spike_ro',
            "GRANT SELECT ON _prisma_migrations TO spike_app",
            'GRANT SELECT ON "User" TO PUBLIC',
            "GRANT spike_owner TO spike_app",
            "GRANT spike_rw TO spike_readonly",
            "GRANT CREATE ON SCHEMA public TO PUBLIC",
            "GRANT CREATE ON SCHEMA public TO spike_rw",
            "ALTER ROLE spike_app_a SET work_mem = '1GB'",
            "ALTER ROLE spike_app_a SET statement_timeout = '0'",
            "ALTER ROLE spike_app_a CONNECTION LIMIT 3 CREATEDB",
            "ALTER ROLE spike_app_b RESET role",
            "ALTER DEFAULT PRIVILEGES FOR ROLE spike_owner IN SCHEMA public"
            " GRANT TRUNCATE ON TABLES TO spike_rw",
        ):
            admin.execute(statement.encode())
        admin.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC").format(sql.Identifier(migrated.name))
        )

    drift = run_migrate("status", "--json")
    assert drift.returncode == 1, drift.stderr
    assert len(json.loads(drift.stdout)["role_changes"]) >= 12

    fixed = run_migrate("migrate", "--json")
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["changed"] is True

    with psycopg.connect(migrated.admin_conninfo, autocommit=True) as admin:
        checks = admin.execute(
            "SELECT has_table_privilege('spike_app', '\"User\"', 'TRUNCATE'),"
            " has_table_privilege('spike_app', '\"User\"', 'REFERENCES'),"
            " has_table_privilege('spike_monitor', '\"Account\"', 'SELECT'),"
            " has_table_privilege('spike_readonly', '\"Session\"', 'INSERT'),"
            " has_table_privilege('spike_app', '_prisma_migrations', 'SELECT'),"
            " has_table_privilege('spike_monitor', '\"User\"', 'SELECT'),"
            " pg_has_role('spike_app', 'spike_owner', 'MEMBER'),"
            " pg_has_role('spike_readonly', 'spike_rw', 'MEMBER'),"
            " has_schema_privilege('spike_app', 'public', 'CREATE'),"
            " has_database_privilege('spike_monitor', current_database(), 'TEMPORARY')"
        ).fetchone()
        app = admin.execute(
            "SELECT rolconnlimit, rolcreatedb, rolconfig FROM pg_roles WHERE rolname = 'spike_app_a'"
        ).fetchone()
        app_b = admin.execute("SELECT rolconfig FROM pg_roles WHERE rolname = 'spike_app_b'").fetchone()
        public_acl = admin.execute(
            "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a"
            " WHERE d.datname = current_database() AND a.grantee = 0"
        ).fetchone()
    assert checks == (False,) * 10
    assert app is not None
    assert app[0] == 200 and app[1] is False
    wanted = ["idle_in_transaction_session_timeout=60s", "role=spike_app", "statement_timeout=30s"]
    assert sorted(app[2]) == wanted
    assert app_b is not None and sorted(app_b[0]) == wanted
    assert public_acl == (0,)

    again = run_migrate("migrate", "--json")
    assert json.loads(again.stdout)["changed"] is False
    assert run_migrate("status").returncode == 0


def _can_set_role(conn: Conn, role: str) -> bool:
    try:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    except errors.InsufficientPrivilege:
        return False
    conn.execute("RESET ROLE")
    return True


def test_a_revoked_admin_membership_in_the_owner_role_is_granted_again(
    migrated: FreshDatabase, role_passwords: dict[str, str]
) -> None:
    """On 16+ a revoke leaves the ADMIN-only membership that CREATE ROLE gave the admin: "member", but no SET
    ROLE. Only the 16+ check (pg_has_role ... 'SET') sees it; the pre-16 one ('MEMBER') would leave it so.
    The roles step alone: `dbctl migrate` reads the history table (spike_owner's) before it, which the
    admin can't do in that state on 16+."""
    verifiers = verifiers_from_mapping(secret_shaped(role_passwords), "test credentials")
    with psycopg.connect(migrated.admin_conninfo, autocommit=True) as admin:
        admin.execute("REVOKE spike_owner FROM CURRENT_USER")
        try:
            assert not _can_set_role(admin, names.OWNER_ROLE)
            changes = roles.plan(admin, verifiers)
            assert any(names.OWNER_ROLE in c.description and "admin" in c.description for c in changes)
            roles.apply(admin, changes)
            assert _can_set_role(admin, names.OWNER_ROLE)
            assert roles.plan(admin, verifiers) == []
        finally:
            # Roles are cluster-wide: never leave the session's cluster without the admin's membership.
            admin.execute("RESET ROLE")
            admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(names.OWNER_ROLE)))


def test_cli_never_prints_the_admin_password(
    pg_cluster: Cluster, fresh_db: FreshDatabase, run_migrate: RunMigrate
) -> None:
    result = run_migrate("migrate")
    assert result.returncode == 0
    assert pg_cluster.admin_password not in result.stdout + result.stderr


def test_superuser_only_drift_is_reported_and_refused_as_one_line(
    pg_cluster: Cluster, migrated: FreshDatabase, run_migrate: RunMigrate
) -> None:
    """REPLICATION given to a login role by a superuser: the admin cannot take it back, and says so."""
    with psycopg.connect(pg_cluster.superuser_conninfo(), autocommit=True) as superuser:
        superuser.execute("ALTER ROLE spike_readonly REPLICATION")
        try:
            status = run_migrate("status", "--json")
            assert status.returncode == 1
            assert (
                "take SUPERUSER/REPLICATION/BYPASSRLS from spike_readonly"
                in json.loads(status.stdout)["role_changes"]
            )
            result = run_migrate("migrate")
            assert result.returncode == 2
            assert result.stderr.startswith("error: database error (InsufficientPrivilege")
            assert len(result.stderr.strip().splitlines()) == 1
        finally:
            superuser.execute("ALTER ROLE spike_readonly NOREPLICATION")
    assert run_migrate("migrate").returncode == 0
