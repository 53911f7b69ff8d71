"""What exists, read from the code (never from a list kept here), for the docs check (check.py).

- dbctl's commands: its own click tree, walked with `list_commands`/`get_command` from
  `dbctl.cli.main.cli`: every command path with its options' `opts` and `secondary_opts`, hidden ones too;
- `./dev`'s own commands: the labels of its dispatch `case`;
- the standalone scripts' flags (bench/, hosts/): their `add_argument` calls;
- the settings: `StackSettings` and its sections' aliases, as the stack file spells them
  (`multiAz`, `pgbouncer.defaultPoolSize`), and `aws:region`;
- the resource inputs the policy pack reads (camelCase string constants of policy/validators.py);
- the stack outputs: the names `__main__.py` passes to `pulumi.export`;
- the files: .gitignore's patterns (what the checkout makes at run time) and every other file name.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import click
from pydantic import BaseModel

from tests.unit.cli import tree

ROOT = Path(__file__).resolve().parents[3]
CAMEL = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+")
# Directories that hold no file of the repository's own, besides what .gitignore names.
NOT_SOURCE_DIRS = {".git", "node_modules", "__pycache__"}


@dataclass(frozen=True)
class Command:
    flags: frozenset[str]
    subcommands: frozenset[str]
    passes_unknown_options: bool  # `local psql`: what it does not know goes to psql


@dataclass(frozen=True)
class Truth:
    commands: dict[tuple[str, ...], Command]  # () is dbctl itself
    dev_commands: frozenset[str]
    scripts: dict[str, frozenset[str]]  # repository path -> its flags
    settings: frozenset[str]
    sections: frozenset[str]
    policy_inputs: frozenset[str]
    outputs: frozenset[str]
    ignored: tuple[str, ...]
    file_names: frozenset[str]

    @functools.cached_property
    def all_flags(self) -> frozenset[str]:
        return frozenset(itertools.chain(*(c.flags for c in self.commands.values()), *self.scripts.values()))

    @functools.cached_property
    def leaf_settings(self) -> frozenset[str]:
        return frozenset(key.rsplit(".", 1)[-1] for key in self.settings)

    @functools.cached_property
    def output_words(self) -> tuple[frozenset[str], frozenset[str]]:
        """(the first words, the last words) of the stack outputs' snake_case names."""
        return (
            frozenset(o.split("_")[0] for o in self.outputs),
            frozenset(o.split("_")[-1] for o in self.outputs),
        )


def cli_commands() -> dict[tuple[str, ...], Command]:
    found: dict[tuple[str, ...], Command] = {}
    for path, command, ctx in tree.walk():
        flags = {
            opt
            for param in command.get_params(ctx)
            if isinstance(param, click.Option)
            for opt in (*param.opts, *param.secondary_opts)
        }
        subs = command.list_commands(ctx) if isinstance(command, click.Group) else []
        unknown = bool(command.context_settings.get("ignore_unknown_options"))
        found[path] = Command(frozenset(flags), frozenset(subs), unknown)
    return found


def dev_commands() -> frozenset[str]:
    """The labels of `./dev`'s dispatch, its last `case "$cmd" in` (not `*`, which hands over to dbctl)."""
    text = (ROOT / "dev").read_text(encoding="utf-8")
    block = text.rsplit('case "$cmd" in', 1)[1].split("\nesac", 1)[0]
    labels = re.findall(r"^  ([^\s()][^()]*)\)\s*$", block, re.M)
    return frozenset(w.strip() for label in labels for w in label.split("|") if w.strip() != "*")


def script_flags() -> dict[str, frozenset[str]]:
    scripts: dict[str, frozenset[str]] = {}
    for path in sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("hosts/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scripts[path.relative_to(ROOT).as_posix()] = frozenset(
            arg.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
            for arg in node.args
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-")
        )
    return scripts


def settings() -> tuple[frozenset[str], frozenset[str]]:
    """(every settings key, those of a section dotted below it; the sections' names)."""
    from dbctl.stackconfig.settings import StackSettings, known_keys

    keys = {"aws:region", *known_keys()}
    sections = set()
    for name, field in StackSettings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            section = field.alias or name
            sections.add(section)
            keys.update(f"{section}.{sub.alias or sub_name}" for sub_name, sub in model.model_fields.items())
    return frozenset(keys), frozenset(sections)


def policy_inputs() -> frozenset[str]:
    tree = ast.parse((ROOT / "policy" / "validators.py").read_text(encoding="utf-8"))
    return frozenset(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and CAMEL.fullmatch(node.value)
    )


def stack_outputs() -> frozenset[str]:
    tree = ast.parse((ROOT / "__main__.py").read_text(encoding="utf-8"))
    return frozenset(
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "export"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pulumi"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def gitignored() -> tuple[str, ...]:
    """.gitignore's patterns, negations and comments left out."""
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith(("#", "!")))


def is_ignored(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether .gitignore ignores this repository path, or a directory it is under."""
    parts = path.strip("/").split("/")
    for pattern in patterns:
        bare = pattern.rstrip("/")
        anchored = "/" in bare
        for n in range(1, len(parts) + 1):
            if anchored and fnmatch.fnmatchcase("/".join(parts[:n]), bare.lstrip("/")):
                return True
            if not anchored and fnmatch.fnmatchcase(parts[n - 1], bare):
                return True
    return False


def file_names(ignored: tuple[str, ...]) -> frozenset[str]:
    """The name of every file and directory of the checkout that .gitignore does not ignore."""
    names: set[str] = set()
    for top, dirs, files in os.walk(ROOT):
        rel = Path(top).relative_to(ROOT).as_posix()
        dirs[:] = [
            d
            for d in dirs
            if d not in NOT_SOURCE_DIRS and not is_ignored(d if rel == "." else f"{rel}/{d}", ignored)
        ]
        names.update(dirs)
        names.update(files)
    return frozenset(names)


@functools.cache
def truth() -> Truth:
    keys, sections = settings()
    ignored = gitignored()
    return Truth(
        commands=cli_commands(),
        dev_commands=dev_commands(),
        scripts=script_flags(),
        settings=keys,
        sections=sections,
        policy_inputs=policy_inputs(),
        outputs=stack_outputs(),
        ignored=ignored,
        file_names=file_names(ignored),
    )
