"""`dbctl migrate --stack NAME`: where a deployed stack's database is, and its credentials.

- ``read_outputs(stack_name, work_dir)``: the stack's outputs through the Pulumi automation API
  (``select_stack(...).outputs()``). It needs the Pulumi CLI and the stack's backend login; it is the only
  place dbctl imports Pulumi.
- ``parse_outputs(outputs) -> StackTarget``: the outputs the database core defines (primary_address,
  primary_port, database_name, master_secret_arn, role_secret_arns, primary_instance_id, region,
  pre_migration_snapshot), validated.
- ``admin_url(client, target, via=None, ssl_root_cert=None)``: the master user's URL from its Secrets Manager
  secret; ``via=HOST:PORT`` connects through a tunnel (e.g. an SSM port-forward) while TLS still verifies
  the RDS host name (libpq ``hostaddr``).
- ``role_verifiers(client, target)``: each login role's SCRAM verifier from its secret (never the password).
  The secrets are PgBouncer's auth source (its hosts read the same AWSCURRENT versions), so `--stack` may set
  these verifiers even where dbctl or a rotation set another (dbctl.schema.credentials.PasswordSource); an
  operator's ``--credentials`` file may not.
- ``load(stack_name)``, ``admin_access(target, ...)``, ``monitor_url(stack_name, ...)``: the above put
  together, with a Secrets Manager client in the stack's region (what `--stack` resolves to).
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import make_conninfo

from dbctl.core import names
from dbctl.core.errors import DbctlError
from dbctl.schema.credentials import verifiers_from_mapping

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StackTarget:
    stack: str
    address: str
    port: int
    database: str
    master_secret_arn: str
    role_secret_arns: Mapping[str, str]
    instance_id: str
    region: str
    pre_migration_snapshot: bool


def read_outputs(stack_name: str, work_dir: Path = REPO_ROOT) -> dict[str, Any]:
    """The stack's outputs as plain values (secrets unwrapped in memory only)."""
    try:
        from pulumi import automation
    except ImportError:  # pragma: no cover - pulumi is a locked dependency
        raise DbctlError("the pulumi package is missing; run `uv sync`") from None
    try:
        stack = automation.select_stack(stack_name=stack_name, work_dir=str(work_dir))
        outputs = stack.outputs()
    except Exception as exc:
        kind = type(exc).__name__
        raise DbctlError(
            f"cannot read the outputs of stack {stack_name!r} ({kind}); the automation API needs the "
            "pulumi CLI on PATH and a logged-in backend (pulumi login), and the stack must be deployed"
        ) from None
    return {key: value.value for key, value in outputs.items()}


def parse_outputs(stack_name: str, outputs: Mapping[str, Any]) -> StackTarget:
    def need(key: str) -> Any:
        if key not in outputs or outputs[key] in (None, ""):
            raise DbctlError(f"stack {stack_name!r} has no output {key!r}; run `pulumi up` for it first")
        return outputs[key]

    role_arns = need("role_secret_arns")
    if not isinstance(role_arns, Mapping):
        raise DbctlError(f"stack {stack_name!r}: output role_secret_arns must map role names to secret ARNs")
    missing = [role for role in names.LOGIN_ROLES if role not in role_arns]
    if missing:
        raise DbctlError(f"stack {stack_name!r}: role_secret_arns has no secret for {', '.join(missing)}")
    try:
        port = int(need("primary_port"))
    except (TypeError, ValueError):
        raise DbctlError(f"stack {stack_name!r}: output primary_port is not a port number") from None
    return StackTarget(
        stack=stack_name,
        address=str(need("primary_address")),
        port=port,
        database=str(outputs.get("database_name") or names.DATABASE_NAME),
        master_secret_arn=str(need("master_secret_arn")),
        role_secret_arns={role: str(role_arns[role]) for role in names.LOGIN_ROLES},
        instance_id=str(outputs.get("primary_instance_id") or ""),
        region=str(outputs.get("region") or ""),
        pre_migration_snapshot=bool(outputs.get("pre_migration_snapshot", False)),
    )


def read_secret_json(client: SecretsManagerClient, arn: str) -> dict[str, Any]:
    try:
        value = client.get_secret_value(SecretId=arn)
    except Exception as exc:
        raise DbctlError(f"cannot read secret {arn}: {type(exc).__name__}") from None
    try:
        data = json.loads(value.get("SecretString") or "")
    except json.JSONDecodeError:
        raise DbctlError(f"secret {arn} is not a JSON object") from None
    if not isinstance(data, dict):
        raise DbctlError(f"secret {arn} is not a JSON object")
    return data


def role_verifiers(client: SecretsManagerClient, target: StackTarget) -> dict[str, str]:
    """{login user: SCRAM verifier} from each role's secret (AWSCURRENT: its username names a pooled role's
    active user); the plaintext password is not used."""
    found: dict[str, object] = {}
    for role, arn in target.role_secret_arns.items():
        data = read_secret_json(client, arn)
        verifier = data.get(names.SECRET_VERIFIER_KEY)
        if not isinstance(verifier, str) or not verifier:
            raise DbctlError(f"secret {arn} (role {role}) has no {names.SECRET_VERIFIER_KEY!r}")
        username = data.get(names.SECRET_USERNAME_KEY)
        found[role] = {names.SECRET_VERIFIER_KEY: verifier} | (
            {names.SECRET_USERNAME_KEY: username} if username is not None else {}
        )
    return verifiers_from_mapping(found, f"stack {target.stack!r} role secrets")


def admin_url(
    client: SecretsManagerClient,
    target: StackTarget,
    *,
    via: str | None = None,
    ssl_root_cert: str | None = None,
) -> str:
    """libpq conninfo for the master user; via=HOST:PORT goes through a tunnel, TLS still checks the name."""
    data = read_secret_json(client, target.master_secret_arn)
    user = data.get(names.SECRET_USERNAME_KEY)
    password = data.get(names.SECRET_PASSWORD_KEY)
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        raise DbctlError(
            f"master secret {target.master_secret_arn} needs {names.SECRET_USERNAME_KEY!r} and "
            f"{names.SECRET_PASSWORD_KEY!r}"
        )
    params: dict[str, str] = {
        "host": target.address,
        "port": str(target.port),
        "dbname": target.database,
        "user": user,
        "password": password,
        "sslmode": "verify-full",
    }
    if via:
        host, _, port = via.rpartition(":")
        if not host or not port.isdigit():
            raise DbctlError(f"--via {via!r}: expected HOST:PORT of a tunnel, e.g. 127.0.0.1:15432")
        try:
            params["hostaddr"] = socket.gethostbyname(host)
        except OSError:
            raise DbctlError(f"--via {via!r}: cannot resolve {host}") from None
        params["port"] = port
    if ssl_root_cert:
        params["sslrootcert"] = ssl_root_cert
    return make_conninfo(**params)


def load(stack_name: str) -> StackTarget:
    """The deployed stack's outputs, validated."""
    return parse_outputs(stack_name, read_outputs(stack_name))


def _secrets_client(target: StackTarget) -> SecretsManagerClient:
    import boto3

    return boto3.client("secretsmanager", region_name=target.region or None)


def admin_access(
    target: StackTarget, *, via: str | None = None, ssl_root_cert: str | None = None
) -> tuple[str, dict[str, str]]:
    """The master user's conninfo and each login user's verifier, from the stack's secrets."""
    client = _secrets_client(target)
    return admin_url(client, target, via=via, ssl_root_cert=ssl_root_cert), role_verifiers(client, target)


def monitor_url(stack_name: str, *, via: str | None = None, ssl_root_cert: str | None = None) -> str:
    """spike_monitor's conninfo from its own secret, built as admin_url builds the master's."""
    target = load(stack_name)
    monitor = dataclasses.replace(target, master_secret_arn=target.role_secret_arns[names.MONITOR_ROLE])
    return admin_url(_secrets_client(target), monitor, via=via, ssl_root_cert=ssl_root_cert)
