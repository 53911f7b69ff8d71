"""Creating a cluster, all or nothing: a new RDS-shaped primary (``init``) or a hot standby
(``init_standby``), each built in ``base_dir/.init-*`` and moved into place only when complete.

API (each takes the ``ClusterSpec``; ``Cluster`` has them as methods)
---
- ``init(cluster, log_statement="none", durable=True, pgstattuple_schema=None)``: initdb (bootstrap
  superuser, scram-sha-256, UTF-8), a server certificate when the install has TLS, the RDS-like config
  (``dbctl.postgres.config``), start, the RDS shaping (``dbctl.postgres.rds``: the admin, spike_land, the
  superuser-only extensions; pgstattuple goes in ``pgstattuple_schema``, the caller's), stop, then move
  into place and start there. Leaves the server running.
- ``init_standby(cluster, primary_conninfo, slot, settings)``: pg_basebackup of the primary, then its own
  TLS certificate, port and standby settings; moved into place and started like ``init``.
- ``discard_unfinished_init(cluster) -> bool``: remove what an interrupted init left (``.init-*``),
  stopping a server it had started there.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from dbctl.postgres import config, postmaster, rds
from dbctl.postgres.errors import ClusterError
from dbctl.postgres.osproc import check_reachable, chown_tree
from dbctl.postgres.spec import BOOTSTRAP_SUPERUSER, ClusterSpec

LOG_STATEMENT_VALUES = ("none", "ddl", "mod", "all")
_STAGING_PREFIX = ".init-"


def _refuse_existing(cluster: ClusterSpec) -> None:
    if cluster.data_dir.exists() and any(cluster.data_dir.iterdir()):
        raise ClusterError(
            f"{cluster.data_dir} already holds a cluster; start it, or remove it to start over"
        )


def _staging(cluster: ClusterSpec) -> ClusterSpec:
    """base_dir made reachable, leftovers of an earlier attempt removed, and a new base_dir/.init-* (0700,
    the service user's) for the same cluster, its CA the cluster's own."""
    cluster.base_dir.mkdir(parents=True, exist_ok=True)
    check_reachable(cluster.base_dir)
    cluster.base_dir.chmod(0o755)
    discard_unfinished_init(cluster)
    staging = dataclasses.replace(
        cluster,
        base_dir=Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=cluster.base_dir)),
        ca_dir=cluster.authority.directory,
    )
    staging.base_dir.chmod(0o700)
    return staging


def init(
    cluster: ClusterSpec,
    *,
    log_statement: str = "none",
    durable: bool = True,
    pgstattuple_schema: str | None = None,
) -> None:
    """Create the cluster (initdb, TLS, config), start it and make it look like RDS. Leaves it running.

    Everything is built in base_dir/.init-<random>/ (its own data/ and tls/) and moved into place only
    when the cluster is complete and stopped, then started from its final place: a kill at any moment
    leaves no data/ that a later start would take for a cluster (see discard_unfinished_init)."""
    if log_statement not in LOG_STATEMENT_VALUES:
        raise ClusterError(f"log_statement={log_statement!r} is not one of {', '.join(LOG_STATEMENT_VALUES)}")
    if not cluster.admin_password or not cluster.superuser_password:
        raise ClusterError("Cluster.init needs admin_password and superuser_password")
    _refuse_existing(cluster)
    initdb = cluster.binary("initdb")
    staging = _staging(cluster)
    if cluster.install.tls:
        cluster.authority.ensure()
    pwfile = staging.base_dir / "bootstrap.pw"
    pwfile.touch(mode=0o600)
    pwfile.write_text(cluster.superuser_password + "\n")
    chown_tree(staging.base_dir)
    try:
        result = postmaster.run(
            staging,
            [
                initdb,
                "--pgdata",
                str(staging.data_dir),
                "--username",
                BOOTSTRAP_SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ClusterError(f"initdb failed in {staging.data_dir}:\n{result.stdout.strip()}")
    if cluster.install.tls:
        config.make_tls(staging)
    config.write_config(staging, log_statement)
    config.write_durability(staging, durable)
    chown_tree(staging.base_dir)
    postmaster.start(staging)
    rds.make_rds_like(staging, pgstattuple_schema)
    postmaster.stop(staging)
    _move_into_place(cluster, staging)


def _move_into_place(cluster: ClusterSpec, staging: ClusterSpec) -> None:
    """A finished cluster built in ``staging``: tls/ first, data/ last (its presence is what says "a
    cluster is here"), then start it here."""
    shutil.rmtree(cluster.base_dir / "tls", ignore_errors=True)
    if cluster.install.tls:
        (staging.base_dir / "tls").rename(cluster.base_dir / "tls")
    cluster.save()
    staging.data_dir.rename(cluster.data_dir)
    shutil.rmtree(staging.base_dir, ignore_errors=True)
    chown_tree(cluster.base_dir)
    postmaster.start(cluster)


def init_standby(cluster: ClusterSpec, primary_conninfo: str, slot: str, settings: Mapping[str, str]) -> None:
    """Make this cluster a hot standby of the primary that primary_conninfo reaches, and start it.

    pg_basebackup (WAL streamed alongside, fast checkpoint, the primary's slot `slot`) into
    base_dir/.init-*, then its own TLS certificate, port and standby settings (standby.signal,
    primary_conninfo, primary_slot_name, then `settings`, e.g. hot_standby_feedback); moved into place
    only when complete, as init() does. primary_conninfo names a passfile, never a password."""
    _refuse_existing(cluster)
    staging = _staging(cluster)
    chown_tree(staging.base_dir)
    result = postmaster.run(
        staging,
        [
            cluster.binary("pg_basebackup"),  # this cluster's own install, as initdb in init()
            "--dbname",
            primary_conninfo,
            "--pgdata",
            str(staging.data_dir),
            "--wal-method=stream",
            "--checkpoint=fast",
            f"--slot={slot}",
            "--no-password",
        ],
        timeout=600,
    )
    if result.returncode != 0:
        raise ClusterError(f"pg_basebackup failed into {staging.data_dir}: {result.stdout.strip()}")
    if cluster.install.tls:
        config.make_tls(staging)
    where = (
        # A Unix-socket directory as host (tests: several replicas on one port, 127.0.0.1 only traffic).
        {"listen_addresses": "''", "unix_socket_directories": f"'{cluster.host}'"}
        if cluster.on_socket
        else {"listen_addresses": f"'{cluster.host}'"}
    )
    config.append_settings(
        staging,
        "hot standby of the primary",
        {
            **where,
            "port": str(cluster.port),
            "hot_standby": "on",
            "primary_conninfo": f"'{primary_conninfo}'",
            "primary_slot_name": f"'{slot}'",
            **settings,
        },
    )
    (staging.data_dir / "standby.signal").touch()
    if cluster.on_socket:
        with (staging.data_dir / "pg_hba.conf").open("a") as f:
            f.write("local all all scram-sha-256\n")
    chown_tree(staging.base_dir)
    _move_into_place(cluster, staging)


def discard_unfinished_init(cluster: ClusterSpec) -> bool:
    """Remove what an interrupted init() left in base_dir/.init-*, stopping a server it had started
    there (it listens on this cluster's port). True when there was something to remove."""
    leftovers = sorted(cluster.base_dir.glob(f"{_STAGING_PREFIX}*")) if cluster.base_dir.is_dir() else []
    for leftover in leftovers:
        partial = dataclasses.replace(cluster, base_dir=leftover)
        if postmaster.is_running(partial):
            postmaster.run(
                partial,
                [partial.binary("pg_ctl"), "stop", "--pgdata", str(partial.data_dir), "--mode", "immediate"],
            )
        shutil.rmtree(leftover, ignore_errors=True)
    return bool(leftovers)
