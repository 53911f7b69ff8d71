"""Unit-test fixtures shared by every module here.

The Pulumi program packages the restore-validation function from `python -m lambdas.build`'s output, which
needs PyPI; unit tests run offline under mocks, which never read an archive. So the whole session points the
build dir (lambdas.build.BUILD_DIR_ENV) at a temp dir that holds a manifest of the current lock and an
empty deps dir: `code_archive()`'s staleness check runs for real against uv.lock, only the wheels are absent.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdas import build


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
