"""Apply the pending migrations to a copy and watch their locks (`dbctl migrate rehearse`).

``rehearse(copy_conninfo, applier_conninfo, migrations, load=None)``: reads the copy's plan, then applies each
pending migration with the runner itself (dbctl.schema.migrate.apply_one, so as spike_owner with the same
lock_timeout) on the applier's connection. Meanwhile a second connection samples ``pg_locks`` for that
session every few milliseconds; a transactional migration also lists its locks just before it commits
(they are all still held then), so a lock too short for the sampler is still seen. Per migration: duration,
the strongest lock on a table or index of the schema, on which relation, for how long, whether it waited,
and what ``lock_timeout`` means for it (measured under ``load``, else inferred from the lock's mode).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg

from dbctl.core.errors import DbctlError
from dbctl.rehearsal.load import Load
from dbctl.schema import migrate

Conn = psycopg.Connection[tuple[object, ...]]
Say = Callable[[str], None]

# PostgreSQL's table lock modes, weakest first (docs: "Explicit Locking", table 13.2).
MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
# What the app's queries take: reads ACCESS SHARE, writes ROW EXCLUSIVE; the modes that conflict with them.
BLOCKS_WRITES = frozenset(MODES[4:])
BLOCKS_READS = frozenset(MODES[7:])
SAMPLE_EVERY = 0.005
# Locks on tables (not their indexes, nor relations the migration itself creates, which nobody else sees yet).
_TABLES = "SELECT c.oid FROM pg_class c WHERE c.relkind IN ('r', 'p', 'm')"
_LOCKS = (
    "SELECT n.nspname || '.' || c.relname, l.mode, l.granted, c.oid FROM pg_locks l"
    " JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE l.locktype = 'relation' AND l.pid = %s AND c.relkind IN ('r', 'p', 'm')"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
    " AND c.relname <> '_prisma_migrations' AND c.relname NOT LIKE '_prisma_migrations%%'"
)


@dataclass
class MigrationRehearsal:
    name: str
    seconds: float = 0.0
    ok: bool = True
    error: str = ""
    strongest_lock: str = ""
    relation: str = ""
    held_seconds: float = 0.0
    waited_seconds: float = 0.0
    blocks: str = "nothing the app does"
    lock_timeout: str = ""
    longest_app_wait_seconds: float | None = None

    def line(self) -> str:
        if not self.ok:
            return f"{self.name}: FAILED after {self.seconds:.2f} s: {self.error}"
        lock = (
            f"{self.strongest_lock} on {self.relation} for {self.held_seconds:.3f} s (blocks {self.blocks})"
            if self.strongest_lock
            else "no lock on a table of the schema seen"
        )
        load = (
            f"; longest app query under load {self.longest_app_wait_seconds:.3f} s"
            if self.longest_app_wait_seconds is not None
            else ""
        )
        return f"{self.name}: {self.seconds:.3f} s; {lock}; lock_timeout: {self.lock_timeout}{load}"


@dataclass
class Rehearsal:
    where: str
    copy: str
    migrations: list[MigrationRehearsal] = field(default_factory=list)
    load: bool = False
    app_queries: int = 0
    app_errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Sampler:
    """pg_locks of one backend, from another connection, until stopped: (relation, mode) -> first and last
    time seen, and the time spent waiting for a lock not granted."""

    def __init__(self, conninfo: str, pid: int) -> None:
        self.conn: Conn = psycopg.connect(conninfo, autocommit=True, application_name="dbctl rehearse locks")
        self.pid = pid
        self.tables = {row[0] for row in self.conn.execute(_TABLES)}
        self.seen: dict[tuple[str, str], list[float]] = {}
        self.waited = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            rows = self.conn.execute(_LOCKS, (self.pid,)).fetchall()
            for relation, mode, granted, oid in rows:
                if oid not in self.tables:
                    continue
                if not granted:
                    self.waited += now - last
                    continue
                span = self.seen.setdefault((str(relation), str(mode)), [now, now])
                span[1] = now
            last = now
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def _verdict(result: MigrationRehearsal, lock_timeout: str, load: bool) -> None:
    mode = result.strongest_lock
    if mode in BLOCKS_READS:
        result.blocks = "reads and writes"
    elif mode in BLOCKS_WRITES:
        result.blocks = "writes"
    if not result.ok and "SQLSTATE 55P03" in result.error:
        result.lock_timeout = f"FIRED: it waited {lock_timeout} for its lock"
    elif mode not in BLOCKS_WRITES:
        result.lock_timeout = "cannot fire against the app's queries (its locks do not conflict with theirs)"
    elif load:
        result.lock_timeout = (
            f"did not fire under this load (waited {result.waited_seconds:.3f} s of {lock_timeout}); "
            f"it fires when an app transaction holds {result.relation} longer than {lock_timeout}"
        )
    else:
        result.lock_timeout = (
            f"fires when an app transaction holds {result.relation} for more than {lock_timeout} as it "
            f"starts; meanwhile it blocks {result.blocks} for {result.held_seconds:.3f} s (run with --load)"
        )


def rehearse(
    where: str,
    copy_conninfo: str,
    applier_conninfo: str,
    migrations: list[migrate.Migration],
    *,
    load: Load | None = None,
    lock_timeout: str = migrate.DEFAULT_LOCK_TIMEOUT,
    say: Say | None = None,
) -> Rehearsal:
    """Apply the copy's pending migrations, one at a time, and report each. Stops at the first failure."""
    report = Rehearsal(where=where, copy=copy_conninfo.split("password=")[0].strip(), load=load is not None)
    with psycopg.connect(applier_conninfo, autocommit=True, application_name="dbctl rehearse") as conn:
        plan = migrate.plan(conn, migrations)
        if not plan.pending:
            raise DbctlError(f"no pending migration in {where}: nothing to rehearse")
        migrate.ensure_history_table(conn)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        pid = int(str(row[0])) if row else 0
        if load is not None:
            load.start()
        windows: list[tuple[float, float]] = []
        try:
            for migration in plan.pending:
                result, window = _one(conn, pid, copy_conninfo, migration, lock_timeout, load is not None)
                report.migrations.append(result)
                windows.append(window)
                if say and load is None:
                    say(result.line())
                if not result.ok:
                    break
        finally:
            if load is not None:
                load.stop()  # a query the last migration blocked has finished now: measure after the stop
                report.app_queries, report.app_errors = load.count, load.errors[:5]
                for result, (started, ended) in zip(report.migrations, windows, strict=True):
                    result.longest_app_wait_seconds = load.longest_between(started, ended)
                    if say:
                        say(result.line())
    return report


def _one(
    conn: Conn, pid: int, copy_conninfo: str, migration: migrate.Migration, lock_timeout: str, load: bool
) -> tuple[MigrationRehearsal, tuple[float, float]]:
    result = MigrationRehearsal(migration.name)
    at_commit: list[tuple[object, ...]] = []

    def before_commit(inner: Conn) -> None:
        at_commit.extend(inner.execute(_LOCKS, (pid,)).fetchall())

    with _Sampler(copy_conninfo, pid) as sampler:
        started = time.monotonic()
        try:
            migrate.apply_one(conn, migration, lock_timeout, before_commit=before_commit)
        except migrate.MigrationFailed as exc:  # on the copy: fix the file and rehearse again
            result.ok, result.error = False, exc.reason
        except DbctlError as exc:
            result.ok, result.error = False, str(exc)
        ended = time.monotonic()
    result.seconds = ended - started
    result.waited_seconds = sampler.waited
    spans = dict(sampler.seen)
    for relation, mode, granted, oid in at_commit:  # held until the commit just after
        if granted and oid in sampler.tables:
            span = spans.setdefault((str(relation), str(mode)), [started, ended])
            span[1] = ended
    if spans:
        (relation, mode), (first, last) = max(
            spans.items(), key=lambda item: (MODES.index(item[0][1]) if item[0][1] in MODES else -1, item[1])
        )
        result.strongest_lock, result.relation = mode, relation
        result.held_seconds = max(last - first, 0.0)
    _verdict(result, lock_timeout, load)
    return result, (started, ended)
