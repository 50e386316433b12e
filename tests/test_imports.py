"""No import cycles in xqg: every module-level import graph is acyclic, and every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers.paths import REPO

PACKAGE = REPO / "xqg"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """xqg modules a file imports, at module level or inside functions (a lazy import is still a dependency);
    `if TYPE_CHECKING:` blocks never run and are left out."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in list(ast.walk(tree)):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out.update(n for n in names if n in known)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    # A module depends on what it imports; a package __init__ is not counted as importing its children back.
    return {m: {d for d in imports_of(p, known) if d != m and not m.startswith(d + ".")} for m, p in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(edges.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_xqg():
    edges = graph()
    assert len(edges) > 40, "the package was not found"
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges) or [])}"


def test_every_module_imports_fresh_in_its_own_interpreter():
    modules = sorted(graph())
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    # One interpreter per module would take minutes; the order is reversed and shuffled by name instead so a
    # module that only works after another was imported first shows up in one of the two passes.
    # The two passes run side by side (each is one core's work).
    passes = [subprocess.Popen([sys.executable, "-c", code, *order], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for order in (modules, modules[::-1])]
    for done in passes:
        _, err = done.communicate(timeout=300)
        assert done.returncode == 0, err[-3000:]
