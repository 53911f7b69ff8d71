"""`dbctl local`: the production topology on this machine, for anyone without an AWS account.

`local up` starts a real PostgreSQL (RDS-like: a NOSUPERUSER CREATEROLE CREATEDB master role, TLS,
SCRAM) and a real PgBouncer with the config the AWS tier uses (same renderer: a transaction pool and a
read pool), applies the same migrations and least-privilege roles as `dbctl migrate`, and writes `.env`
with the seed's variable names.

Everything lives under `<root>/.local/` (git-ignored); `<root>` is the repository root, or the hidden
`--root` option / `DBCTL_LOCAL_ROOT` (tests and the benchmark use a temp dir):

    .local/state.json         the chosen ports, so status/down/psql/reset reuse them
    .local/credentials.json   mode 0600: generated passwords and their SCRAM verifiers, per login role
    .local/postgres/          the cluster (dbctl.cluster: data/, postgres.log, tls/)
    .local/pgbouncer/         rendered pgbouncer.ini, userlist.txt (verifiers only), log and pid
    .env                      DATABASE_URL, DIRECT_URL, DATABASE_READ_URL (mode 0600)

As root, the servers run as the OS user `postgres`; when it can't enter the checkout, postgres/ and
pgbouncer/ go to /var/lib/postgresql/dbctl-local/<hash of the root>/ instead (see `server_dir`).

Python API (the benchmark uses it): `open_stack(Paths(root), pg_port, pgbouncer_port) -> Stack`,
`up(stack, echo) -> bool` (False: was already up, nothing changed), `down(stack, echo)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import click
import psycopg

from dbctl import deploy, names
from dbctl.cluster import (
    BOOTSTRAP_SUPERUSER,
    DEFAULT_ADMIN_USER,
    SERVICE_OS_USER,
    Cluster,
    ClusterError,
    find_binary,
    port_is_free,
)
from dbctl.errors import DbctlError
from dbctl.pgbouncer import (
    POOLED_ROLES,
    PREPARED_STATEMENTS_SINCE,
    ClientTls,
    PgBouncerConfig,
    PgBouncerConfigError,
    ServerTls,
)
from dbctl.pgbouncer_server import PgBouncerServer, PgBouncerServerError, detect_version, find_pgbouncer
from dbctl.scram import SALT_BYTES, scram_verifier

REPO_ROOT = Path(__file__).resolve().parent.parent
ROOT_ENV_VAR = "DBCTL_LOCAL_ROOT"
HOST = "127.0.0.1"

# The seed's variable names, in the order .env lists them.
ENV_KEYS = ("DATABASE_URL", "DIRECT_URL", "DATABASE_READ_URL")

RESET_WARNING = "WARNING: This deletes all data!"


class LocalError(click.ClickException):
    """One clear line: what is wrong and how to fix it."""


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / ".local"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "credentials.json"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def pgbouncer_dir(self) -> Path:
        return self.state_dir / "pgbouncer"

    @property
    def env_file(self) -> Path:
        return self.root / ".env"


# ---------------------------------------------------------------- files that must never be world-readable


def write_private(path: Path, text: str) -> None:
    """Write text to path with mode 0600 from the first byte (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- state: the ports a stack was created with


@dataclass(frozen=True)
class State:
    pg_port: int
    pgbouncer_port: int

    @classmethod
    def load(cls, paths: Paths) -> State | None:
        try:
            data = json.loads(paths.state_file.read_text(encoding="utf-8"))
            return cls(pg_port=int(data["pg_port"]), pgbouncer_port=int(data["pgbouncer_port"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise LocalError(
                f"{paths.state_file} is unreadable ({e}); fix it or run `dbctl local reset --yes`"
            ) from e

    def save(self, paths: Paths) -> None:
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"pg_port": self.pg_port, "pgbouncer_port": self.pgbouncer_port}, indent=2) + "\n"
        if not paths.state_file.exists() or paths.state_file.read_text(encoding="utf-8") != text:
            paths.state_file.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credential:
    username: str
    password: str
    scram_verifier: str

    def as_secret(self) -> dict[str, str]:
        return {
            names.SECRET_USERNAME_KEY: self.username,
            names.SECRET_PASSWORD_KEY: self.password,
            names.SECRET_VERIFIER_KEY: self.scram_verifier,
        }


def new_credential(username: str) -> Credential:
    password = secrets.token_urlsafe(24)
    return Credential(username, password, scram_verifier(password, secrets.token_bytes(SALT_BYTES)))


def load_or_create_credentials(paths: Paths) -> dict[str, Credential]:
    """The bootstrap superuser, the master role and every login role: passwords generated once, kept 0600."""
    wanted = (BOOTSTRAP_SUPERUSER, DEFAULT_ADMIN_USER, *names.LOGIN_ROLES)
    creds: dict[str, Credential] = {}
    if paths.credentials_file.exists():
        try:
            data: Any = json.loads(paths.credentials_file.read_text(encoding="utf-8"))
            for role, secret in data.items():
                creds[role] = Credential(
                    secret[names.SECRET_USERNAME_KEY],
                    secret[names.SECRET_PASSWORD_KEY],
                    secret[names.SECRET_VERIFIER_KEY],
                )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LocalError(
                f"{paths.credentials_file} is malformed ({type(e).__name__}); "
                "run `dbctl local reset --yes` to start over"
            ) from e
    missing = [role for role in wanted if role not in creds]
    if missing:
        creds.update({role: new_credential(role) for role in missing})
        text = json.dumps({role: c.as_secret() for role, c in creds.items()}, indent=2)
        write_private(paths.credentials_file, text + "\n")
    os.chmod(paths.credentials_file, 0o600)
    return creds


# ---------------------------------------------------------------- .env


def url(
    credential: Credential, port: int, database: str, *, sslmode: str, extra: Mapping[str, str] | None = None
) -> str:
    """A postgresql:// URL with the password percent-encoded; `pgbouncer=true` (when given) comes last."""
    query = "&".join(f"{k}={v}" for k, v in {"sslmode": sslmode, **(extra or {})}.items())
    user = quote(credential.username, safe="")
    password = quote(credential.password, safe="")
    return f"postgresql://{user}:{password}@{HOST}:{port}/{database}?{query}"


def env_urls(
    creds: Mapping[str, Credential], state: State, pgbouncer_version: tuple[int, ...]
) -> dict[str, str]:
    """The seed's three variables.

    sslmode=require: both psql (libpq) and Prisma accept it (Prisma knows only disable/prefer/require).
    The PgBouncer -> PostgreSQL leg verifies the server certificate (verify-full); `local psql` does too.
    """
    # Before PgBouncer 1.21 (no prepared statements in transaction mode) Prisma must use unnamed ones.
    prisma = {"pgbouncer": "true"} if pgbouncer_version < PREPARED_STATEMENTS_SINCE else {}
    return {
        "DATABASE_URL": url(
            creds[names.APP_ROLE], state.pgbouncer_port, names.DATABASE_NAME, sslmode="require", extra=prisma
        ),
        "DIRECT_URL": url(creds[names.MIGRATOR_ROLE], state.pg_port, names.DATABASE_NAME, sslmode="require"),
        "DATABASE_READ_URL": url(
            creds[names.READONLY_ROLE],
            state.pgbouncer_port,
            names.READ_POOL_DATABASE,
            sslmode="require",
            extra=prisma,
        ),
    }


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


def libpq_url(prisma_url: str) -> str:
    """The same URL without Prisma-only parameters, for psql and psycopg: `psql "$(...)"`."""
    parts = urlsplit(prisma_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in PRISMA_ONLY_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(query)))


def render_env(urls: Mapping[str, str]) -> str:
    lines = ["# Written by `dbctl local up`: the local stack's connection strings. Never commit this file."]
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


# ---------------------------------------------------------------- ports


def require_free_port(port: int, flag: str, what: str) -> None:
    if not port_is_free(port):
        raise LocalError(
            f"port {port} on {HOST} is already in use (wanted for {what}); "
            f"pick another with {flag} <port>, e.g. {flag} {port + 1}"
        )


# ---------------------------------------------------------------- where the servers live


def _reachable_by_service_user(path: Path) -> bool:
    """As root the servers run as the OS user `postgres`, which must be able to traverse every parent."""
    return all(parent.stat().st_mode & 0o001 for parent in path.resolve().parents if parent.exists())


def server_dir(paths: Paths) -> Path:
    """`.local/`, unless we are root and `postgres` can't reach it (a checkout under a 0700 dir such as
    `mktemp -d` or /root): then a per-checkout dir in the `postgres` user's home (/var/lib/postgresql),
    which it owns and nobody else can write to."""
    if os.geteuid() != 0 or _reachable_by_service_user(paths.state_dir):
        return paths.state_dir
    try:
        home = Path(pwd.getpwnam(SERVICE_OS_USER).pw_dir)
    except KeyError:
        return paths.state_dir  # dbctl.cluster then says to install postgresql
    digest = hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:12]
    return home / "dbctl-local" / digest


# ---------------------------------------------------------------- the stack


Echo = Callable[[str], None]


@dataclass
class Stack:
    """The local stack of one checkout: its paths, ports, credentials and the two servers."""

    paths: Paths
    state: State
    creds: dict[str, Credential]

    @property
    def cluster(self) -> Cluster:
        return Cluster(
            base_dir=server_dir(self.paths) / "postgres",
            port=self.state.pg_port,
            admin_password=self.creds[DEFAULT_ADMIN_USER].password,
            superuser_password=self.creds[BOOTSTRAP_SUPERUSER].password,
        )

    @property
    def pgbouncer_dir(self) -> Path:
        return server_dir(self.paths) / "pgbouncer"


def resolve_state(paths: Paths, pg_port: int | None, pgbouncer_port: int | None) -> State:
    """Ports: the flags, else the ones this stack was created with, else the defaults.

    An existing cluster keeps the port it was initialised with (it is in its postgresql.conf)."""
    saved = State.load(paths)
    if saved is not None and pg_port is not None and pg_port != saved.pg_port:
        raise LocalError(
            f"this stack's PostgreSQL was created on port {saved.pg_port}; run `dbctl local up` without "
            f"--pg-port (or with --pg-port {saved.pg_port}), or recreate it (deletes its data) with "
            f"`dbctl local reset --yes --pg-port {pg_port}`"
        )
    return State(
        pg_port=pg_port or (saved.pg_port if saved else names.POSTGRES_PORT),
        pgbouncer_port=pgbouncer_port or (saved.pgbouncer_port if saved else names.PGBOUNCER_PORT),
    )


def open_stack(paths: Paths, pg_port: int | None = None, pgbouncer_port: int | None = None) -> Stack:
    return Stack(paths, resolve_state(paths, pg_port, pgbouncer_port), load_or_create_credentials(paths))


def existing_stack(paths: Paths) -> Stack:
    """The stack `up` created; a clear error when there is none."""
    state = State.load(paths)
    if state is None or not paths.credentials_file.exists():
        raise LocalError(f"no local stack in {paths.state_dir}; create it with `dbctl local up`")
    return Stack(paths, state, load_or_create_credentials(paths))


def pgbouncer_config(stack: Stack, server: PgBouncerServer) -> PgBouncerConfig:
    """The AWS tier's settings (same renderer, same defaults), pointed at the local cluster.

    The local cluster has no replica, so the read pool points at the primary, as in a stack without one.
    Server TLS: verify-full against the local cluster's self-signed certificate. Client TLS: the same key
    and certificate (SAN 127.0.0.1), so `sslmode=require` in .env works as it does against AWS."""
    cluster = stack.cluster
    return server.config(
        primary_host=HOST,
        primary_port=stack.state.pg_port,
        listen_addr=HOST,
        listen_port=stack.state.pgbouncer_port,
        server_tls=ServerTls(sslmode="verify-full", ca_file=str(cluster.ca_file)),
        client_tls=ClientTls(
            sslmode="require", key_file=str(cluster.key_file), cert_file=str(cluster.ca_file)
        ),
    )


def pooled_verifiers(creds: Mapping[str, Credential]) -> dict[str, str]:
    return {role: creds[role].scram_verifier for role in POOLED_ROLES}


def pgbouncer_version() -> tuple[int, int]:
    return detect_version(find_pgbouncer())


def start_pgbouncer(stack: Stack) -> None:
    """Render the config (shared renderer, this binary's version) and start PgBouncer; it outlives us."""
    server = PgBouncerServer(stack.pgbouncer_dir)
    server.start(pgbouncer_config(stack, server), pooled_verifiers(stack.creds))


def _pgbouncer_pid(stack: Stack) -> int | None:
    """The pid in PgBouncer's pid file when that process is a live pgbouncer, else None.

    `up` leaves PgBouncer running after it exits, so later commands find it through its pid file."""
    try:
        pid = int((stack.pgbouncer_dir / "pgbouncer.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"pgbouncer" in cmdline else None


def pgbouncer_running(stack: Stack) -> bool:
    return _pgbouncer_pid(stack) is not None


def stop_pgbouncer(stack: Stack, timeout: float = 10) -> None:
    """SIGTERM (PgBouncer's immediate shutdown) and wait for the process to go."""
    pid = _pgbouncer_pid(stack)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pgbouncer_pid(stack) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


# ---------------------------------------------------------------- migrations and roles (dbctl migrate's code)


def login_verifiers(creds: Mapping[str, Credential]) -> dict[str, str]:
    return {role: creds[role].scram_verifier for role in names.LOGIN_ROLES}


def apply_migrations(stack: Stack, echo: Echo) -> None:
    """`dbctl migrate`'s own function (dbctl.deploy.run_migrate), as the master role, direct."""
    report = deploy.run_migrate(
        stack.cluster.admin_url(),
        login_verifiers(stack.creds),
        echo=lambda step: echo(f"  {step.line().strip()}"),
    )
    echo(
        f"migrations and roles: {'changed' if report.changed else 'nothing to do'} ({report.total_ms:.0f} ms)"
    )


def migration_status(stack: Stack) -> tuple[bool, str]:
    """(up to date?, one line): applied/pending/failed migrations and role drift (dbctl status's function)."""
    report = deploy.status(stack.cluster.admin_url(), login_verifiers(stack.creds))
    parts = [f"{len(report.applied)} applied"]
    if report.pending:
        parts.append(f"{len(report.pending)} pending ({', '.join(report.pending)})")
    if report.failed:
        parts.append(f"{len(report.failed)} failed ({', '.join(f['name'] for f in report.failed)})")
    parts += report.problems
    parts.append(
        f"role drift: {len(report.role_changes)} change(s)" if report.role_changes else "roles: no drift"
    )
    ok = not report.changed
    return ok, ("up to date; " if ok else "NOT up to date (run `dbctl local up`); ") + ", ".join(parts)


# ---------------------------------------------------------------- up / down


def write_env(stack: Stack, version: tuple[int, int]) -> bool:
    """Write .env (mode 0600) when its content would change; True when it did."""
    text = render_env(env_urls(stack.creds, stack.state, version))
    env_file = stack.paths.env_file
    if env_file.exists() and env_file.read_text(encoding="utf-8") == text:
        return False
    write_private(env_file, text)
    return True


def up(stack: Stack, echo: Echo) -> bool:
    """Bring the stack up; True when something changed, False when it was already up."""
    cluster = stack.cluster
    pg_running = cluster.is_running()
    bouncer_running = pgbouncer_running(stack)
    version = pgbouncer_version()
    if pg_running and bouncer_running:
        saved = State.load(stack.paths)
        if saved is not None and saved != stack.state:
            raise LocalError(
                f"the local stack is running with PgBouncer on port {saved.pgbouncer_port}; to move it to "
                f"{stack.state.pgbouncer_port}, run `dbctl local down` first"
            )
        return write_env(stack, version)
    if not pg_running:
        require_free_port(stack.state.pg_port, "--pg-port", "PostgreSQL")
    if not bouncer_running:
        require_free_port(stack.state.pgbouncer_port, "--pgbouncer-port", "PgBouncer")
    stack.state.save(stack.paths)
    if not (cluster.data_dir / "PG_VERSION").exists():
        echo(f"initdb: a new cluster in {cluster.base_dir} (takes a few seconds) ...")
        started = time.monotonic()
        cluster.init()
        echo(f"initdb: done in {time.monotonic() - started:.1f} s; PostgreSQL on {HOST}:{cluster.port}")
    elif not pg_running:
        echo(f"starting PostgreSQL on {HOST}:{cluster.port} ...")
        cluster.start()
    echo("migrations and roles (dbctl migrate's code) ...")
    apply_migrations(stack, echo)
    if not bouncer_running:
        echo(f"starting PgBouncer {version[0]}.{version[1]} on {HOST}:{stack.state.pgbouncer_port} ...")
        start_pgbouncer(stack)
    write_env(stack, version)
    return True


def down(stack: Stack, echo: Echo) -> None:
    """Stop both servers; the data stays."""
    if pgbouncer_running(stack):
        echo("stopping PgBouncer ...")
        stop_pgbouncer(stack)
    cluster = stack.cluster
    if cluster.is_running():
        echo("stopping PostgreSQL ...")
        cluster.stop()


# ---------------------------------------------------------------- psql


PSQL_ROLES = {
    # --role: (login role, via PgBouncer?, database)
    "app": (names.APP_ROLE, True, names.DATABASE_NAME),
    "readonly": (names.READONLY_ROLE, True, names.READ_POOL_DATABASE),
    "migrator": (names.MIGRATOR_ROLE, False, names.DATABASE_NAME),
    # The master role (RDS's master user): owns the pg_cron jobs, so only it sees them in cron.job.
    "admin": (DEFAULT_ADMIN_USER, False, names.DATABASE_NAME),
}


def psql_env(stack: Stack, role: str) -> dict[str, str]:
    """libpq environment for psql as role: the password in PGPASSWORD, never on a command line.

    verify-full against the local certificate on both paths (PgBouncer serves the same certificate)."""
    user, pooled, database = PSQL_ROLES[role]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=HOST,
        PGPORT=str(stack.state.pgbouncer_port if pooled else stack.state.pg_port),
        PGDATABASE=database,
        PGUSER=user,
        PGPASSWORD=stack.creds[user].password,
        PGSSLMODE="verify-full",
        PGSSLROOTCERT=str(stack.cluster.ca_file),
        PGAPPNAME=f"dbctl local psql ({role})",
    )
    return env


# ---------------------------------------------------------------- the CLI


def _echo(message: str) -> None:
    click.echo(f"==> {message}", err=True)


def _fail(e: Exception) -> LocalError:
    return LocalError(str(e))


@click.group("local")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT,
    envvar=ROOT_ENV_VAR,
    hidden=True,
    help="Directory holding .local/ and .env (default: the repository root).",
)
@click.pass_context
def local(ctx: click.Context, root: Path) -> None:
    """The production topology on this machine: PostgreSQL + PgBouncer + migrations + roles."""
    ctx.obj = Paths(root.resolve())


def _print_summary(stack: Stack) -> None:
    s = stack.state
    click.echo(f"PostgreSQL  {HOST}:{s.pg_port}   (DIRECT_URL: {names.MIGRATOR_ROLE}, direct)")
    click.echo(
        f"PgBouncer   {HOST}:{s.pgbouncer_port}   (DATABASE_URL: {names.APP_ROLE} -> {names.DATABASE_NAME}, "
        f"DATABASE_READ_URL: {names.READONLY_ROLE} -> {names.READ_POOL_DATABASE})"
    )
    click.echo(f".env        {stack.paths.env_file}")


@local.command("up")
@click.option(
    "--pg-port", type=click.IntRange(1, 65535), help=f"PostgreSQL's port [default: {names.POSTGRES_PORT}]"
)
@click.option(
    "--pgbouncer-port",
    type=click.IntRange(1, 65535),
    help=f"PgBouncer's port [default: {names.PGBOUNCER_PORT}]",
)
@click.pass_obj
def up_command(paths: Paths, pg_port: int | None, pgbouncer_port: int | None) -> None:
    """Start the local stack (creating it the first time) and write .env. Safe to re-run."""
    if pg_port is not None and pg_port == pgbouncer_port:
        raise LocalError("--pg-port and --pgbouncer-port must differ")
    stack = open_stack(paths, pg_port, pgbouncer_port)
    try:
        changed = up(stack, _echo)
    except (ClusterError, DbctlError, PgBouncerConfigError, PgBouncerServerError) as e:
        raise _fail(e) from e
    if not changed:
        click.echo("local stack already running; nothing changed")
    _print_summary(stack)


@local.command("down")
@click.pass_obj
def down_command(paths: Paths) -> None:
    """Stop PostgreSQL and PgBouncer; the data stays for the next `up`."""
    stack = existing_stack(paths)
    try:
        down(stack, _echo)
    except ClusterError as e:
        raise _fail(e) from e
    click.echo("local stack stopped; data kept (start it again with `dbctl local up`)")


@local.command("reset")
@click.option("--yes", is_flag=True, help="Confirm: delete all local data, then run `up` again.")
@click.option("--pg-port", type=click.IntRange(1, 65535), help="PostgreSQL's port for the new stack")
@click.option("--pgbouncer-port", type=click.IntRange(1, 65535), help="PgBouncer's port for the new stack")
@click.pass_obj
def reset_command(paths: Paths, yes: bool, pg_port: int | None, pgbouncer_port: int | None) -> None:
    """Wipe the local stack (cluster, credentials, .env) and bring it up again: `prisma migrate reset`."""
    if not yes:
        raise LocalError(
            f"{RESET_WARNING} `dbctl local reset` drops the local cluster in {paths.state_dir}, its "
            "credentials and .env, then recreates them and applies all migrations. "
            "Re-run with --yes to do it."
        )
    saved = State.load(paths)
    if saved is not None and paths.credentials_file.exists():
        try:
            down(existing_stack(paths), _echo)
        except ClusterError as e:
            raise _fail(e) from e
    _echo(f"{RESET_WARNING} removing {paths.state_dir} ...")
    for directory in {paths.state_dir, server_dir(paths)}:
        shutil.rmtree(directory, ignore_errors=True)
    paths.env_file.unlink(missing_ok=True)
    State(
        pg_port or (saved.pg_port if saved else names.POSTGRES_PORT),
        pgbouncer_port or (saved.pgbouncer_port if saved else names.PGBOUNCER_PORT),
    ).save(paths)
    stack = open_stack(paths)
    try:
        up(stack, _echo)
    except (ClusterError, DbctlError, PgBouncerConfigError, PgBouncerServerError) as e:
        raise _fail(e) from e
    _print_summary(stack)


@local.command("psql", context_settings={"ignore_unknown_options": True})
@click.option("--role", type=click.Choice(list(PSQL_ROLES)), default="app", show_default=True)
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def psql_command(paths: Paths, role: str, psql_args: tuple[str, ...]) -> None:
    """Open psql as a login role (app and readonly through PgBouncer, migrator direct).

    Extra arguments go to psql, e.g. `dbctl local psql --role readonly -c 'select 1'`."""
    stack = existing_stack(paths)
    try:
        psql = str(find_binary("psql"))
    except ClusterError as e:
        raise _fail(e) from e
    # exec, not a child: psql owns the terminal; the password travels in its environment only.
    os.execvpe(psql, [psql, *psql_args], psql_env(stack, role))  # noqa: S606


# ---------------------------------------------------------------- status


POOL_COLUMNS = ("database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "maxwait")


def show_pools(stack: Stack) -> list[tuple[str, ...]]:
    """PgBouncer's SHOW POOLS, as spike_monitor (a stats_user), over the admin console."""
    monitor = stack.creds[names.MONITOR_ROLE]
    with psycopg.connect(
        host=HOST,
        port=stack.state.pgbouncer_port,
        dbname="pgbouncer",
        user=monitor.username,
        password=monitor.password,
        sslmode="verify-full",
        sslrootcert=str(stack.cluster.ca_file),
        connect_timeout=5,
        autocommit=True,
    ) as conn:
        cur = conn.execute("SHOW POOLS")
        columns = [c.name for c in cur.description or ()]
        rows = cur.fetchall()
    shown = [c for c in POOL_COLUMNS if c in columns]
    return [tuple(shown), *(tuple(str(row[columns.index(c)]) for c in shown) for row in rows)]


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@local.command("status")
@click.pass_obj
def status_command(paths: Paths) -> None:
    """Servers, ports, migration state and PgBouncer's pools. Exit 0 when all is up and up to date."""
    stack = existing_stack(paths)
    cluster = stack.cluster
    healthy = True
    pg_running = cluster.is_running()
    bouncer_running = pgbouncer_running(stack)
    for name, running, port, where in (
        ("PostgreSQL", pg_running, stack.state.pg_port, cluster.base_dir),
        ("PgBouncer ", bouncer_running, stack.state.pgbouncer_port, stack.pgbouncer_dir),
    ):
        state = f"running on {HOST}:{port}" if running else f"stopped (port {port})"
        click.echo(f"{name}  {state}  [{where}]")
        healthy &= running
    if pg_running:
        up_to_date, summary = migration_status(stack)
        click.echo(f"migrations  {summary}")
        healthy &= up_to_date
    if bouncer_running:
        click.echo("pools (SHOW POOLS):")
        click.echo(textwrap.indent(_table(show_pools(stack)), "  "))
    if not healthy:
        raise SystemExit(1)
