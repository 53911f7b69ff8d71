"""Finding the pgbouncer binary and reading its version, without starting it."""

import signal
from pathlib import Path

import pytest

from dbctl.pgbouncer import process as pgbouncer_server
from dbctl.pgbouncer.process import (
    PgBouncerNotFoundError,
    PgBouncerServerError,
    detect_version,
    find_pgbouncer,
    immediate_shutdown_signal,
)


def fake_binary(directory: Path, output: str, code: int = 0) -> Path:
    path = directory / "pgbouncer"
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    path.chmod(0o755)
    return path


def test_missing_binary_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgbouncer_server, "TOOLS_DIR", tmp_path / "no-tools")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgbouncer_server, "_SEARCH_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(PgBouncerNotFoundError, match="apt-get install -y pgbouncer"):
        find_pgbouncer()


def test_binary_is_found_outside_path_in_sbin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    binary = fake_binary(sbin, "PgBouncer 1.18.0")
    monkeypatch.setattr(pgbouncer_server, "TOOLS_DIR", tmp_path / "no-tools")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(pgbouncer_server, "_SEARCH_DIRS", (str(sbin),))
    assert find_pgbouncer() == binary


def test_dev_s_build_comes_first_and_the_highest_version_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "path"
    on_path.mkdir()
    fake_binary(on_path, "PgBouncer 1.18.0")
    builds = {}
    for version in ("1.9.0", "1.24.1", "1.23.0"):
        bindir = tmp_path / "tools" / f"pgbouncer-{version}" / "bin"
        bindir.mkdir(parents=True)
        builds[version] = fake_binary(bindir, f"PgBouncer {version}")
    (tmp_path / "tools" / ".pgbouncer-1.25.0.tmp123").mkdir()  # an interrupted build is never used
    monkeypatch.setattr(pgbouncer_server, "TOOLS_DIR", tmp_path / "tools")
    monkeypatch.setenv("PATH", str(on_path))
    assert find_pgbouncer() == builds["1.24.1"]
    monkeypatch.setattr(pgbouncer_server, "TOOLS_DIR", tmp_path / "no-tools")
    assert find_pgbouncer() == on_path / "pgbouncer"


@pytest.mark.parametrize(
    ("output", "version"),
    [("PgBouncer 1.18.0", (1, 18)), ("PgBouncer 1.24.1", (1, 24))],
)
def test_version_comes_from_pgbouncer_version(tmp_path: Path, output: str, version: tuple[int, int]) -> None:
    assert detect_version(fake_binary(tmp_path, output)) == version


def test_a_binary_that_reports_no_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PgBouncerServerError, match="did not report a PgBouncer version"):
        detect_version(fake_binary(tmp_path, "something else", code=1))


def test_the_immediate_shutdown_is_sigquit_from_1_23() -> None:
    """1.23 made SIGTERM wait for every client to leave (a connected app kept `down` waiting 10 s, then
    SIGKILL); SIGQUIT is the immediate shutdown there. Before 1.23 SIGTERM is (SIGQUIT is not documented)."""
    assert immediate_shutdown_signal((1, 18)) == immediate_shutdown_signal((1, 22)) == signal.SIGTERM
    assert immediate_shutdown_signal((1, 23)) == immediate_shutdown_signal((1, 24)) == signal.SIGQUIT
