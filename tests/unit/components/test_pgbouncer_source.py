"""PgBouncer's pinned source (components/pgbouncer_source.py): the pins file, the checks, one version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components import pgbouncer_source as src

ROOT = Path(__file__).resolve().parents[3]
ORIG, DEBIAN = src.PINS_FILE.read_text().splitlines()  # the real pins, as inputs to alter


def test_the_pins_name_one_debian_release_and_the_local_build_is_the_same_release() -> None:
    pins = src.pinned()
    assert pins.debian_version.startswith(pins.version + "-")
    assert pins.sha256sum_lines() == src.PINS_FILE.read_text()  # sha256sum -c reads the file as is
    # ./dev builds the local stack's PgBouncer from the same Debian release (its own constant).
    dev = re.search(r"^PGBOUNCER_VERSION=(\S+)$", (ROOT / "dev").read_text(), re.M)
    assert dev and dev.group(1) == pins.version


def test_the_pinned_files_on_this_machine_match() -> None:
    local = src.verified_source("1.24")  # ./dev test fetched them
    assert local.directory == src.source_dir()
    for f in local.pinned.files:
        assert src.sha256_of(local.path(f)) == f.sha256


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{ORIG}\n", "pins 1 files, not 2"),
        (f"{ORIG}\n{DEBIAN}\n{DEBIAN}\n", "pins 3 files, not 2"),
        (f"# a comment\n{ORIG}\n{DEBIAN}\n", "line 1 is not '<sha256>  <file>'"),
        (f"{ORIG} \n{DEBIAN}\n", "line 1 is not"),
        (f"{DEBIAN}\n{ORIG}\n", "must pin pgbouncer_<v>.orig.tar.gz then"),
        (f"{ORIG}\n{DEBIAN.replace('1.24.1-1', '1.25.2-1')}\n", "of the same release"),
    ],
)
def test_a_malformed_pins_file_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(src.SourceError, match=re.escape(message)):
        src.parse_pins(text)


@pytest.mark.parametrize(
    ("version", "configured", "expected"),
    [
        ("1.24.1", "1.24", True),
        ("1.24.1", "1.24.1", True),
        ("1.24.1", "1.2", False),
        ("1.24.1", "1.25", False),
    ],
)
def test_a_release_is_of_its_minor_and_of_itself_only(version: str, configured: str, expected: bool) -> None:
    assert src.is_release_of(version, configured) is expected
