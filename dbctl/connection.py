"""Opening the admin connection: URL validation, redaction and one-line connection errors."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from dbctl import names
from dbctl.errors import DbctlError

URL_HELP = "expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME (or a libpq key=value string)"


@dataclass(frozen=True)
class Target:
    """Where a URL points, with no password: safe to print."""

    host: str
    port: str
    user: str
    dbname: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


def parse_target(url: str) -> Target:
    """Validate a connection URL and say where it points. Errors never echo the URL (it holds a password)."""
    if not url:
        raise DbctlError(f"no database URL: pass --database-url or set DATABASE_URL ({URL_HELP})")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise DbctlError(f"the database URL is malformed; {URL_HELP}") from None
    host = str(params.get("host") or params.get("hostaddr") or "")
    if not host:
        raise DbctlError(f"the database URL names no host; {URL_HELP}")
    return Target(
        host=host,
        port=str(params.get("port") or names.POSTGRES_PORT),
        user=str(params.get("user") or ""),
        dbname=str(params.get("dbname") or params.get("user") or ""),
    )


def connect(
    url: str, *, application_name: str = "dbctl"
) -> tuple[psycopg.Connection[tuple[object, ...]], Target]:
    """Connect in autocommit mode; a failure is one DbctlError line naming host, port and what failed."""
    target = parse_target(url)
    if target.port == str(names.PGBOUNCER_PORT):
        raise DbctlError(
            f"{target.host}:{target.port} is PgBouncer's port; migrations need a direct connection to "
            f"PostgreSQL "
            f"(session advisory lock, DDL), port {names.POSTGRES_PORT}"
        )
    try:
        conn = psycopg.connect(url, autocommit=True, application_name=application_name, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DbctlError(f"cannot connect to {target}: {_reason(exc, url)}") from None
    return conn, target


def _reason(exc: psycopg.OperationalError, url: str) -> str:
    """libpq's last meaningful line (e.g. 'password authentication failed for user "x"'), never the URL."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else "connection failed"
    for prefix in ("connection failed:", "FATAL:", "fe_sendauth:"):
        reason = reason.removeprefix(prefix).strip()
    params = conninfo_to_dict(url)
    password = str(params.get("password") or "")
    if password and password in reason:
        reason = reason.replace(password, "***")
    return reason
