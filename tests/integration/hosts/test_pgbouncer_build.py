"""The AWS hosts' PgBouncer build (user data section 1), run here for real on the pinned source.

`ud.build_steps` is the text the user data runs; here it runs with a stand-in `aws` that copies the files
`./dev fetch-pgbouncer` checked into `.tools/pgbouncer-src/`, into a temp prefix instead of /usr/local.

What this proves: the pinned tarballs pass the host's own `sha256sum -c`, Debian's patch series applies to
the release, `CONFIGURE_FLAGS` configure and build it with systemd, c-ares and OpenSSL, `make install` puts
the binary where the version check looks, and that check accepts the pinned release and refuses another.
What it does not: this is Debian bookworm on x86_64 with Debian's -dev packages, not Amazon Linux 2023 on
arm64 with dnf; the AL2023 package names, its compiler and headers, and an arm64 build are not tried here
(docs/verification.md).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from components import pgbouncer_source
from components import pgbouncer_userdata as ud

pytestmark = pytest.mark.integration

URI = "s3://spike-land-db-test-pgb-x/pgbouncer-src/"


def _preamble(root: Path) -> str:
    """What the user data sets before section 1: the variables build_steps expects, and fail()."""
    return f"""set -euo pipefail
REGION=eu-west-1
PGBOUNCER_SOURCE_URI={URI}
BUILD_LOG={root / "build.log"}
fail() {{ echo "FAILED: $*" >&2; exit 1; }}
"""


def _stand_in_aws(root: Path, source: pgbouncer_source.LocalSource) -> Path:
    """`aws s3 cp ... s3://<bucket>/pgbouncer-src/<file> <dest>`, served from the checked local copy."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text(
        "#!/bin/bash\nset -eu\n"
        f'[ "$1 $2" = "s3 cp" ] && [ "${{6%/*}}/" = {URI!r} ] || {{ echo "aws $*?" >&2; exit 2; }}\n'
        f'cp "{source.directory}/${{6##*/}}" "$7"\n'
    )
    aws.chmod(0o755)
    return bin_dir


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The pinned release built as the host builds it: (install prefix, the patched source tree)."""
    source = pgbouncer_source.verified_source(pgbouncer_source.pinned().version)
    root = tmp_path_factory.mktemp("pgbouncer-build")
    prefix, work = root / "prefix", root / "work"
    work.mkdir()
    bin_dir = _stand_in_aws(root, source)
    script = _preamble(root) + f"build_dir={work}\n" + ud.build_steps(source.pinned, str(prefix))
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(root), "LC_ALL": "C"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    log = (root / "build.log").read_text() if (root / "build.log").exists() else ""
    assert done.returncode == 0, done.stderr + "\n--- build log (tail) ---\n" + log[-3000:]
    print(f"host build of PgBouncer {source.pinned.version}: {time.monotonic() - started:.0f} s here")
    return prefix, work / f"pgbouncer-{source.pinned.version}"


def test_the_build_is_the_pinned_release_with_systemd_c_ares_and_openssl(build: tuple[Path, Path]) -> None:
    prefix, _ = build
    binary = prefix / "bin" / "pgbouncer"
    assert binary.is_file() and str(binary).endswith(ud.PGBOUNCER_BIN.removeprefix(ud.PREFIX))
    lines = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines[0] == f"PgBouncer {pgbouncer_source.pinned().version}"
    assert "systemd: yes" in lines  # --with-systemd: Type=notify works
    assert any(line.startswith("adns: c-ares") for line in lines), lines  # not libevent's resolver
    assert any(line.startswith("tls: OpenSSL") for line in lines), lines


def test_every_debian_patch_is_in_the_built_tree(build: tuple[Path, Path]) -> None:
    _, tree = build
    series = [
        line.split()[0]
        for line in (tree / "debian" / "patches" / "series").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(name.startswith("CVE-") for name in series)  # the backported security fixes
    for name in series:
        # A patch that reverses cleanly was applied (and only once).
        undo = subprocess.run(
            ["patch", "-p1", "--dry-run", "--reverse", "--force", "-i", f"debian/patches/{name}"],
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        assert undo.returncode == 0, f"{name}: {undo.stdout}{undo.stderr}"


@pytest.mark.parametrize(
    ("configured", "accepted"), [("1.24", True), ("1.24.1", True), ("1.25", False), ("1.2", False)]
)
def test_the_version_check_accepts_the_pinned_release_only(
    build: tuple[Path, Path], tmp_path: Path, configured: str, accepted: bool
) -> None:
    prefix, _ = build
    script = (
        _preamble(tmp_path)
        + f"PGBOUNCER_VERSION={configured}\n"
        + ud.version_check(str(prefix / "bin" / "pgbouncer"))
        + 'echo "accepted $built"\n'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    version = pgbouncer_source.pinned().version
    if accepted:
        assert (done.returncode, done.stdout) == (0, f"accepted {version}\n"), done.stderr
    else:
        assert done.returncode == 1 and done.stdout == ""
        assert (
            done.stderr
            == f"FAILED: pgbouncer {version} was built, but pgbouncer.ini was rendered for {configured}\n"
        )
