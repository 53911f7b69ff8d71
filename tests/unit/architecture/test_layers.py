"""The layers of the code, checked from its imports (ast, not by importing): what may import what.

- No import cycle between modules, nor between packages (dbctl's sub-packages, components, hosts, ...).
- dbctl/core/ imports nothing else of dbctl: it is what the rotation Lambda ships beside its handler.
- dbctl/cli/ is click only: no SQL, no process control; nothing but dbctl/__main__.py (and tests) imports it.
- Outside dbctl/cli/, nothing imports click: logic does not depend on the CLI.
- dbctl never imports components (components may import dbctl: the facts both need live in dbctl).
- hosts/ scripts stand alone: the standard library only (they are copied onto the PgBouncer hosts).
Imports inside functions count: a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("dbctl", "components", "hosts", "lambdas", "bench", "policy")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {"__main__": ROOT / "__main__.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imports(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """Every module `path` imports (absolute names, relative ones resolved), with its line."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # `from pkg import module`
                yield f"{base}.{alias.name}", node.lineno


@cache
def graph() -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line}."""
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        targets: dict[str, int] = {}
        for imported, line in _imports(path, name):
            if imported in known and imported != name:
                targets.setdefault(imported, line)
        edges[name] = targets
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _package(module: str) -> str:
    """dbctl.local.stack -> dbctl.local; components.x -> components; __main__ -> __main__."""
    parts = module.split(".")
    if parts[0] == "dbctl" and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0] if parts[0] != "dbctl" else module


def _where(importer: str, imported: str) -> str:
    path = modules()[importer].relative_to(ROOT)
    return f"{path}:{graph()[importer][imported]} imports {imported}"


def _edges_from(prefix: str) -> Iterator[tuple[str, str]]:
    for importer, targets in graph().items():
        if importer == prefix or importer.startswith(prefix + "."):
            for imported in targets:
                yield importer, imported


def test_the_graph_sees_the_code() -> None:
    """The checks below read real imports: a broken walk would pass them all vacuously."""
    assert "dbctl.core.rotation" in modules() and "components.pgbouncer" in modules()
    assert "dbctl.core.names" in graph()["dbctl.core.rotation"]
    assert any(t.startswith("dbctl.") for t in graph()["components.pgbouncer"])
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles({m: set(t) for m, t in graph().items()})
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for importer, targets in graph().items():
        for imported in targets:
            a, b = _package(importer), _package(imported)
            if a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
                edges.setdefault(a, set()).add(b)
    cycles = _cycles(edges)
    assert not cycles, "package cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_core_imports_nothing_else_of_dbctl() -> None:
    bad = [
        _where(i, t)
        for i, t in _edges_from("dbctl.core")
        if t.startswith("dbctl.") and not t.startswith("dbctl.core")
    ]
    assert not bad, bad


def test_dbctl_never_imports_components() -> None:
    bad = [_where(i, t) for i, t in _edges_from("dbctl") if t.split(".")[0] in ("components", "__main__")]
    assert not bad, bad


def test_nothing_but_the_entry_point_imports_the_cli() -> None:
    bad = [
        _where(i, t)
        for i, targets in graph().items()
        for t in targets
        if t.startswith("dbctl.cli") and not i.startswith("dbctl.cli") and i != "dbctl.__main__"
    ]
    assert not bad, bad


# What the CLI layer may not do itself: run SQL, start or signal processes.
CLI_FORBIDDEN_IMPORTS = ("subprocess", "signal", "psycopg.sql", "psycopg.pq")
CLI_FORBIDDEN_CALLS = ("execute", "executemany", "cursor", "Popen", "kill", "execvp", "execvpe", "execv")


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith("dbctl.cli")))
def test_the_cli_holds_no_sql_and_no_process_control(module: str) -> None:
    path = modules()[module]
    problems = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for imported, line in _imports(path, module)
        if imported in CLI_FORBIDDEN_IMPORTS or imported.startswith("psycopg.sql")
    ]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr in CLI_FORBIDDEN_CALLS:
            problems.append(f"{path.relative_to(ROOT)}:{node.lineno} calls .{node.func.attr}()")
    assert not problems, problems


def test_only_the_cli_imports_click() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}"
        for name, path in modules().items()
        if name.startswith("dbctl.") and not name.startswith("dbctl.cli")
        for imported, line in _imports(path, name)
        if imported == "click" or imported.startswith("click.")
    ]
    assert not bad, bad


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith("hosts.")))
def test_host_scripts_use_the_standard_library_only(module: str) -> None:
    path = modules()[module]
    outside = sorted(
        {
            imported
            for imported, _ in _imports(path, module)
            if imported.split(".")[0] not in sys.stdlib_module_names and imported != "__future__"
        }
    )
    assert not outside, f"{path.relative_to(ROOT)} imports {outside}"
