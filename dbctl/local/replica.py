"""The local stack's hot standby: a streaming replica of the local primary, behind PgBouncer's read pool.

`dbctl local up` makes it with pg_basebackup as the replication role `spike_replicator` (LOGIN REPLICATION,
its password in `.local/replication.json`, mode 0600; the replica reads it from a 0600 passfile, so no
password is on a command line or in postgresql.conf), through a physical replication slot (the primary keeps
the WAL the replica has not replayed, across `down`/`up`), over TLS verify-full against the stack's CA. The
replica gets its own certificate from that CA, its own port (PostgreSQL's + 1 unless `--replica-port`), the
primary's durability and the standby settings production's replica parameter group sets
(components.db_parameters.replica_parameters: hot_standby_feedback and the standby delays).

Files: `<server dir>/replica/` is a dbctl.cluster Cluster (data/, postgres.log, tls/) plus `replication/`
(passfile and the CA certificate it verifies the primary with, both the service user's).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from dbctl.local.state import Credential, Paths, load_or_create_replication_credential
from dbctl.postgres.cluster import Cluster
from dbctl.postgres.osproc import service_owner
from dbctl.postgres.rds import hide_secret_statements
from dbctl.postgres.tls import write_file
from dbctl.stackconfig.parameters import primary_parameters, replica_parameters
from dbctl.stackconfig.settings import AlarmSettings

REPLICATION_ROLE = "spike_replicator"
# The replica's physical slot on the primary; also its application_name in pg_stat_replication (what
# `local status` and `dbctl report` look for).
SLOT = "spike_local_replica"

Echo = Callable[[str], None]


def standby_settings(max_connections: int) -> dict[str, str]:
    """Production's replica-only parameters (the replica group minus the primary's), as postgresql.conf
    values: the same function and the same replica-lag threshold the RDS parameter group is built from."""
    delay_ms = int(AlarmSettings().replica_lag_seconds * 1000)
    primary = {p.name for p in primary_parameters(max_connections)}
    return {
        p.name: f"'{p.value}'" for p in replica_parameters(max_connections, delay_ms) if p.name not in primary
    }


def credential(paths: Paths) -> Credential:
    return load_or_create_replication_credential(paths, REPLICATION_ROLE)


def ensure_role_and_slot(primary: Cluster, cred: Credential, slot: str = SLOT) -> bool:
    """The replication role (its password the credential's verifier), the pg_hba line and the slot on the
    primary; True when any was new. As the bootstrap superuser: REPLICATION needs one (RDS's master gets it
    through rds_replication, which this local cluster does not model)."""
    changed = primary.allow_replication(REPLICATION_ROLE)
    role, verifier = sql.Identifier(REPLICATION_ROLE), sql.Literal(cred.scram_verifier)
    with psycopg.connect(primary.superuser_conninfo("postgres"), autocommit=True) as conn:
        hide_secret_statements(conn)
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (REPLICATION_ROLE,)
        ).fetchone()
        if row is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(role, verifier))
            changed = True
        elif row[0] != cred.scram_verifier:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN REPLICATION PASSWORD {}").format(role, verifier))
            changed = True
        if (
            conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
            is None
        ):
            # Reserve WAL now, so nothing the base backup needs can be recycled before the replica connects.
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
            changed = True
    return changed


def drop_slot(primary: Cluster, slot: str = SLOT) -> None:
    with psycopg.connect(primary.superuser_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )


def _replication_dir(replica: Cluster) -> Path:
    return replica.base_dir / "replication"


def primary_conninfo(primary: Cluster, replica: Cluster, cred: Credential, slot: str = SLOT) -> str:
    """How the replica reaches the primary: TLS verify-full, SCRAM, the password in a passfile (0600, the
    service user's), written here."""
    directory = _replication_dir(replica)
    directory.mkdir(parents=True, exist_ok=True)
    owner = service_owner()
    passfile, ca_copy = directory / "pgpass", directory / "ca.crt"
    write_file(
        passfile, f"{primary.host}:{primary.port}:*:{cred.username}:{cred.password}\n".encode(), 0o600, owner
    )
    write_file(ca_copy, primary.ca_file.read_bytes(), 0o644, owner)
    return make_conninfo(
        host=primary.host,
        port=str(primary.port),
        user=cred.username,
        passfile=str(passfile),
        sslmode="verify-full",
        sslrootcert=str(ca_copy),
        application_name=slot,
    )


def create(primary: Cluster, replica: Cluster, paths: Paths, max_connections: int, slot: str = SLOT) -> None:
    """A new hot standby of primary in replica.base_dir, started; `slot` names its slot (one per replica)."""
    cred = credential(paths)
    ensure_role_and_slot(primary, cred, slot)
    conninfo = primary_conninfo(primary, replica, cred, slot)
    replica.init_standby(conninfo, slot, standby_settings(max_connections))


def remove(primary: Cluster, replica: Cluster, slot: str = SLOT) -> bool:
    """Stop the replica, delete it and drop its slot (or the primary would keep WAL for it forever)."""
    existed = replica.base_dir.exists()
    replica.stop()
    shutil.rmtree(replica.base_dir, ignore_errors=True)
    if primary.is_running():
        drop_slot(primary, slot)
    return existed


def status(primary: Cluster, replica: Cluster, slot: str = SLOT) -> tuple[bool, str]:
    """(streaming?, one line): in recovery?, the primary's view (state, WAL not yet replayed), and, only when
    WAL waits, how long ago the replica replayed its last commit (see replay_line)."""
    with psycopg.connect(replica.admin_conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
        ).fetchone()
    in_recovery = bool(row and row[0])
    since_replay = float(str(row[1])) if row and row[1] is not None else None
    with psycopg.connect(primary.admin_conninfo("postgres"), autocommit=True) as conn:
        stat = conn.execute(
            "SELECT state, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint "
            "FROM pg_stat_replication WHERE application_name = %s",
            (slot,),
        ).fetchone()
    if stat is None:
        return False, f"in recovery: {in_recovery}; NOT streaming (no walsender for {slot})"
    state, pending = stat
    ok = in_recovery and state == "streaming"
    return ok, f"in recovery: {in_recovery}; {state}, {replay_line(int(str(pending)), since_replay)}"


def replay_line(pending_bytes: int, since_replay_s: float | None) -> str:
    """The replay lag, bytes first. pg_stat_replication's replay_lag is the delay of the last replayed
    commit, so it stays small while replay is stopped; when WAL waits, the time shown is how long ago the
    replica replayed its last commit (now() - pg_last_xact_replay_timestamp()), which grows while it is
    stuck."""
    if pending_bytes <= 0:
        return "replay lag 0 bytes (caught up)"
    since = (
        "no commit replayed yet"
        if since_replay_s is None
        else f"last replayed commit {since_replay_s:.1f} s ago"
    )
    return f"replay lag {pending_bytes} bytes of WAL not yet replayed; {since}"
