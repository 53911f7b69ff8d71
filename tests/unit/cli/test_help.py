"""`dbctl --help` and every subcommand's `--help` print what they printed before dbctl was split by domain.

help_before_the_split.json holds that text, taken from the flat package (commit 45a842b) with the checkout's
path replaced by `<repo>`. A change to a command, a flag or its help fails here: if it is meant, regenerate
the file (`python -m tests.unit.cli.test_help > tests/unit/cli/help_before_the_split.json`) and say why.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dbctl.cli.main import cli
from tests.unit.cli import tree

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = Path(__file__).with_name("help_before_the_split.json")


def help_texts() -> dict[str, str]:
    """Command path ("" for the root, "local up", ...) -> its --help output, the repo's path as `<repo>`."""
    texts: dict[str, str] = {}
    for path, _, _ in tree.walk():
        result = CliRunner().invoke(cli, [*path, "--help"], prog_name="dbctl", terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        texts[" ".join(path) or "(root)"] = result.output.replace(str(ROOT), "<repo>")
    return texts


def test_every_commands_help_is_unchanged() -> None:
    before = json.loads(REFERENCE.read_text(encoding="utf-8"))
    now = help_texts()
    assert sorted(now) == sorted(before), "commands added or removed"
    assert len(now) >= 15, "the walk reached every subcommand"
    for path, text in before.items():
        assert now[path] == text, f"`dbctl {path} --help` changed"


if __name__ == "__main__":
    print(json.dumps(help_texts(), indent=1, sort_keys=True))
