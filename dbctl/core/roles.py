"""Least-privilege roles: what they should be, how they differ from the database, and the SQL to converge.

``plan(conn, verifiers)`` reads the catalogs and returns the ``Change``s (a description and a psycopg.sql
statement) that bring the roles, memberships, settings, passwords and privileges to the specs below;
``apply`` runs them in one transaction. An empty plan means no drift. Every statement works for RDS's master
user (NOSUPERUSER CREATEROLE CREATEDB, member of rds_superuser): nothing here needs a superuser.

Passwords: only SCRAM verifiers are sent, and never as a literal in a statement's text. ``apply`` COPYs them
into a temp table (ON COMMIT DROP) and a DO block runs ``EXECUTE format('ALTER ROLE %I PASSWORD %L', …)``:
``log_statement`` logs top-level statements only (a DO is not even "ddl"), and ``pg_stat_activity`` shows the
DO's text. pg_stat_statements with ``track = all`` does record the nested ALTER ROLE with its literal unless
``pg_stat_statements.track_utility`` is off, so the parameter group turns it off
(dbctl/stackconfig/parameters.py;
a superuser-only GUC, which RDS's admin cannot SET per session). An error inside the DO is re-raised without
the nested statement's text, so it cannot reach the log's CONTEXT line either. The admin cannot read pg_authid
on RDS, so the step records ``sha256(role:verifier)`` in the role's COMMENT and sets the password again only
when that fingerprint differs (with a random salt in the verifier, the fingerprint is no guessing oracle). A
password changed by hand outside dbctl is not detected.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from dbctl.core import names

PUBLIC = "PUBLIC"
SCHEMA = "public"
HISTORY_TABLE = "_prisma_migrations"
COMMENT_PREFIX = "dbctl: scram sha256="
DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
_PRIVILEGES = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "USAGE", "CREATE"}
    | {"CONNECT", "TEMPORARY", "EXECUTE", "MAINTAIN"}
)
_DEFAULT_ACL_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}


@dataclass(frozen=True)
class RoleSpec:
    name: str
    login: bool
    member_of: frozenset[str] = frozenset()
    connection_limit: int = -1
    settings: Mapping[str, str] = field(default_factory=dict)


# The pooled roles: (the NOLOGIN role holding the privileges, its connection limit per login user, settings).
# The pooled roles' limits must cover every PgBouncer host's pool on one server:
# hosts x (default_pool_size + reserve_pool_size), 2 x 25 in prod (tests/unit/core/test_role_limits.py).
# Each of the two users gets the whole limit: PgBouncer's max_db_connections caps a database's pool across
# users, so both together never hold more than one user alone could, and either may hold all of it.
_POOLED: tuple[tuple[str, frozenset[str], int, Mapping[str, str]], ...] = (
    (
        names.APP_ROLE,
        frozenset({names.READWRITE_ROLE}),
        200,
        {"statement_timeout": "30s", "idle_in_transaction_session_timeout": "60s"},
    ),
    (
        names.READONLY_ROLE,
        frozenset({names.READONLY_GROUP_ROLE}),
        60,
        {"default_transaction_read_only": "on", "statement_timeout": "5min"},
    ),
    (names.MONITOR_ROLE, frozenset({"pg_monitor"}), 5, {}),
)


def _alternating(
    role: str, member_of: frozenset[str], limit: int, settings: Mapping[str, str]
) -> tuple[RoleSpec, ...]:
    """The NOLOGIN role that holds the privileges, and its two login users. Each user's sessions start as
    the role (role=), as the migrator's start as spike_owner: current_user stays spike_app whichever user
    logged in, so whatever reads current_user (policies, audit triggers, tests) does not see a rotation."""
    users = tuple(
        RoleSpec(user, True, frozenset({role}), limit, {**settings, "role": role})
        for user in names.login_users(role)
    )
    return (RoleSpec(role, login=False, member_of=member_of), *users)


ROLES: tuple[RoleSpec, ...] = (
    RoleSpec(names.OWNER_ROLE, login=False),
    RoleSpec(names.READWRITE_ROLE, login=False),
    RoleSpec(names.READONLY_GROUP_ROLE, login=False),
    # Migrations wait at most 10 s for a lock instead of queueing the app behind them. Its sessions start
    # as spike_owner (role=), so whatever tool creates objects through DIRECT_URL (prisma migrate deploy,
    # psql) creates them owned by spike_owner, and the default privileges below cover them at once.
    RoleSpec(
        names.MIGRATOR_ROLE,
        True,
        frozenset({names.OWNER_ROLE}),
        5,
        {"lock_timeout": "10s", "role": names.OWNER_ROLE},
    ),
    *(spec for pooled in _POOLED for spec in _alternating(*pooled)),
)
MANAGED = tuple(spec.name for spec in ROLES)

# (grantee, privilege) wanted on the database and on schema public; everything else is revoked.
DATABASE_ACL = frozenset(
    (role, "CONNECT")
    for role in (names.OWNER_ROLE, names.READWRITE_ROLE, names.READONLY_GROUP_ROLE, names.MONITOR_ROLE)
)
SCHEMA_ACL = frozenset(
    {(names.OWNER_ROLE, "USAGE"), (names.OWNER_ROLE, "CREATE")}
    | {(role, "USAGE") for role in (names.READWRITE_ROLE, names.READONLY_GROUP_ROLE, names.MONITOR_ROLE)}
)
TABLE_ACL = frozenset({(names.READWRITE_ROLE, p) for p in DML} | {(names.READONLY_GROUP_ROLE, "SELECT")})
SEQUENCE_ACL = frozenset({(names.READWRITE_ROLE, "USAGE"), (names.READWRITE_ROLE, "SELECT")})
# The migration history is the runner's: the app and readers get nothing on it.
HISTORY_ACL: frozenset[tuple[str, str]] = frozenset()
DEFAULT_ACL = {"r": TABLE_ACL, "S": SEQUENCE_ACL}


VERIFIER_TABLE = "dbctl_verifiers"
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Change:
    description: str
    statement: sql.SQL | sql.Composed
    # (role, verifier) that the statement reads from pg_temp.dbctl_verifiers; never part of any SQL text.
    verifier: tuple[str, str] | None = field(default=None, repr=False)


def _set_password(role: str, verifier: str) -> Change:
    """ALTER ROLE … PASSWORD <verifier>, nested in a DO block that reads the verifier from the temp table."""
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"role name {role!r} is not a plain identifier")
    # The role is a plain identifier (checked above) and the verifier is not in the text: no injection.
    body = (
        "DECLARE v text; BEGIN"  # noqa: S608
        f" SELECT verifier INTO STRICT v FROM pg_temp.{VERIFIER_TABLE} WHERE role = '{role}';"
        f" EXECUTE format('ALTER ROLE %I PASSWORD %L', '{role}', v);"
        " EXCEPTION WHEN OTHERS THEN"
        f" RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = 'setting the password of {role} failed: '"
        " || SQLERRM; END"
    )
    return Change(
        f"set password of {role} (SCRAM verifier)",
        sql.SQL("DO {}").format(sql.Literal(body)),
        (role, verifier),
    )


def password_change(role: str, verifier: str) -> Change:
    """Set role's password to verifier (COPY + DO, see the module docstring), no fingerprint: what a role
    may run on itself (the master user's own rotation)."""
    return _set_password(role, verifier)


def password_changes(role: str, verifier: str) -> list[Change]:
    """Set role's password to verifier (COPY + DO, see the module docstring) and record its fingerprint."""
    wanted_comment = COMMENT_PREFIX + fingerprint(role, verifier)
    return [
        _set_password(role, verifier),
        Change(
            f"record password fingerprint of {role}",
            sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(wanted_comment)),
        ),
    ]


def fingerprint(role: str, verifier: str) -> str:
    return hashlib.sha256(f"{role}:{verifier}".encode()).hexdigest()


def _ident(role: str) -> sql.Composable:
    return sql.SQL(PUBLIC) if role == PUBLIC else sql.Identifier(role)


def _privs(privileges: Iterable[str]) -> sql.Composable:
    privs = sorted(privileges)
    unknown = set(privs) - _PRIVILEGES
    if unknown:
        raise ValueError(f"unknown privilege(s) {unknown}")
    return sql.SQL(", ").join(sql.SQL(p) for p in privs)


def _acl_changes(
    what: str, on: sql.Composable, current: set[tuple[str, str]], desired: frozenset[tuple[str, str]]
) -> list[Change]:
    """GRANT what is missing and REVOKE what is extra, one statement per grantee."""
    missing: dict[str, set[str]] = defaultdict(set)
    extra: dict[str, set[str]] = defaultdict(set)
    for grantee, priv in desired - current:
        missing[grantee].add(priv)
    for grantee, priv in current - desired:
        extra[grantee].add(priv)
    changes = []
    for grantee, privs in sorted(extra.items()):
        changes.append(
            Change(
                f"revoke {', '.join(sorted(privs))} on {what} from {grantee}",
                sql.SQL("REVOKE {} ON {} FROM {}").format(_privs(privs), on, _ident(grantee)),
            )
        )
    for grantee, privs in sorted(missing.items()):
        changes.append(
            Change(
                f"grant {', '.join(sorted(privs))} on {what} to {grantee}",
                sql.SQL("GRANT {} ON {} TO {}").format(_privs(privs), on, _ident(grantee)),
            )
        )
    return changes


def _role_changes(
    conn: psycopg.Connection[tuple[object, ...]], verifiers: Mapping[str, str] | None
) -> list[Change]:
    rows = conn.execute(
        "SELECT r.rolname, r.rolcanlogin, r.rolinherit, r.rolcreatedb, r.rolcreaterole, r.rolconnlimit,"
        " coalesce(r.rolconfig, '{}'), coalesce(shobj_description(r.oid, 'pg_authid'), ''),"
        " r.rolsuper OR r.rolreplication OR r.rolbypassrls"
        " FROM pg_roles r WHERE r.rolname = ANY(%s)",
        (list(MANAGED),),
    ).fetchall()
    existing = {str(row[0]): row for row in rows}
    member_rows = conn.execute(
        "SELECT m.rolname, g.rolname FROM pg_auth_members a"
        " JOIN pg_roles m ON m.oid = a.member JOIN pg_roles g ON g.oid = a.roleid WHERE m.rolname = ANY(%s)",
        (list(MANAGED),),
    ).fetchall()
    memberships: dict[str, set[str]] = defaultdict(set)
    for member, group in member_rows:
        memberships[str(member)].add(str(group))

    changes: list[Change] = []
    for spec in ROLES:
        role = sql.Identifier(spec.name)
        login = sql.SQL("LOGIN" if spec.login else "NOLOGIN")
        row = existing.get(spec.name)
        if row is None:
            changes.append(
                Change(
                    f"create role {spec.name}",
                    sql.SQL(
                        "CREATE ROLE {} WITH {} NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT {}"
                    ).format(role, login, sql.Literal(spec.connection_limit)),
                )
            )
            config: list[str] = []
            comment = ""
        else:
            _, can_login, inherit, createdb, createrole, connlimit, config_value, comment_value, elevated = (
                row
            )
            config = list(config_value)  # type: ignore[call-overload]
            comment = str(comment_value)
            if (can_login, inherit, createdb, createrole, connlimit) != (
                spec.login,
                True,
                False,
                False,
                spec.connection_limit,
            ):
                changes.append(
                    Change(
                        f"reset attributes of {spec.name}",
                        sql.SQL(
                            "ALTER ROLE {} WITH {} NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT {}"
                        ).format(role, login, sql.Literal(spec.connection_limit)),
                    )
                )
            if elevated:
                # Only a superuser can take these back; on RDS this statement fails, loudly, as it should.
                changes.append(
                    Change(
                        f"take SUPERUSER/REPLICATION/BYPASSRLS from {spec.name}",
                        sql.SQL("ALTER ROLE {} WITH NOSUPERUSER NOREPLICATION NOBYPASSRLS").format(role),
                    )
                )
        verifier = verifiers.get(spec.name) if spec.login and verifiers is not None else None
        if verifier is not None:
            if comment != COMMENT_PREFIX + fingerprint(spec.name, verifier):
                changes += password_changes(spec.name, verifier)
        elif not spec.login and comment.startswith(COMMENT_PREFIX):
            # A login role of the single-user layout, a NOLOGIN role now: its old password goes too.
            changes.append(
                Change(
                    f"clear the password of {spec.name} (a NOLOGIN role now; its users log in)",
                    sql.SQL("ALTER ROLE {} PASSWORD NULL").format(role),
                )
            )
            changes.append(
                Change(
                    f"clear password fingerprint of {spec.name}",
                    sql.SQL("COMMENT ON ROLE {} IS NULL").format(role),
                )
            )
        current_settings = dict(item.split("=", 1) for item in config)
        for name, value in sorted(spec.settings.items()):
            if current_settings.get(name) != value:
                changes.append(
                    Change(
                        f"set {name}={value} for {spec.name}",
                        sql.SQL("ALTER ROLE {} SET {} = {}").format(
                            role, sql.Identifier(name), sql.Literal(value)
                        ),
                    )
                )
        for name in sorted(set(current_settings) - set(spec.settings)):
            changes.append(
                Change(
                    f"reset {name} for {spec.name}",
                    sql.SQL("ALTER ROLE {} RESET {}").format(role, sql.Identifier(name)),
                )
            )
        current_groups = memberships.get(spec.name, set())
        for group in sorted(current_groups - spec.member_of):
            changes.append(
                Change(
                    f"revoke membership of {spec.name} in {group}",
                    sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), role),
                )
            )
        for group in sorted(spec.member_of - current_groups):
            changes.append(
                Change(
                    f"grant {group} to {spec.name}",
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), role),
                )
            )
    # The admin must be able to SET ROLE spike_owner.
    changes += grant_to_admin(
        conn,
        names.OWNER_ROLE,
        set_role=True,
        description=f"grant {names.OWNER_ROLE} to the admin (to create objects as it)",
    )
    return changes


def grant_to_admin(
    conn: psycopg.Connection[tuple[object, ...]], role: str, *, set_role: bool, description: str
) -> list[Change]:
    """`GRANT role TO CURRENT_USER` (the admin) unless it already has what it needs of role: SET ROLE to it
    (set_role) or, otherwise, its privileges (INHERIT, never SET). PostgreSQL 16+ gives a CREATEROLE creator
    an ADMIN-only membership (no SET, no INHERIT) in the roles it creates, so there "member" is not enough
    and the grant names its options; before 16 a membership is both."""
    version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    pg16 = bool(version and int(str(version[0])) >= 160000)
    needed = ("SET" if pg16 else "MEMBER") if set_role else "USAGE"
    has = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) AND pg_has_role(current_user, %s, %s)",
        (role, role, needed),
    ).fetchone()
    if has and has[0]:
        return []
    options = f" WITH INHERIT TRUE, SET {'TRUE' if set_role else 'FALSE'}" if pg16 else ""
    return [Change(description, sql.SQL("GRANT {} TO CURRENT_USER" + options).format(sql.Identifier(role)))]


def _acl_rows(
    conn: psycopg.Connection[tuple[object, ...]], query: str, *params: object
) -> set[tuple[str, str]]:
    return {(str(g), str(p)) for g, p in conn.execute(query, params).fetchall()}


def _privilege_changes(conn: psycopg.Connection[tuple[object, ...]]) -> list[Change]:
    changes: list[Change] = []
    row = conn.execute(
        "SELECT current_database(), EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
    ).fetchone()
    assert row is not None
    dbname, has_pgss = str(row[0]), bool(row[1])
    if not has_pgss:
        changes.append(
            Change(
                "create extension pg_stat_statements (for spike_monitor)",
                sql.SQL("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"),
            )
        )
    database_acl = _acl_rows(
        conn,
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,"
        " a.privilege_type FROM pg_database d,"
        " aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
        " WHERE d.datname = current_database() AND a.grantee <> d.datdba",
    )
    changes += _acl_changes(
        f"database {dbname}",
        sql.SQL("DATABASE {}").format(sql.Identifier(dbname)),
        database_acl,
        DATABASE_ACL,
    )
    schema_acl = _acl_rows(
        conn,
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,"
        " a.privilege_type FROM pg_namespace n,"
        " aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
        " WHERE n.nspname = %s AND a.grantee <> n.nspowner",
        SCHEMA,
    )
    changes += _acl_changes(
        f"schema {SCHEMA}", sql.SQL("SCHEMA {}").format(sql.Identifier(SCHEMA)), schema_acl, SCHEMA_ACL
    )

    default_rows = conn.execute(
        "SELECT d.defaclobjtype,"
        " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type"
        " FROM pg_default_acl d"
        " JOIN pg_namespace n ON n.oid = d.defaclnamespace JOIN pg_roles o ON o.oid = d.defaclrole,"
        " aclexplode(d.defaclacl) a"
        " WHERE o.rolname = %s AND n.nspname = %s AND a.grantee <> d.defaclrole",
        (names.OWNER_ROLE, SCHEMA),
    ).fetchall()
    current_default: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for kind, grantee, priv in default_rows:
        current_default[str(kind)].add((str(grantee), str(priv)))
    for kind in sorted(set(current_default) | set(DEFAULT_ACL)):
        word = _DEFAULT_ACL_KINDS[kind]
        for change in _acl_changes(
            f"future {word.lower()} of {names.OWNER_ROLE}",
            sql.SQL(word),
            current_default.get(kind, set()),
            DEFAULT_ACL.get(kind, frozenset()),
        ):
            statement = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} {}").format(
                sql.Identifier(names.OWNER_ROLE), sql.Identifier(SCHEMA), change.statement
            )
            changes.append(Change(change.description, statement))

    object_rows = conn.execute(
        "SELECT c.relname, c.relkind,"
        " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type"
        " FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles o ON o.oid = c.relowner"
        " LEFT JOIN LATERAL aclexplode(coalesce(c.relacl,"
        "   acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::\"char\", c.relowner))) a"
        "   ON a.grantee <> c.relowner"
        " WHERE n.nspname = %s AND o.rolname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass"
        "   AND e.objid = c.oid AND e.deptype = 'e')"
        " ORDER BY c.relname",
        (SCHEMA, names.OWNER_ROLE),
    ).fetchall()
    objects: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for relname, relkind, grantee, priv in object_rows:
        acl = objects[(str(relname), str(relkind))]
        if grantee is not None:
            acl.add((str(grantee), str(priv)))
    for (relname, relkind), acl in objects.items():
        if relkind == "S":
            desired, word = SEQUENCE_ACL, "SEQUENCE"
        else:
            desired, word = (HISTORY_ACL if relname == HISTORY_TABLE else TABLE_ACL), "TABLE"
        changes += _acl_changes(
            f"{word.lower()} {relname}",
            sql.SQL("{} {}").format(sql.SQL(word), sql.Identifier(SCHEMA, relname)),
            acl,
            desired,
        )
    return changes


# pg_class relkinds and pg_type typtypes that dbctl expects spike_owner to own in schema public.
_OWNED_RELKINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}
_OWNED_RELKINDS |= {"S": "sequence", "c": "type"}
_OWNED_TYPTYPES = {"e": "type", "d": "domain", "r": "type", "m": "type"}


def foreign_owned(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Tables, views, sequences and types in schema public not owned by spike_owner (extension members and
    a table's own row type aside): the app's roles may lack privileges on them. One line each."""
    rows = conn.execute(
        "SELECT 'r', c.relkind::text, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %(schema)s AND c.relkind = ANY(%(relkinds)s)"
        " AND pg_get_userbyid(c.relowner) <> %(owner)s"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass"
        "   AND e.objid = c.oid AND e.deptype = 'e')"
        " UNION ALL"
        " SELECT 't', t.typtype::text, t.typname, pg_get_userbyid(t.typowner) FROM pg_type t"
        " JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = %(schema)s AND t.typtype = ANY(%(typtypes)s)"
        " AND pg_get_userbyid(t.typowner) <> %(owner)s"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_type'::regclass"
        "   AND e.objid = t.oid AND e.deptype = 'e')"
        " ORDER BY 3",
        {
            "schema": SCHEMA,
            "relkinds": list(_OWNED_RELKINDS),
            "typtypes": list(_OWNED_TYPTYPES),
            "owner": names.OWNER_ROLE,
        },
    ).fetchall()
    out = []
    for catalog, kind, name, owner in rows:
        word = (_OWNED_RELKINDS if catalog == "r" else _OWNED_TYPTYPES)[str(kind)]
        out.append(
            f'{word} {SCHEMA}."{name}" is owned by {owner}, not {names.OWNER_ROLE}: '
            f'ALTER {word.upper()} {SCHEMA}."{name}" OWNER TO {names.OWNER_ROLE}, and create objects '
            f"through DIRECT_URL ({names.MIGRATOR_ROLE}) or dbctl migrate"
        )
    return out


def plan(conn: psycopg.Connection[tuple[object, ...]], verifiers: Mapping[str, str] | None) -> list[Change]:
    """The changes that bring roles and privileges to the desired state (empty: no drift).

    verifiers maps login users (spike_migrator, spike_app_a, …) to the SCRAM verifier to set; a user left
    out keeps its password (the inactive user of a pooled role, whose verifier only a rotation knows). None
    skips the password check (status without credentials).
    """
    return _role_changes(conn, verifiers) + _privilege_changes(conn)


def apply(conn: psycopg.Connection[tuple[object, ...]], changes: Iterable[Change]) -> None:
    """Run the changes in one transaction; verifiers travel by COPY into a temp table, never in SQL text."""
    changes = list(changes)
    verifiers = [change.verifier for change in changes if change.verifier is not None]
    with conn.transaction():
        if verifiers:
            table = sql.Identifier(VERIFIER_TABLE)
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {} (role text PRIMARY KEY, verifier text NOT NULL) ON COMMIT DROP"
                ).format(table)
            )
            with conn.cursor().copy(
                sql.SQL("COPY pg_temp.{} (role, verifier) FROM STDIN").format(table)
            ) as copy:
                for row in verifiers:
                    copy.write_row(row)
        for change in changes:
            conn.execute(change.statement)
