"""Issue 25, item 1: an old credentials file must not move a password backwards (undo a rotation).

The reproduction: the app role rotated twice (spike_app_a active again, with a new password), then
`dbctl migrate --credentials <a copy from before the rotations>`. Before the rule it set the old verifier on
spike_app_a ("set password of spike_app_a"), and every new pooled login failed.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import psycopg
import pytest

from dbctl.core import names, rotation
from tests.integration.conftest import FreshDatabase, RunMigrate, secret_shaped

pytestmark = pytest.mark.integration

APP_A, APP_B = names.login_users(names.APP_ROLE)


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def logs_in(db: FreshDatabase, user: str, password: str) -> bool:
    try:
        psycopg.connect(db.cluster.conninfo(user, password, db.name), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
        return False
    return True


def rotate_twice(db: FreshDatabase) -> rotation.Secret:
    """The app role's rotation, twice: _b gets a new password, then _a; returns _a's (the active one)."""
    active = APP_A
    secret = None
    with psycopg.connect(db.admin_conninfo, autocommit=True) as conn:
        for _ in range(2):
            secret = rotation.next_secret(names.APP_ROLE, active)
            assert rotation.set_password(conn, secret.username, secret.scram_verifier)
            active = secret.username
    assert secret is not None and secret.username == APP_A
    return secret


def test_an_old_file_cannot_undo_two_rotations(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    passwords = {role: secrets.token_urlsafe(18) for role in names.LOGIN_ROLES}
    old = write(tmp_path / "before-rotations.json", secret_shaped(passwords))
    first = run_migrate("migrate", credentials=old)  # the shared cluster's roles: set this test's passwords
    assert first.returncode == 0, first.stderr
    assert logs_in(fresh_db, APP_A, passwords[names.APP_ROLE])
    current = rotate_twice(fresh_db)
    assert logs_in(fresh_db, APP_A, current.password)
    assert not logs_in(fresh_db, APP_A, passwords[names.APP_ROLE])

    refused = run_migrate("migrate", credentials=old, reset_passwords=False)

    assert refused.returncode == 2, refused.stdout
    [line] = refused.stderr.splitlines()
    assert line.startswith("error: the credentials would change the existing password of spike_app_a,")
    assert "--reset-passwords" in line and "rotate" in line
    assert current.password not in refused.stderr + refused.stdout
    assert logs_in(fresh_db, APP_A, current.password), "the refused run changed the rotated password"
    # A dry run says the same, and the current verifiers (as the secret holds them) go through unchanged.
    dry = run_migrate("migrate", "--dry-run", credentials=old, reset_passwords=False)
    assert dry.returncode == 2 and "spike_app_a" in dry.stderr
    # status with the old file says migrate would refuse, not only "set password of spike_app_a".
    status = run_migrate("status", credentials=old)
    assert status.returncode == 1, status.stderr
    said = status.stdout + status.stderr
    assert "password of spike_app_a: the file's verifier differs" in said and "refuses" in said, said
    assert current.password not in said
    now = secret_shaped(passwords) | {names.APP_ROLE: current.as_json()}
    fine = run_migrate("migrate", credentials=write(tmp_path / "now.json", now), reset_passwords=False)
    assert fine.returncode == 0, fine.stderr
    assert "no changes" in fine.stdout

    # The explicit override sets the file's password (the operator vouches that PgBouncer holds it).
    reset = run_migrate("migrate", credentials=old, reset_passwords=True)
    assert reset.returncode == 0, reset.stderr
    assert "set password of spike_app_a" in reset.stdout
    assert logs_in(fresh_db, APP_A, passwords[names.APP_ROLE])


def test_new_users_get_their_password_from_a_file(
    fresh_db: FreshDatabase, run_migrate: RunMigrate, tmp_path: Path
) -> None:
    """A user with no password dbctl set (new, or the _b user no rotation has touched) gets the file's."""
    passwords = {role: secrets.token_urlsafe(18) for role in names.LOGIN_ROLES}
    first = run_migrate("migrate", credentials=write(tmp_path / "c.json", secret_shaped(passwords)))
    assert first.returncode == 0, first.stderr
    with psycopg.connect(fresh_db.admin_conninfo, autocommit=True) as conn:
        conn.execute(f"COMMENT ON ROLE {APP_B} IS NULL")
    secret = rotation.new_secret(APP_B)
    data = secret_shaped(passwords) | {names.APP_ROLE: secret.as_json()}
    given = run_migrate("migrate", credentials=write(tmp_path / "b.json", data), reset_passwords=False)
    assert given.returncode == 0, given.stderr
    assert f"set password of {APP_B}" in given.stdout
    assert logs_in(fresh_db, APP_B, secret.password)
