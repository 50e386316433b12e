"""No import cycles in xqg: the import graph is acyclic, counting imports inside functions, named dynamic imports
and the registries' discovery (TYPE_CHECKING imports never run and are left out); every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers.paths import REPO

PACKAGE = REPO / "xqg"


def module_name(path: Path, root: Path = REPO) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of a `from ... import` (relative ones resolved against the importing module)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _literal(call: ast.Call, module: str) -> str | None:
    """The module named by a call's first argument: a string literal, or __name__ (the calling module)."""
    if not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name) and arg.id == "__name__":
        return module
    return None


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def imports_of(path: Path, known: set[str], module: str = "") -> set[str]:
    """xqg modules a file imports, at module level or inside functions (a lazy import is still a dependency);
    `if TYPE_CHECKING:` blocks never run and are left out. importlib.import_module("x") imports x, and a
    registry's import_package("pkg") (xqg/registry.py) imports every module of pkg."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in list(ast.walk(tree)):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, module, is_package)
            names = [source] + [f"{source}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and _callee(node) == "import_module":
            names = [n for n in [_literal(node, module)] if n]
        elif isinstance(node, ast.Call) and _callee(node) == "import_package":
            package = _literal(node, module)
            names = [m for m in known if package and m.startswith(package + ".") and "." not in m[len(package) + 1:]
                     and not m.rsplit(".", 1)[1].startswith("_")]
        out.update(n for n in names if n in known)
    return out


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root.parent): p for p in root.rglob("*.py")}
    known = set(files)
    # Every import counts, a module's import of its own package too (a parent imported by name is a real edge).
    return {m: {d for d in imports_of(p, known, m) if d != m} for m, p in files.items()}


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


def test_the_graph_counts_lazy_imports_and_registries_but_not_type_checking(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "plugins").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy import b\n\n\n"
                "def f():\n    from toy import c\n",
        "b.py": "",
        "c.py": "import importlib\n\nimportlib.import_module('toy.b')\n",
        "plugins/__init__.py": "from xqg.registry import import_package\n\n\n"
                               "def load():\n    import_package(__name__)\n",
        "plugins/base.py": "",
        "plugins/one.py": "from .base import register\n",
        "plugins/_private.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    edges = graph(pkg)
    assert edges["toy.a"] == {"toy", "toy.c"}  # the lazy import counts (the package runs too), TYPE_CHECKING not
    assert edges["toy.c"] == {"toy.b"}
    assert edges["toy.plugins"] == {"toy.plugins.base", "toy.plugins.one"}  # discovery imports every module
    assert edges["toy.plugins.one"] == {"toy.plugins.base"}  # a relative import, resolved
    assert find_cycle(edges) is None
    # A plugin's registration module that imports the discovering package back closes a cycle.
    (pkg / "plugins" / "base.py").write_text("def register():\n    import toy.plugins\n")
    assert find_cycle(graph(pkg)) == ["toy.plugins", "toy.plugins.base", "toy.plugins"]


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


def test_the_shared_probes_import_nothing_of_xqg():
    # Model-family probing (models/family.py) and the registries' machinery (registry.py) are imported by
    # config validation, the backends and training alike: importing xqg back would close a cycle.
    edges = graph()
    assert edges["xqg.models.family"] == set() and edges["xqg.registry"] == set()


def test_only_models_family_probes_a_models_family():
    # One place reads a model's config for its family (is_encoder_decoder, model_type): nothing re-implements it.
    probes = {"AutoConfig", "is_encoder_decoder", "model_type"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "models" / "family.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "value", None)
            name = name if isinstance(name, str) else None
            if name in probes or (isinstance(node, ast.alias) and node.name in probes):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name or node.name}")
    assert found == []
