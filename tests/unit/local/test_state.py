"""state.json: the replica's on/off choice and port, read from stacks made before the replica existed."""

import json
from pathlib import Path

import pytest

from dbctl.local.state import LocalError, Paths, State


def write_state(tmp_path: Path, data: object) -> Paths:
    paths = Paths(tmp_path)
    paths.state_dir.mkdir()
    paths.state_file.write_text(json.dumps(data))
    return paths


def test_a_state_from_before_the_replica_turns_it_on_at_the_next_port(tmp_path: Path) -> None:
    state = State.load(write_state(tmp_path, {"pg_port": 5432, "pgbouncer_port": 6543}))
    assert state == State(5432, 6543, replica=True, replica_port=0)
    assert state.effective_replica_port == 5433


def test_the_choice_and_port_round_trip(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    State(17432, 17543, replica=False, replica_port=17433).save(paths)
    saved = json.loads(paths.state_file.read_text())
    assert saved == {"pg_port": 17432, "pgbouncer_port": 17543, "replica": False, "replica_port": 17433}
    assert State.load(paths) == State(17432, 17543, replica=False, replica_port=17433)


def test_a_replica_flag_that_is_not_a_boolean_is_one_clear_error(tmp_path: Path) -> None:
    paths = write_state(tmp_path, {"pg_port": 5432, "pgbouncer_port": 6543, "replica": "no"})
    with pytest.raises(LocalError, match=r"state.json is unreadable \(replica is 'no', not true or false\)"):
        State.load(paths)
