"""state.json: the replica's on/off choice and port, read from stacks made before the replica existed."""

import json
from pathlib import Path

import pytest

from dbctl.core import names
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


def test_credentials_json_is_fsynced_before_its_rename_and_its_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25, "Also": .local/credentials.json, the only copy of the local passwords, was written without
    fsync: a crash right after could leave it empty or missing."""
    import os

    from dbctl.local.state import new_credential, save_credentials

    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        synced.append(f"rename -> {dst}")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    paths = Paths(tmp_path)
    save_credentials(paths, {role: new_credential(role) for role in names.LOGIN_ROLES})
    [data, rename, directory] = synced
    assert Path(data).parent == paths.state_dir and Path(data).name.startswith(".credentials.json.")
    assert rename == f"rename -> {paths.credentials_file}"
    assert directory == str(paths.state_dir)
    assert json.loads(paths.credentials_file.read_text()).keys() == set(names.LOGIN_ROLES)
