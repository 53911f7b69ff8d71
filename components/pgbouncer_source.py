"""PgBouncer's pinned source for the AWS hosts: Debian's source package of the release, by sha256.

The hosts build PgBouncer themselves (components/pgbouncer_userdata.py) from two files of Debian's source
package, the same package `./dev` builds locally into `.tools/`:

- `pgbouncer_<version>.orig.tar.gz`: the upstream release tarball;
- `pgbouncer_<debian version>.debian.tar.xz`: Debian's packaging, whose `debian/patches/series` the host
  applies (for 1.24.1-1+deb13u2: the backported fixes for CVE-2025-12819 and CVE-2026-6664 ... 6667).

`pgbouncer-source.sha256` beside this module is the one place that names the version: two lines in
`sha256sum -c` format (so `./dev fetch-pgbouncer` and the host check them with the same tool), taken from
the Debian source package's .dsc (`Checksums-Sha256`), which apt checked against Debian's signed index.
Moving to another release is editing those two lines (docs/deploying.md).

`./dev fetch-pgbouncer` downloads both files into `.tools/pgbouncer-src/` (git-ignored). The Pulumi program
calls `verified_source(pgbouncer.version)` before it declares any resource: a missing file, a checksum that
differs from the pin, or a `pgbouncer.version` that the pinned release is not, is one `SourceError` line
saying what to do. `SOURCE_DIR_ENV` moves the directory (tests use a temp dir). Pure: no Pulumi, no AWS.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
PINS_FILE: Final = Path(__file__).with_name("pgbouncer-source.sha256")
SOURCE_DIR_ENV: Final = "SPIKE_LAND_DB_PGBOUNCER_SOURCE_DIR"
FETCH_COMMAND: Final = "./dev fetch-pgbouncer"
# Where the files go in the stack's private bucket (beside the RDS CA bundle).
S3_PREFIX: Final = "pgbouncer-src/"

_ORIG = re.compile(r"pgbouncer_(\d+\.\d+\.\d+)\.orig\.tar\.gz")
_DEBIAN = re.compile(r"pgbouncer_((\d+\.\d+\.\d+)-[0-9A-Za-z.+~]+)\.debian\.tar\.xz")
_LINE = re.compile(r"([0-9a-f]{64})  (\S+)")


class SourceError(ValueError):
    """The pinned source is missing, altered or not the configured version; the message says what to do."""


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class PinnedSource:
    version: str  # upstream release, e.g. 1.24.1
    debian_version: str  # Debian's source package version, e.g. 1.24.1-1+deb13u2
    orig: SourceFile
    debian: SourceFile

    @property
    def files(self) -> tuple[SourceFile, SourceFile]:
        return (self.orig, self.debian)

    def sha256sum_lines(self) -> str:
        """The files in `sha256sum -c` format (what the host checks)."""
        return "".join(f"{f.sha256}  {f.name}\n" for f in self.files)


def parse_pins(text: str) -> PinnedSource:
    """The pins file: exactly an orig tarball and a Debian tarball of the same release."""
    files = []
    for number, line in enumerate(text.splitlines(), 1):
        m = _LINE.fullmatch(line)
        if m is None:
            raise SourceError(f"{PINS_FILE.name} line {number} is not '<sha256>  <file>': {line!r}")
        files.append(SourceFile(name=m.group(2), sha256=m.group(1)))
    if len(files) != 2:
        raise SourceError(f"{PINS_FILE.name} pins {len(files)} files, not 2 (the orig and debian tarballs)")
    orig = _ORIG.fullmatch(files[0].name)
    debian = _DEBIAN.fullmatch(files[1].name)
    if orig is None or debian is None or orig.group(1) != debian.group(2):
        raise SourceError(
            f"{PINS_FILE.name} must pin pgbouncer_<v>.orig.tar.gz then pgbouncer_<v>-<rev>.debian.tar.xz "
            f"of the same release, not {files[0].name} and {files[1].name}"
        )
    return PinnedSource(version=orig.group(1), debian_version=debian.group(1), orig=files[0], debian=files[1])


def pinned() -> PinnedSource:
    return parse_pins(PINS_FILE.read_text(encoding="utf-8"))


def source_dir() -> Path:
    return Path(os.environ.get(SOURCE_DIR_ENV) or REPO_ROOT / ".tools" / "pgbouncer-src")


def is_release_of(version: str, configured: str) -> bool:
    """Whether release `version` (1.24.1) is the configured `pgbouncer.version` (1.24 or 1.24.1)."""
    return version == configured or version.startswith(configured + ".")


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class LocalSource:
    """The pinned source's files on this machine, checked against their pins."""

    pinned: PinnedSource
    directory: Path

    def path(self, f: SourceFile) -> Path:
        return self.directory / f.name

    def asset_path(self, f: SourceFile) -> str:
        """The file for a Pulumi FileAsset: relative to the project when inside it, so the state holds the
        same path on every machine (an absolute one differs from CI runner to laptop: pulumi/pulumi#5066).
        """
        path = self.path(f).resolve()
        return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def verified_source(configured_version: str, directory: Path | None = None) -> LocalSource:
    """The pinned source on this machine, once both files match their pins; SourceError if not."""
    source = pinned()
    if not is_release_of(source.version, configured_version):
        raise SourceError(
            f"pgbouncer.version is {configured_version}, but the hosts build the pinned PgBouncer "
            f"{source.version} (components/{PINS_FILE.name}): set pgbouncer.version to "
            f"{source.version.rsplit('.', 1)[0]}, or pin a {configured_version} source (docs/deploying.md)"
        )
    where = directory or source_dir()
    for f in source.files:
        path = where / f.name
        if not path.is_file():
            raise SourceError(f"the PgBouncer source {path} is missing: run `{FETCH_COMMAND}`")
        actual = sha256_of(path)
        if actual != f.sha256:
            raise SourceError(
                f"the PgBouncer source {path} has sha256 {actual}, not the pinned {f.sha256}: "
                f"delete it and run `{FETCH_COMMAND}`"
            )
    return LocalSource(pinned=source, directory=where)
