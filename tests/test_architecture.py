"""The package's shape, held by tests: module size, import cycles, private access.

(That plain object stores import no SQL is held by tests/test_backend_objectstore.py.)

docs/architecture.md draws the layers; these tests keep the drawing true.
Every import statement counts (top level, under ``TYPE_CHECKING`` and inside
functions): a cycle hidden in a function is still a cycle in the design.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gotstate_persist"
ROOT = "gotstate_persist"
MAX_LINES = 500
LONG_REASON = "longer than 500 lines because"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import statement."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                yield source, alias.name, node.lineno


def _edges(module: str) -> set[str]:
    targets = set()
    for source, name, _line in _imports(module):
        if not source.startswith(ROOT):
            continue
        submodule = f"{source}.{name}" if name else ""
        target = submodule if submodule in MODULES else source
        if target in MODULES and target != module:
            targets.add(target)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    graph = {module: _edges(module) for module in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    lines = source.count("\n")
    if lines > MAX_LINES:
        docstring = " ".join((ast.get_docstring(ast.parse(source)) or "").split())
        if LONG_REASON not in docstring:
            pytest.fail(
                f"{module} has {lines} lines: split it, or say in its docstring why it is "
                f"{LONG_REASON} ...",
                pytrace=False,
            )


def test_no_module_imports_another_modules_private_names() -> None:
    reached = []
    for module in MODULES:
        for source, name, line in _imports(module):
            if not source.startswith(ROOT) or not name.startswith("_"):
                continue
            if f"{source}.{name}" in MODULES:
                continue  # a private module of the package, not a private member
            reached.append(f"{module}:{line} imports {name} from {source}")
    assert reached == []


def test_flake8_self_is_enforced() -> None:
    """SLF001 (no access to another object's private members) runs in `make lint`."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "SLF001", str(PACKAGE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
