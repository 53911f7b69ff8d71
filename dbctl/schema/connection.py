"""Opening the admin connection: URL validation, redaction and one-line connection errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from dbctl.core import names
from dbctl.core.errors import DbctlError

URL_HELP = "expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME (or a libpq key=value string)"
_UNKNOWN_PARAMETER = re.compile(r'^invalid (?:URI query parameter:|connection option) "([A-Za-z0-9_]+)"$')
_SERVER_PREFIX = re.compile(
    r'connection to server (?:at|on socket) "[^"]*"(?: \([^)]*\))?,? (?:port \d+ )?failed: '
)


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
    except psycopg.ProgrammingError as exc:
        raise DbctlError(f"the database URL is malformed: {_parse_error(exc)}; {URL_HELP}") from None
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


def _parse_error(exc: psycopg.ProgrammingError) -> str:
    """libpq's parse error, naming an unknown parameter; other quoted fragments (maybe secret) become "…"."""
    message = " ".join(str(exc).split())
    unknown = _UNKNOWN_PARAMETER.search(message)
    if unknown:
        return f"unknown parameter {unknown[1]!r} (a typo? see libpq's connection parameters)"
    return re.sub(r'"[^"]*"', '"…"', message) or "unparseable"


def _reason(exc: psycopg.OperationalError, url: str) -> str:
    """All of libpq's message on one line, minus the "connection to server at … failed:" prefixes we already
    say, e.g. 'root certificate file "/x" does not exist Either provide the file, …'. Never the password."""
    reason = " ".join(str(exc).split()).removeprefix("connection failed:").strip()
    reason = _SERVER_PREFIX.sub("", reason)
    for prefix in ("FATAL: ", "fe_sendauth: "):
        reason = reason.replace(prefix, "")
    password = str(conninfo_to_dict(url).get("password") or "")
    for secret in {password, quote(password, safe="")} - {""}:
        reason = reason.replace(secret, "***")
    return reason or "connection failed"
