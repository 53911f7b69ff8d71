"""Build the Lambdas' dependencies from locked versions: `python -m lambdas.build`.

One build serves both functions (components/restore_validation.py and components/rotation.py package it
beside their handler): psycopg (binary) and, for the rotation function's verifiers (dbctl/core/scram.py),
scramp, the `restore-validation` dependency group in pyproject.toml. Its exact versions and hashes come from
uv.lock:

    uv export --frozen --only-group restore-validation --no-emit-project      (pins + sha256 hashes)
    uv pip install --target <deps> --python-platform aarch64-manylinux_2_28 --python-version 3.13
                   --only-binary :all: --require-hashes --no-deps -r <that file>

so the wheels are the arm64 (Graviton) manylinux wheels for the Lambda runtime's Python, each checked
against the lock's hash. psycopg-binary ships manylinux_2_28 aarch64 wheels; the python3.13 runtime runs
Amazon Linux 2023 (glibc 2.34), which they need at most.

The result is `<build dir>/deps/` plus `manifest.json` (the sha256 of the exported requirements). The Pulumi
program (`__main__.py`) calls `current_build()` once, before any resource, which refuses a missing or stale
build with one line saying to run this module; it never downloads anything itself. `BUILD_DIR_ENV` moves
the build dir (tests use a temp dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
HANDLER: Final = Path(__file__).resolve().parent / "restore_validation" / "handler.py"
GROUP: Final = "restore-validation"
RUNTIME: Final = "python3.13"
PYTHON_VERSION: Final = "3.13"
PLATFORM: Final = "aarch64-manylinux_2_28"
BUILD_DIR_ENV: Final = "SPIKE_LAND_DB_LAMBDA_BUILD_DIR"
BUILD_HINT: Final = "run `.venv/bin/python -m lambdas.build` (needs uv and PyPI) before `pulumi preview`/`up`"


class BuildError(RuntimeError):
    """The package is missing, stale or could not be built; the message says what to run."""


def build_dir() -> Path:
    return Path(os.environ.get(BUILD_DIR_ENV) or REPO_ROOT / ".build" / "restore-validation")


def uv() -> str:
    found = shutil.which("uv") or str(REPO_ROOT / ".tools" / "bin" / "uv")
    if not Path(found).is_file():
        raise BuildError(
            f"uv not found on PATH or in .tools/bin; run ./dev once to install it, then {BUILD_HINT}"
        )
    return found


def export_requirements() -> str:
    """The group's pins with hashes, from uv.lock only (--frozen: never re-resolves)."""
    result = subprocess.run(
        [uv(), "export", "--frozen", "--only-group", GROUP, "--no-emit-project", "--no-header"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"uv export failed: {' '.join(result.stderr.split())}")
    return result.stdout


def requirements_digest(requirements: str) -> str:
    return hashlib.sha256(requirements.encode()).hexdigest()


def install_command(requirements_file: Path, target: Path) -> list[str]:
    return [
        uv(),
        "pip",
        "install",
        "--target",
        str(target),
        "--python-platform",
        PLATFORM,
        "--python-version",
        PYTHON_VERSION,
        "--only-binary",
        ":all:",
        "--require-hashes",
        "--no-deps",
        "--no-cache",
        "-r",
        str(requirements_file),
    ]


def build() -> Path:
    """(Re)build the dependencies into build_dir()/deps; returns the build dir."""
    requirements = export_requirements()
    out = build_dir()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    req_file = out / "requirements.txt"
    req_file.write_text(requirements)
    result = subprocess.run(
        install_command(req_file, out / "deps"), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"uv pip install failed: {' '.join(result.stderr.split())[-500:]}")
    (out / "manifest.json").write_text(json.dumps({"requirements_sha256": requirements_digest(requirements)}))
    return out


def current_build(requirements: str | None = None) -> Path:
    """The build dir when it holds a build of the current lock; BuildError otherwise."""
    out = build_dir()
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        raise BuildError(f"the restore-validation package is not built ({out}); {BUILD_HINT}") from None
    wanted = requirements_digest(requirements if requirements is not None else export_requirements())
    if manifest.get("requirements_sha256") != wanted or not (out / "deps").is_dir():
        raise BuildError(f"the restore-validation package in {out} is stale (uv.lock changed); {BUILD_HINT}")
    return out


def main() -> None:
    try:
        out = build()
    except BuildError as e:
        sys.exit(f"error: {e}")
    packages = sorted(p.name for p in (out / "deps").iterdir() if p.name.endswith(".dist-info"))
    print(f"built {out}/deps for {RUNTIME} arm64: {', '.join(packages)}")


if __name__ == "__main__":
    main()
