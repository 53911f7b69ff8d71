"""Unit-test fixtures shared by every module here.

The Pulumi program packages the restore-validation function from `python -m lambdas.build`'s output, which
needs PyPI; unit tests run offline under mocks, which never read an archive. So the whole session points the
build dir (lambdas.build.BUILD_DIR_ENV) at a temp dir that holds a manifest of the current lock and an
empty deps dir: the program's staleness check (`build.current_build()`) runs for real against uv.lock, only
the wheels are absent.

PgBouncer's pinned source (components/pgbouncer_source.py) is real: `./dev test` fetches it into
`.tools/pgbouncer-src/` first. Only a program that asks for a release the repository does not pin (two
replicas need pgbouncer.version 1.25) uses `pinned_pgbouncer_1_25`, a stand-in release pinned for one test.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import pgbouncer_source
from lambdas import build

_DEFAULT_GC_THRESHOLD = gc.get_threshold()


def pytest_configure(config: pytest.Config) -> None:
    """A young generation of 10,000 objects instead of 700, from collection on: a Pulumi program run
    allocates hundreds of thousands of short-lived objects, and with the default the collector made over
    7,000 young and about 100 full passes in the suite (harness.py freezes what lives on after each run)."""
    gc.set_threshold(10_000, 10, 10)


def pytest_unconfigure(config: pytest.Config) -> None:
    gc.set_threshold(*_DEFAULT_GC_THRESHOLD)


@pytest.fixture(scope="session", autouse=True)
def lambda_build_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lambda-build-") as tmp:
        out = Path(tmp)
        (out / "deps").mkdir()
        digest = build.requirements_digest(build.export_requirements())
        (out / "manifest.json").write_text(json.dumps({"requirements_sha256": digest}))
        old = os.environ.get(build.BUILD_DIR_ENV)
        os.environ[build.BUILD_DIR_ENV] = str(out)
        yield out
        if old is None:
            os.environ.pop(build.BUILD_DIR_ENV, None)
        else:
            os.environ[build.BUILD_DIR_ENV] = old


@pytest.fixture
def pinned_pgbouncer_1_25(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pgbouncer_source.LocalSource:
    """A stand-in PgBouncer 1.25.2 source, pinned by its sha256, for a program with pgbouncer.version 1.25.

    The repository pins 1.24.1 only (docs/pgbouncer.md says why), so such a stack cannot be deployed as it
    is; the tests that run one check what it declares, which does not depend on the tarballs' content.
    """
    files = {
        "pgbouncer_1.25.2.orig.tar.gz": b"stand-in for the 1.25.2 release tarball\n",
        "pgbouncer_1.25.2-1.debian.tar.xz": b"stand-in for its Debian packaging\n",
    }
    source_dir = tmp_path / "pgbouncer-src"
    source_dir.mkdir()
    for name, data in files.items():
        (source_dir / name).write_bytes(data)
    pins = tmp_path / pgbouncer_source.PINS_FILE.name
    pins.write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    monkeypatch.setattr(pgbouncer_source, "PINS_FILE", pins)
    monkeypatch.setenv(pgbouncer_source.SOURCE_DIR_ENV, str(source_dir))
    return pgbouncer_source.verified_source("1.25")
