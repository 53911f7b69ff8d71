"""dbctl.local.status without servers: a failed reading becomes one line, `healthy` says what exit 0 means,
and `lines` is `dbctl local status`'s output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
import pytest

from dbctl.core.errors import DbctlError
from dbctl.local.lifecycle import UNSAFE_NOTE
from dbctl.local.state import LocalError
from dbctl.local.status import Check, Replica, Server, Status, Unknown, attempt, lines

POOLS: list[tuple[str, ...]] = [
    ("database", "user", "cl_active", "sv_idle"),
    ("spike_land", "spike_app_a", "3", "1"),
    ("spike_land_read", "spike_readonly_a", "0", "10"),
]
HEALTHY_REPLICATION = Check(True, "in recovery: True; streaming, replay lag 0 bytes (caught up)")


def healthy_status() -> Status:
    return Status(
        postgres=Server(
            True, 5432, Path("/s/postgres"), "PostgreSQL 15 (system) (/usr/lib/postgresql/15/bin)"
        ),
        pgbouncer=Server(True, 6543, Path("/s/pgbouncer"), "PgBouncer 1.24.1 (/tools/pgbouncer)"),
        replica=Replica(
            made=True,
            running=True,
            port=5433,
            directory=Path("/s/replica"),
            replication=HEALTHY_REPLICATION,
        ),
        no_tls_reason=None,
        postgres_major=15,
        ca_file=Path("/r/.local/tls/ca.crt"),
        durable=True,
        migrations=Check(True, "up to date; 9 applied, roles: no drift"),
        pools=POOLS,
    )


def with_replica(
    *, made: bool = True, running: bool = True, replication: Check | Unknown | None = HEALTHY_REPLICATION
) -> Status:
    status = healthy_status()
    assert status.replica is not None
    replica = dataclasses.replace(status.replica, made=made, running=running, replication=replication)
    return dataclasses.replace(status, replica=replica)


# ---------------------------------------------------------------- attempt


def test_attempt_returns_what_the_reading_returns() -> None:
    assert attempt(lambda: 42) == 42


@pytest.mark.parametrize(
    "error",
    [
        LocalError("PgBouncer is not running;\n  start it"),
        DbctlError("PgBouncer is not running;\n  start it"),
        psycopg.OperationalError("PgBouncer is not running;\n  start it"),
    ],
)
def test_a_failed_reading_is_unknown_with_its_cause_on_one_line(error: Exception) -> None:
    def read() -> int:
        raise error

    unknown = attempt(read)
    assert unknown == Unknown("PgBouncer is not running; start it")
    assert str(unknown) == "unknown: PgBouncer is not running; start it"


def test_a_bug_in_a_reading_is_not_hidden_as_unknown() -> None:
    def read() -> int:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        attempt(read)


# ---------------------------------------------------------------- healthy


def test_all_up_and_up_to_date_is_healthy() -> None:
    assert healthy_status().healthy


@pytest.mark.parametrize(
    "status",
    [
        dataclasses.replace(healthy_status(), durable=False),  # unsafe, but up
        dataclasses.replace(healthy_status(), replica=None),  # --no-replica
        dataclasses.replace(
            healthy_status(), pgbouncer=dataclasses.replace(healthy_status().pgbouncer, binary=Unknown("x"))
        ),
    ],
    ids=["unsafe-fast", "no-replica", "pgbouncer-binary-unknown"],
)
def test_what_does_not_make_the_stack_unhealthy(status: Status) -> None:
    assert status.healthy


@pytest.mark.parametrize(
    "status",
    [
        dataclasses.replace(
            healthy_status(), postgres=dataclasses.replace(healthy_status().postgres, running=False)
        ),
        dataclasses.replace(
            healthy_status(),
            pgbouncer=dataclasses.replace(healthy_status().pgbouncer, running=False),
            pools=None,
        ),
        with_replica(running=False, replication=None),
        with_replica(made=False, running=False, replication=None),
        with_replica(replication=Check(False, "in recovery: True; NOT streaming")),
        with_replica(replication=Unknown("password authentication failed")),
        dataclasses.replace(healthy_status(), migrations=Check(False, "NOT up to date")),
        dataclasses.replace(healthy_status(), migrations=Unknown("password authentication failed")),
        dataclasses.replace(healthy_status(), pools=Unknown("password authentication failed")),
    ],
    ids=[
        "postgres-stopped",
        "pgbouncer-stopped",
        "replica-stopped",
        "replica-not-made",
        "not-streaming",
        "replication-unknown",
        "migrations-pending",
        "migrations-unknown",
        "pools-unknown",
    ],
)
def test_what_makes_the_stack_unhealthy(status: Status) -> None:
    assert not status.healthy


# ---------------------------------------------------------------- lines


def test_the_lines_of_a_healthy_stack() -> None:
    assert lines(healthy_status()) == [
        "PostgreSQL  running on 127.0.0.1:5432  [/s/postgres]",
        "            PostgreSQL 15 (system) (/usr/lib/postgresql/15/bin)",
        "PgBouncer   running on 127.0.0.1:6543  [/s/pgbouncer]",
        "            PgBouncer 1.24.1 (/tools/pgbouncer)",
        "Replica     running on 127.0.0.1:5433  [/s/replica]",
        "replication in recovery: True; streaming, replay lag 0 bytes (caught up)",
        "TLS         CA /r/.local/tls/ca.crt (every URL's sslrootcert)",
        "durability  fsync, synchronous_commit, full_page_writes on",
        "migrations  up to date; 9 applied, roles: no drift",
        "pools (SHOW POOLS):",
        "  database         user              cl_active  sv_idle",
        "  spike_land       spike_app_a       3          1",
        "  spike_land_read  spike_readonly_a  0          10",
    ]


def test_each_unreadable_part_is_one_unknown_line_and_the_rest_still_report() -> None:
    status = dataclasses.replace(
        with_replica(replication=Unknown("auth failed (replica)")),
        pgbouncer=dataclasses.replace(healthy_status().pgbouncer, binary=Unknown("no pgbouncer")),
        durable=False,
        migrations=Unknown("auth failed (admin)"),
        pools=Unknown("auth failed (monitor)"),
    )
    shown = lines(status)
    assert shown[3] == "            PgBouncer unknown: no pgbouncer"
    assert shown[5:] == [
        "replication unknown: auth failed (replica)",
        "TLS         CA /r/.local/tls/ca.crt (every URL's sslrootcert)",
        f"durability  {UNSAFE_NOTE}",
        "migrations  unknown: auth failed (admin)",
        "pools       unknown: auth failed (monitor)",
    ]


def test_a_stopped_stack_shows_no_readings_that_need_its_servers() -> None:
    status = dataclasses.replace(
        with_replica(running=False, replication=None),
        postgres=dataclasses.replace(healthy_status().postgres, running=False),
        pgbouncer=dataclasses.replace(healthy_status().pgbouncer, running=False),
        durable=None,
        migrations=None,
        pools=None,
    )
    assert lines(status) == [
        "PostgreSQL  stopped (port 5432)  [/s/postgres]",
        "            PostgreSQL 15 (system) (/usr/lib/postgresql/15/bin)",
        "PgBouncer   stopped (port 6543)  [/s/pgbouncer]",
        "            PgBouncer 1.24.1 (/tools/pgbouncer)",
        "Replica     stopped (port 5433)  [/s/replica]",
        "TLS         CA /r/.local/tls/ca.crt (every URL's sslrootcert)",
    ]


def test_a_replica_not_made_yet_says_up_makes_it() -> None:
    shown = lines(with_replica(made=False, running=False, replication=None))
    assert shown[4] == (
        "Replica     not made yet (a stack from before the replica): `dbctl local up` makes it  [/s/replica]"
    )
    assert not any(line.startswith("replication") for line in shown)


def test_no_replica_says_why_and_the_tls_line_follows_postgresql() -> None:
    no_replica = lines(dataclasses.replace(healthy_status(), replica=None))
    assert no_replica[4:6] == [
        "Replica     none (--no-replica): the read pool uses the primary",
        "TLS         CA /r/.local/tls/ca.crt (every URL's sslrootcert)",
    ]
    no_tls = lines(
        dataclasses.replace(
            healthy_status(),
            replica=None,
            no_tls_reason="PostgreSQL 18 (wheel) has no TLS",
            postgres_major=18,
        )
    )
    assert no_tls[4:6] == [
        "Replica     none: PostgreSQL 18 (wheel) has no TLS; the read pool uses the primary",
        "TLS         CA /r/.local/tls/ca.crt (the pooled URLs' sslrootcert; the direct URLs say "
        "sslmode=disable: this PostgreSQL 18 has no TLS)",
    ]


def test_replay_lag_shows_bytes_first_and_the_time_since_the_last_replay_only_when_wal_waits() -> None:
    """Issue 25, item 7: a stopped replica read "2.0 ms" while 554 KB of WAL waited."""
    from dbctl.local.replica import replay_line

    assert replay_line(0, 0.002) == "replay lag 0 bytes (caught up)"
    assert replay_line(567_296, 42.25) == (
        "replay lag 567296 bytes of WAL not yet replayed; last replayed commit 42.2 s ago"
    )
    assert replay_line(10, None).endswith("; no commit replayed yet")
