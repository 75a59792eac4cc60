"""The package's layout is its map: small modules, no import cycle, no private name imported, one training loop.

Read from the source with :mod:`ast` (nothing is imported), so a violation names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lossattn"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` of ``module`` reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def module_level_imports(module: str) -> list[tuple[str, int]]:
    """``(imported lossattn module, line)`` of the imports that run when ``module`` is imported.

    Only module-level statements count (also inside top-level ``if``/``try``); an import inside a function runs
    when it is called, not when the module loads. ``from pkg import name`` depends on ``pkg.name`` when that is a
    module, else on ``pkg``.
    """
    tree = ast.parse(MODULES[module].read_text())
    out = []

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                out.extend((alias.name, node.lineno) for alias in node.names if alias.name.startswith("lossattn"))
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                if not source.startswith("lossattn"):
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    out.append((sub if sub in MODULES else source, node.lineno))
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return out


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by idea): {long}"


def test_no_import_cycle():
    graph = {m: sorted({dep for dep, _ in module_level_imports(m) if dep in MODULES and dep != m}) for m in MODULES}
    # Tarjan's strongly connected components: a component of more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles among modules (module-level imports): {cycles}"


def test_no_private_name_is_imported_from_another_module():
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _absolute(module, node).startswith("lossattn"):
                found += [
                    f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert not found, "private names imported across modules: " + "; ".join(found)


def test_one_training_loop_calls_backward():
    calls = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward"
    ]
    assert calls == ["lossattn/engine/loop.py:" + calls[0].rsplit(":", 1)[1]], f".backward() called at {calls}"


@pytest.mark.parametrize("package", ["models", "engine", "protocols", "experiments", "cli", "inference", "datasets"])
def test_the_layout_has_its_packages(package):
    assert (PACKAGE / package / "__init__.py").is_file()


def test_the_library_does_not_depend_on_the_experiments():
    users = [
        f"{m} imports {dep}"
        for m in MODULES
        if not m.startswith(("lossattn.experiments", "lossattn.cli", "lossattn.train"))
        for dep, _ in module_level_imports(m)
        if dep.startswith("lossattn.experiments")
    ]
    assert not users, users


def test_package_version_matches_pyproject():
    # the wheel's metadata and lossattn.__version__ must not disagree (0.2.0 shipped as "0.1.0" once)
    import lossattn

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    meta = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert meta["project"]["version"] == lossattn.__version__
