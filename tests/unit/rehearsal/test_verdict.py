"""What a rehearsal says about a migration's strongest lock and lock_timeout (dbctl/rehearsal/engine.py)."""

from __future__ import annotations

import pytest

from dbctl.rehearsal.engine import MODES, MigrationRehearsal, _verdict


@pytest.mark.parametrize(
    ("mode", "blocks", "fires"),
    [
        ("AccessExclusiveLock", "reads and writes", True),
        ("ExclusiveLock", "writes", True),
        ("ShareRowExclusiveLock", "writes", True),
        ("ShareLock", "writes", True),
        ("ShareUpdateExclusiveLock", "nothing the app does", False),
        ("RowExclusiveLock", "nothing the app does", False),
        ("", "nothing the app does", False),
    ],
)
def test_what_each_lock_blocks_and_whether_lock_timeout_can_fire(mode: str, blocks: str, fires: bool) -> None:
    result = MigrationRehearsal("m", strongest_lock=mode, relation="public.User", held_seconds=1.5)
    _verdict(result, "10s", load=False)
    assert result.blocks == blocks
    if fires:
        assert result.lock_timeout == (
            f"fires when an app transaction holds public.User for more than 10s as it starts; meanwhile it "
            f"blocks {blocks} for 1.500 s (run with --load)"
        )
    else:
        assert result.lock_timeout.startswith("cannot fire against the app's queries")


def test_a_lock_timeout_that_fired_is_said_so() -> None:
    result = MigrationRehearsal(
        "m", ok=False, error="canceling statement due to lock timeout\nSQLSTATE 55P03", strongest_lock=""
    )
    _verdict(result, "10s", load=True)
    assert result.lock_timeout == "FIRED: it waited 10s for its lock"
    assert result.line().startswith("m: FAILED after 0.00 s: canceling statement due to lock timeout")


def test_modes_are_postgresqls_eight_from_weakest_to_strongest() -> None:
    assert len(MODES) == len(set(MODES)) == 8
    assert MODES[0] == "AccessShareLock" and MODES[-1] == "AccessExclusiveLock"
