"""find_binary: a missing PostgreSQL binary names the Debian package to install."""

import pathlib
from pathlib import Path

import pytest

from dbctl import cluster


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pathlib.Path, "glob", lambda self, pattern: iter(()))
    with pytest.raises(cluster.BinaryNotFoundError, match=r"apt-get install -y postgresql-client"):
        cluster.find_binary("psql")
    with pytest.raises(cluster.BinaryNotFoundError, match=r"apt-get install -y postgresql$"):
        cluster.find_binary("initdb")


def test_free_port_is_free() -> None:
    assert cluster.port_is_free(cluster.free_port())


def test_found_binary_is_executable() -> None:
    try:
        path = cluster.find_binary("initdb")
    except cluster.BinaryNotFoundError:
        pytest.fail("initdb is not installed; ./dev installs postgresql")
    assert isinstance(path, Path) and path.name == "initdb"
