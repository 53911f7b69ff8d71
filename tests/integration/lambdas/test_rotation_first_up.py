"""A stack's first `pulumi up` with rotation declared, then its first rotation after the post-deploy step.

`pulumi up` declares each rotation with `rotate_immediately=False` (components/rotation.py), and Secrets
Manager then runs the function's testSecret step once on a new AWSPENDING version and removes it
(tests/integration/lambdas/fake_secretsmanager.py cites the documents). At that moment the post-deploy step
has not run: no `_a`/`_b` users exist and no PgBouncer host answers (here: a closed port). The database is
a real PostgreSQL in its own cluster (the master's and the roles' passwords are changed in it); standing in
for PgBouncer after the post-deploy step is PostgreSQL itself, whose pooled path test_rotation_lambda.py
covers with a real PgBouncer.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any, get_args

import boto3
import psycopg
import pytest
from moto import mock_aws

from dbctl.core import names, rotation
from dbctl.postgres.cluster import Cluster, throwaway_cluster
from dbctl.postgres.osproc import HOST, free_port
from dbctl.schema import maintenance
from lambdas.rotation import handler
from tests.integration.conftest import FreshDatabase
from tests.integration.helpers import migrate_in_process
from tests.integration.lambdas.fake_secretsmanager import FakeSecretsManager, TestVersion

pytestmark = pytest.mark.integration
REGION = "eu-west-1"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A cluster of its own: rotations change cluster-wide roles' passwords."""
    with throwaway_cluster("dbctl-test-first-up-", pgstattuple_schema=maintenance.SCHEMA) as c:
        yield c


def role_exists(cluster: Cluster, user: str) -> bool:
    with psycopg.connect(cluster.admin_conninfo()) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is not None


def first_up(cluster: Cluster, client: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The secrets as the first `pulumi up` writes them (the master's standard RDS JSON, each pooled role's
    `_a` user with its password and verifier): ({key: ARN}, {role: password})."""
    master = {
        "engine": "postgres",
        "host": HOST,
        "port": cluster.port,
        "username": cluster.admin_user,
        "password": cluster.admin_password,
        "dbname": names.DATABASE_NAME,
    }
    arns = {"master": client.create_secret(Name="master", SecretString=json.dumps(master))["ARN"]}
    passwords = {role: secrets.token_urlsafe(24) for role in names.LOGIN_ROLES}
    for role in (*names.ALTERNATING_ROLES, names.MIGRATOR_ROLE):
        value = {
            names.SECRET_USERNAME_KEY: names.login_users(role)[0],
            names.SECRET_PASSWORD_KEY: passwords[role],
            names.SECRET_VERIFIER_KEY: rotation.verifier_for(passwords[role]),
        }
        arns[role] = client.create_secret(Name=role, SecretString=json.dumps(value))["ARN"]
    return arns, passwords


def config(cluster: Cluster, arns: dict[str, str], pgbouncer_port: int) -> handler.Config:
    return handler.Config(
        master_secret_arn=arns["master"],
        role_secrets={arns[role]: role for role in names.ALTERNATING_ROLES},
        db_host=HOST,
        db_port=cluster.port,
        db_name=names.DATABASE_NAME,
        pgbouncer_host=HOST,
        pgbouncer_port=pgbouncer_port,
        test_timeout_s=1,
        ssl_root_cert="",
        pgbouncer_ca_file="",
        migrator_secret_arn=arns[names.MIGRATOR_ROLE],
    )


@pytest.mark.parametrize("test_version", get_args(TestVersion))
def test_the_first_up_passes_the_configuration_test_leaves_nothing_pending_and_the_first_rotation_works(
    cluster: Cluster, test_version: TestVersion, capsys: pytest.CaptureFixture[str]
) -> None:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        arns, passwords = first_up(cluster, client)
        cfg = config(cluster, arns, pgbouncer_port=free_port())  # the hosts are still booting
        sm = FakeSecretsManager(client, lambda event: handler.handler(event, None, sm, cfg))
        before = {key: sm.get_secret_value(SecretId=arn)["SecretString"] for key, arn in arns.items()}
        assert not role_exists(cluster, f"{names.APP_ROLE}_a")  # the post-deploy step has not run

        # `pulumi up`: one SecretRotation per secret, rotate_immediately=False.
        for arn in arns.values():
            sm.rotate_secret(SecretId=arn, RotateImmediately=False, test_version=test_version)
        assert [e["Step"] for e in sm.invocations] == ["testSecret"] * 5
        outcomes = [json.loads(line)["outcome"] for line in capsys.readouterr().out.strip().splitlines()]
        assert all(o.startswith("configuration test passed") for o in outcomes), outcomes
        for key, arn in arns.items():
            assert sm.pending_version(arn) is None, key  # nothing left pending
            assert sm.get_secret_value(SecretId=arn)["SecretString"] == before[key]  # nothing changed

        # The post-deploy step, then the hosts are up (PostgreSQL stands in for them: see the docstring).
        migrate_in_process(FreshDatabase(cluster, names.DATABASE_NAME), passwords)
        assert role_exists(cluster, f"{names.APP_ROLE}_b")
        cfg = config(cluster, arns, pgbouncer_port=cluster.port)

        # The first scheduled rotation of a pooled role and of the master: all four steps.
        sm.rotate_secret(SecretId=arns[names.APP_ROLE])
        app = json.loads(sm.get_secret_value(SecretId=arns[names.APP_ROLE])["SecretString"])
        assert app[names.SECRET_USERNAME_KEY] == f"{names.APP_ROLE}_b"
        with psycopg.connect(cluster.conninfo(app["username"], app["password"])) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (names.APP_ROLE,)
        sm.rotate_secret(SecretId=arns["master"])
        master = json.loads(sm.get_secret_value(SecretId=arns["master"])["SecretString"])
        assert master["password"] != cluster.admin_password
        with psycopg.connect(cluster.conninfo(cluster.admin_user, master["password"])) as conn:
            assert conn.execute("SELECT session_user").fetchone() == (cluster.admin_user,)
        # The migrator's: the same user, a new password, set by the master with its fingerprint (so the next
        # `dbctl migrate` leaves it alone); CI reads the secret at run time.
        sm.rotate_secret(SecretId=arns[names.MIGRATOR_ROLE])
        migrator = json.loads(sm.get_secret_value(SecretId=arns[names.MIGRATOR_ROLE])["SecretString"])
        assert (
            migrator["username"] == names.MIGRATOR_ROLE
            and migrator["password"] != passwords[names.MIGRATOR_ROLE]
        )
        with psycopg.connect(cluster.conninfo(names.MIGRATOR_ROLE, migrator["password"])) as conn:
            assert conn.execute("SELECT session_user").fetchone() == (names.MIGRATOR_ROLE,)
        with psycopg.connect(
            cluster.conninfo(cluster.admin_user, master["password"]), autocommit=True
        ) as conn:
            assert not rotation.set_password(conn, names.MIGRATOR_ROLE, migrator["scram_verifier"])
        out = capsys.readouterr().out
        assert all(v["password"] not in out for v in (app, master, migrator))


def test_a_failed_configuration_test_fails_rotate_secret_and_blocks_the_next_one(
    cluster: Cluster,
) -> None:
    """The fake does what the RotateSecret reference says about a leftover AWSPENDING: the failure mode a
    configuration test must not cause (here forced with a secret the function does not rotate)."""
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        arns, _ = first_up(cluster, client)
        other = client.create_secret(Name="other", SecretString="{}")["ARN"]
        cfg = config(cluster, arns, pgbouncer_port=free_port())
        sm = FakeSecretsManager(client, lambda event: handler.handler(event, None, sm, cfg))
        with pytest.raises(handler.RotationFailed, match="not one this function rotates"):
            sm.rotate_secret(SecretId=other, RotateImmediately=False)
        assert sm.pending_version(other) is not None
        with pytest.raises(
            client.exceptions.InvalidRequestException, match="previous rotation isn't complete"
        ):
            sm.rotate_secret(SecretId=other, RotateImmediately=False)


def test_a_role_rotates_while_the_masters_rotation_is_between_its_set_and_finish_steps(
    cluster: Cluster,
) -> None:
    """The schedules run independently: a role's setSecret, which logs in as the master user, may come while
    the master's rotation has set its new password in the database but AWSCURRENT still names the old one."""
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        arns, passwords = first_up(cluster, client)
        migrate_in_process(FreshDatabase(cluster, names.DATABASE_NAME), passwords)
        cfg = config(cluster, arns, pgbouncer_port=cluster.port)
        sm = FakeSecretsManager(client, lambda event: handler.handler(event, None, sm, cfg))
        token = sm.start_rotation(arns["master"])
        for step in ("createSecret", "setSecret"):
            sm.run_step(arns["master"], token, step)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cluster.admin_conninfo()).close()  # AWSCURRENT's password no longer logs in

        sm.rotate_secret(SecretId=arns[names.APP_ROLE])  # all four steps
        app = json.loads(sm.get_secret_value(SecretId=arns[names.APP_ROLE])["SecretString"])
        assert app[names.SECRET_USERNAME_KEY] == f"{names.APP_ROLE}_b"

        for step in ("testSecret", "finishSecret"):  # the master's rotation completes as usual
            sm.run_step(arns["master"], token, step)
        assert sm.pending_version(arns["master"]) is None


def test_the_configuration_test_passes_whether_or_not_rotation_already_reads_enabled(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documents do not say when DescribeSecret starts to say RotationEnabled during RotateSecret; the
    configuration test changes nothing, so it passes either way. A rotation's own steps still require it."""
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        arns, _ = first_up(cluster, client)
        cfg = config(cluster, arns, pgbouncer_port=free_port())
        sm = FakeSecretsManager(client)
        token = sm.start_rotation(arns[names.APP_ROLE])
        sm.rotation_enabled.clear()
        event = {"SecretId": arns[names.APP_ROLE], "ClientRequestToken": token, "Step": "testSecret"}
        handler.handler(event, None, sm, cfg)
        assert json.loads(capsys.readouterr().out)["outcome"].startswith("configuration test passed")
        with pytest.raises(handler.RotationFailed, match="rotation disabled"):
            handler.handler({**event, "Step": "createSecret"}, None, sm, cfg)
