"""A light concurrent load of the app's own queries during a rehearsal, as the app's role.

Two readers and one writer, each its own connection as the app's login user, loop over the queries Prisma
sends for the app's hottest model (a `User` by id; `updatedAt` touched by id), with a short pause between
queries. Each query's start and end are kept, so the rehearsal can report the longest one that overlapped
each migration: how long the app waited for the migration's lock.
"""

from __future__ import annotations

import random
import threading
import time

import psycopg

READ = 'SELECT "id", "email", "name" FROM "public"."User" WHERE "id" = %s LIMIT 1'
WRITE = 'UPDATE "public"."User" SET "updatedAt" = now() WHERE "id" = %s'
PAUSE = 0.01


class Load:
    def __init__(self, app_conninfo: str, readers: int = 2, writers: int = 1) -> None:
        self.app_conninfo = app_conninfo
        self.kinds = [READ] * readers + [WRITE] * writers
        self.timings: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.timings)

    def start(self) -> None:
        with psycopg.connect(self.app_conninfo, autocommit=True) as conn:
            self.ids = [str(r[0]) for r in conn.execute('SELECT "id" FROM "public"."User" LIMIT 1000')]
        if not self.ids:
            self.errors.append('no "User" rows in the copy: the load has nothing to read or write')
            return
        for query in self.kinds:
            thread = threading.Thread(target=self._run, args=(query,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, query: str) -> None:
        with psycopg.connect(
            self.app_conninfo, autocommit=True, application_name="dbctl rehearse load"
        ) as conn:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    conn.execute(query, (random.choice(self.ids),))  # noqa: S311 (not security)
                except psycopg.Error as exc:
                    with self._lock:
                        self.errors.append(str(exc).splitlines()[0])
                    if conn.broken:
                        return
                ended = time.monotonic()
                with self._lock:
                    self.timings.append((started, ended))
                self._stop.wait(PAUSE)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def longest_between(self, start: float, end: float) -> float:
        """The longest app query that overlapped [start, end] (seconds)."""
        with self._lock:
            overlapping = [b - a for a, b in self.timings if a <= end and b >= start]
        return max(overlapping, default=0.0)
