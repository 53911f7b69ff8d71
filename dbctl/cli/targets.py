"""Where a command connects: the options --database-url, --credentials, --stack, --via and --ssl-root-cert
(shared by migrate, status, migrate resolve and report) and what they resolve to.

A deployed stack's outputs and secrets are read by dbctl/aws/stack.py (Pulumi automation API, boto3), and
its pre-migration snapshot hook is dbctl/aws/snapshots.py's; this module declares the options, checks that
they go together and calls those. dbctl/aws is imported only for --stack (boto3 is slow to import).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dbctl.core.errors import DbctlError
from dbctl.schema.commands import Database
from dbctl.schema.credentials import load_credentials_file

F = TypeVar("F", bound=Callable[..., Any])

STACK_HELP = "Read endpoint and secrets from this Pulumi stack instead."
ADMIN_URL_HELP = (
    "Admin (master) connection URL, direct to PostgreSQL (not PgBouncer). Prefer the env var: a URL on the "
    "command line shows up in process lists."
)


REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_ENV_VAR = "DBCTL_LOCAL_ROOT"


def local_root_option() -> Callable[[F], F]:
    """--root (hidden; DBCTL_LOCAL_ROOT): where the local stack's .local/ and .env are, for tests."""
    return click.option(
        "--root",
        type=click.Path(file_okay=False, path_type=Path),
        default=REPO_ROOT,
        envvar=ROOT_ENV_VAR,
        hidden=True,
        help="Directory holding .local/ and .env (default: the repository root).",
    )


def database_url_option(help: str, envvar: str = "DATABASE_URL") -> Callable[[F], F]:
    return click.option("--database-url", envvar=envvar, show_envvar=True, help=help)


def credentials_option() -> Callable[[F], F]:
    return click.option(
        "--credentials",
        type=click.Path(dir_okay=False, path_type=Path),
        help="JSON file mapping each login role to its SCRAM verifier, or to its secret's JSON "
        "(scram_verifier, password); a plaintext password alone is refused.",
    )


def stack_option(help: str = STACK_HELP) -> Callable[[F], F]:
    return click.option("--stack", "stack_name", help=help)


def via_option(help: str) -> Callable[[F], F]:
    return click.option("--via", metavar="HOST:PORT", help=help)


def ssl_root_cert_option(help: str) -> Callable[[F], F]:
    return click.option("--ssl-root-cert", type=click.Path(exists=True, dir_okay=False), help=help)


def admin_options(func: F) -> F:
    """The admin connection's five options, as `dbctl migrate` and `dbctl status` take them."""
    options = [
        database_url_option(ADMIN_URL_HELP),
        credentials_option(),
        stack_option(),
        via_option("With --stack: connect through a tunnel (e.g. SSM port-forward) at HOST:PORT."),
        ssl_root_cert_option(
            "With --stack: the RDS CA bundle for sslmode=verify-full (default: libpq's PGSSLROOTCERT)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _tunnel_needs_stack(stack_name: str | None, via: str | None, ssl_root_cert: str | None) -> None:
    if (via or ssl_root_cert) and not stack_name:
        raise DbctlError("--via and --ssl-root-cert go with --stack; put them in the URL otherwise")


def _say(line: str) -> None:
    click.echo(line, err=True)


def admin_database(
    database_url: str | None,
    credentials: Path | None,
    stack_name: str | None,
    via: str | None,
    ssl_root_cert: str | None,
) -> Database:
    """The admin connection, the verifiers (none without --credentials) and, with --stack, its hook."""
    if stack_name:
        if credentials:
            raise DbctlError("--stack reads the role secrets itself; drop --credentials")
        from dbctl.aws import snapshots, stack

        target = stack.load(stack_name)
        url, verifiers = stack.admin_access(target, via=via, ssl_root_cert=ssl_root_cert)
        return Database(url, verifiers, snapshots.before_pending_migrations(target, _say), auth_source=True)
    _tunnel_needs_stack(stack_name, via, ssl_root_cert)
    if not database_url:
        raise DbctlError("no database: pass --stack NAME, or --database-url / DATABASE_URL")
    return Database(database_url, None if credentials is None else load_credentials_file(credentials))


def monitor_conninfo(
    database_url: str | None, stack_name: str | None, via: str | None, ssl_root_cert: str | None
) -> str | None:
    """spike_monitor's conninfo from --stack (its own secret) or --database-url; None without either."""
    _tunnel_needs_stack(stack_name, via, ssl_root_cert)
    if stack_name:
        from dbctl.aws import stack

        return stack.monitor_url(stack_name, via=via, ssl_root_cert=ssl_root_cert)
    return database_url or None
