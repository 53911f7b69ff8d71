"""Secrets Manager rotation function for the stack's master secret and its pooled roles' secrets.

Secrets Manager calls it four times per rotation, with the secret, the new version's token and the step
(AWS's rotation function template: createSecret, setSecret, testSecret, finishSecret); each step is
idempotent, since Secrets Manager retries a failed rotation from the step that failed.

- **The master secret** (single user, MASTER_SECRET_ARN): createSecret puts a new password for the same
  user; setSecret logs in with the current password and sets the new one's SCRAM verifier on itself
  (dbctl.rotation.set_own_password: the verifier travels by COPY, never in a statement); testSecret logs in
  with the new password. RDS read replicas follow through replication.
- **A pooled role's secret** (alternating users, ROLE_SECRETS): createSecret puts a new password and
  verifier for the role's *inactive* user (`<role>_b` when `<role>_a` is current: dbctl.rotation); setSecret
  sets that user's verifier as the master user; testSecret logs in **through the PgBouncer endpoint** as
  the pending user, retrying for up to TEST_TIMEOUT_S: the PgBouncer hosts add AWSPENDING's user to their
  auth file on their refresh timer (components/pgbouncer_userdata.py: every 5 min, up to 30 s jitter), so
  the switch waits until they have; finishSecret moves AWSCURRENT to the new version (AWSPREVIOUS follows).
  The user switched away from is untouched until the next rotation. setSecret logs in as the master
  with its AWSCURRENT, else its AWSPENDING: the master's own rotation may be between its set and finish.
- **The configuration test**: declaring a rotation with `RotateImmediately` false (every `pulumi up` that
  creates one) makes Secrets Manager run testSecret once on an AWSPENDING version that no createSecret
  wrote (no value, or AWSCURRENT's), then remove it. The function recognises it (`is_configuration_test`)
  and checks only that the secret reads and has a rotation's shape: on a first `pulumi up` no `_a`/`_b`
  user exists yet and the PgBouncer hosts may still be booting.
- **The migrator's secret** (single user, MIGRATOR_SECRET_ARN): createSecret puts a new password and verifier
  for the same user; setSecret sets the verifier as the master user (with its fingerprint, so `dbctl
  migrate` then changes nothing); testSecret logs in to the primary (CI connects directly, not pooled).

Configuration (environment): MASTER_SECRET_ARN, MIGRATOR_SECRET_ARN, ROLE_SECRETS (JSON {secret ARN: role}),
DB_HOST, DB_PORT, DB_NAME, PGBOUNCER_HOST, PGBOUNCER_PORT, TEST_TIMEOUT_S (default 420), SSL_ROOT_CERT (the
RDS CA bundle beside this file), PGBOUNCER_CA_PEM (PgBouncer's CA certificate: verify-full; empty with
`pgbouncer.clientTls` off). No secret is ever logged.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from dbctl.core import names, rotation

STAGES = ("AWSCURRENT", "AWSPENDING")
DEFAULT_TEST_TIMEOUT_S = 420  # > the hosts' 5 min refresh + 30 s jitter, < the function's 600 s timeout
RDS_CA_FILE = Path(__file__).with_name("rds-ca-bundle.pem")


@dataclass(frozen=True)
class Config:
    master_secret_arn: str
    role_secrets: dict[str, str]  # secret ARN -> pooled role
    db_host: str
    db_port: int
    db_name: str
    pgbouncer_host: str
    pgbouncer_port: int
    test_timeout_s: float
    ssl_root_cert: str
    pgbouncer_ca_file: str
    migrator_secret_arn: str = ""  # single user, like the master's, but set by the master; "" = not rotated

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        e = dict(os.environ if env is None else env)
        ca = e.get("PGBOUNCER_CA_FILE", "")
        if not ca and e.get("PGBOUNCER_CA_PEM"):
            ca = str(Path(tempfile.gettempdir()) / "pgbouncer-ca.pem")
            Path(ca).write_text(e["PGBOUNCER_CA_PEM"], encoding="utf-8")
        roles = json.loads(e.get("ROLE_SECRETS", "{}"))
        unknown = sorted(set(roles.values()) - set(names.ALTERNATING_ROLES))
        if unknown:
            raise ValueError(f"ROLE_SECRETS names {', '.join(unknown)}; only pooled roles rotate here")
        return cls(
            master_secret_arn=e["MASTER_SECRET_ARN"],
            role_secrets=roles,
            db_host=e["DB_HOST"],
            db_port=int(e.get("DB_PORT", names.POSTGRES_PORT)),
            db_name=e.get("DB_NAME", names.DATABASE_NAME),
            pgbouncer_host=e["PGBOUNCER_HOST"],
            pgbouncer_port=int(e.get("PGBOUNCER_PORT", names.PGBOUNCER_PORT)),
            test_timeout_s=float(e.get("TEST_TIMEOUT_S", DEFAULT_TEST_TIMEOUT_S)),
            ssl_root_cert=e.get("SSL_ROOT_CERT", str(RDS_CA_FILE)),
            pgbouncer_ca_file=ca,
            migrator_secret_arn=e.get("MIGRATOR_SECRET_ARN", ""),
        )

    def rotates(self, arn: str) -> bool:
        return arn in (self.master_secret_arn, self.migrator_secret_arn) or arn in self.role_secrets


class RotationFailed(RuntimeError):
    """A step cannot go on; Secrets Manager records the failure and retries. Never holds a secret."""


def _secret(client: Any, arn: str, stage: str, token: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, str] = {"SecretId": arn, "VersionStage": stage}
    if token is not None:
        kwargs["VersionId"] = token
    value = json.loads(client.get_secret_value(**kwargs)["SecretString"])
    if not isinstance(value, dict):
        raise RotationFailed(f"secret {arn} ({stage}) is not a JSON object")
    return value


def _connect(host: str, port: int, dbname: str, user: str, password: str, ca: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=host,
        port=port,
        dbname=dbname,
        user=user,
        password=password,
        # verify-full against the CA; none (pgbouncer.clientTls off) leaves PgBouncer's leg as the app has it.
        sslmode="verify-full" if ca else "prefer",
        sslrootcert=ca or None,
        connect_timeout=10,
        application_name="spike-land-db rotation",
        autocommit=True,
    )


def _active_user(role: str, secret: dict[str, Any]) -> str:
    """The user AWSCURRENT names; the role itself (the single-user layout) is its _a user."""
    username = secret.get(names.SECRET_USERNAME_KEY, role)
    return names.login_users(role)[0] if username == role else str(username)


def create_secret(client: Any, cfg: Config, arn: str, token: str) -> str:
    try:
        _secret(client, arn, "AWSPENDING", token)
        return "pending version exists"
    except client.exceptions.ResourceNotFoundException:
        pass
    current = _secret(client, arn, "AWSCURRENT")
    if arn == cfg.master_secret_arn:
        new = rotation.new_secret(str(current[names.SECRET_USERNAME_KEY]))  # single user: the same one
        value = {**current, names.SECRET_PASSWORD_KEY: new.password}
    elif arn == cfg.migrator_secret_arn:  # single user, with the verifier dbctl migrate compares
        value = {**current, **rotation.new_secret(str(current[names.SECRET_USERNAME_KEY])).as_json()}
    else:
        role = cfg.role_secrets[arn]
        value = rotation.next_secret(role, _active_user(role, current)).as_json()
    client.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(value), VersionStages=["AWSPENDING"]
    )
    return f"new version for {value[names.SECRET_USERNAME_KEY]}"


def _master_connection(client: Any, cfg: Config) -> psycopg.Connection[Any]:
    """A session as the master user, for a role's setSecret. Its AWSCURRENT first; when that fails to log
    in, its AWSPENDING: the master's own rotation may be between its setSecret (the database has the
    pending password) and its finishSecret (AWSCURRENT still names the old one). Each schedule runs on its
    own, so a role's and the master's rotations can overlap."""
    tried: set[str] = set()
    problem = "no master secret version to log in with"
    for stage in ("AWSCURRENT", "AWSPENDING", "AWSCURRENT"):  # the last: finishSecret moved it meanwhile
        try:
            master = _secret(client, cfg.master_secret_arn, stage)
        except client.exceptions.ResourceNotFoundException:
            continue  # no master rotation under way (AWSPENDING), or its test version carries no value
        password = str(master.get(names.SECRET_PASSWORD_KEY, ""))
        if not password or password in tried:
            continue
        tried.add(password)
        try:
            return _connect(
                cfg.db_host,
                cfg.db_port,
                cfg.db_name,
                str(master[names.SECRET_USERNAME_KEY]),
                password,
                cfg.ssl_root_cert,
            )
        except psycopg.OperationalError as e:
            problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise RotationFailed(
        f"set: cannot log in as the master user with its current or pending secret ({problem})"
    )


def set_secret(client: Any, cfg: Config, arn: str, token: str) -> str:
    pending = _secret(client, arn, "AWSPENDING", token)
    user, password = str(pending[names.SECRET_USERNAME_KEY]), str(pending[names.SECRET_PASSWORD_KEY])
    if arn == cfg.master_secret_arn:
        try:  # already set (a retried step)?
            _connect(cfg.db_host, cfg.db_port, cfg.db_name, user, password, cfg.ssl_root_cert).close()
            return f"{user} already has the new password"
        except psycopg.OperationalError:
            pass
        current = _secret(client, arn, "AWSCURRENT")
        verifier = rotation.verifier_for(password)
        conn = _connect(
            cfg.db_host,
            cfg.db_port,
            cfg.db_name,
            user,
            str(current[names.SECRET_PASSWORD_KEY]),
            cfg.ssl_root_cert,
        )
        with conn:
            rotation.set_own_password(conn, verifier)
        return f"{user}'s password set"
    with _master_connection(client, cfg) as conn:  # a pooled role's inactive user, or the migrator
        changed = rotation.set_password(conn, user, str(pending[names.SECRET_VERIFIER_KEY]))
    return f"{user}'s verifier {'set' if changed else 'already set'}"


def test_secret(
    client: Any, cfg: Config, arn: str, token: str, sleep: Callable[[float], None] | None = None
) -> str:
    pending = _secret(client, arn, "AWSPENDING", token)
    user, password = str(pending[names.SECRET_USERNAME_KEY]), str(pending[names.SECRET_PASSWORD_KEY])
    if arn in (cfg.master_secret_arn, cfg.migrator_secret_arn):  # both connect to the primary directly

        def connect() -> psycopg.Connection[Any]:
            return _connect(cfg.db_host, cfg.db_port, cfg.db_name, user, password, cfg.ssl_root_cert)

        where = "the primary"
    else:
        database = rotation.POOL_DATABASE[cfg.role_secrets[arn]]

        def connect() -> psycopg.Connection[Any]:
            return _connect(
                cfg.pgbouncer_host, cfg.pgbouncer_port, database, user, password, cfg.pgbouncer_ca_file
            )

        where = f"PgBouncer ({database})"
    kwargs: dict[str, Any] = {"timeout": cfg.test_timeout_s}
    if sleep is not None:
        kwargs["sleep"] = sleep
    try:
        rotation.check_login(connect, user, **kwargs)
    except rotation.RotationError as e:
        raise RotationFailed(str(e)) from None
    return f"{user} logs in through {where}"


def finish_secret(client: Any, cfg: Config, arn: str, token: str) -> str:
    versions = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next(v for v, stages in versions.items() if "AWSCURRENT" in stages)
    if current == token:
        return "already current"
    client.update_secret_version_stage(
        SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current
    )
    return "AWSCURRENT moved to the new version"


def is_configuration_test(client: Any, arn: str, token: str) -> bool:
    """Whether a testSecret call is Secrets Manager's configuration test, not a rotation's step.

    With `RotateImmediately` false (components/rotation.py), RotateSecret "tests the rotation configuration
    by running the testSecret step"; "the test creates an AWSPENDING version of the secret and then removes
    it" (the RotateSecret API reference; pulumi_aws's `rotate_immediately` docstring). No createSecret ran
    for that version, so it holds no value, or AWSCURRENT's. A rotation's testSecret always follows its
    createSecret, whose version holds a new password: never AWSCURRENT's value, never none."""
    try:
        pending = client.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
    except client.exceptions.ResourceNotFoundException:
        return True  # a version without a value (GetSecretValue: ResourceNotFoundException)
    text = pending.get("SecretString")
    if not text:
        return True
    current = client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT").get("SecretString")
    return bool(text == current)


def configuration_test(client: Any, cfg: Config, arn: str) -> str:
    """The configuration test's check: the function can read and decrypt the secret (IAM, the KMS key, the
    endpoint) and its AWSCURRENT has the shape a rotation needs. It logs in nowhere: on a stack's first
    `pulumi up` the post-deploy step has not created the `_a`/`_b` users yet and the PgBouncer hosts may
    still be booting; the first scheduled rotation logs in for real."""
    current = _secret(client, arn, "AWSCURRENT")
    user, password = current.get(names.SECRET_USERNAME_KEY), current.get(names.SECRET_PASSWORD_KEY)
    if not isinstance(user, str) or not user or not isinstance(password, str) or not password:
        raise RotationFailed(f"secret {arn} (AWSCURRENT) lacks a username or a password")
    if arn in cfg.role_secrets:
        role = cfg.role_secrets[arn]
        try:
            user = rotation.inactive_user(role, _active_user(role, current))
        except rotation.RotationError as e:
            raise RotationFailed(str(e)) from None
    return f"configuration test passed: the secret reads; the next rotation prepares {user}"


STEPS = {
    "createSecret": create_secret,
    "setSecret": set_secret,
    "testSecret": test_secret,
    "finishSecret": finish_secret,
}


def handler(event: dict[str, Any], context: object, client: Any = None, cfg: Config | None = None) -> None:
    """The Lambda entry point: one rotation step. Logs one JSON line (no secret) per call."""
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    if client is None:
        import boto3  # in the Lambda runtime

        client = boto3.client("secretsmanager")
    cfg = cfg or Config.from_env()
    if not cfg.rotates(arn):
        raise RotationFailed(f"secret {arn} is not one this function rotates")
    metadata = client.describe_secret(SecretId=arn)
    stages = metadata["VersionIdsToStages"].get(token)
    if stages is None:
        raise RotationFailed(f"secret {arn} has no version {token}")
    if "AWSPENDING" not in stages and "AWSCURRENT" not in stages:
        raise RotationFailed(f"version {token} of {arn} is not AWSPENDING")
    if step == "testSecret" and "AWSCURRENT" not in stages and is_configuration_test(client, arn, token):
        # Changes nothing, so it does not depend on when RotateSecret reports the rotation enabled.
        outcome = configuration_test(client, cfg, arn)
    elif not metadata.get("RotationEnabled"):
        raise RotationFailed(f"secret {arn} has rotation disabled")
    elif "AWSCURRENT" in stages:
        outcome = "already current"
    elif step not in STEPS:
        raise RotationFailed(f"unknown step {step!r}")
    else:
        outcome = STEPS[step](client, cfg, arn, token)
    print(json.dumps({"secret": arn, "step": step, "outcome": outcome}))
