"""The package's import graph: no cycles, and the lower layers never import the layers above them.

Every ``import`` / ``from ... import`` of a ``toolkit`` module counts, at module level and inside
functions (a function-level import is a dependency all the same: it only runs later). The graph is read
from the source with ``ast``, so nothing is imported to build it. ``from package import name`` is an edge
to ``package.name`` when that is a module, else to the package itself (its ``__init__``).

Layers, bottom up (an entry may import its own layer and those listed for it):

- ``toolkit.kernels``: Triton kernels and their references; imports nothing else of the toolkit;
- ``toolkit.geometry``: grids, point fields, slicing, meshing; imports the kernels and ``toolkit.io``;
- the systems ``toolkit.sof`` and ``toolkit.oflow`` sit above both and never import each other.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "toolkit"

LOWER_LAYERS = {
    "toolkit.kernels": ("toolkit.kernels",),
    "toolkit.geometry": ("toolkit.geometry", "toolkit.kernels", "toolkit.io"),
}
"""Package -> the toolkit packages and modules its modules may import."""

SYSTEMS = ("toolkit.sof", "toolkit.oflow")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the toolkit modules it imports anywhere in its source."""
    return {name: {t for t in _imports(path, name, files) if t != name} for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """'module imports target' for every import a lower layer or a system may not make."""
    bad = []
    for module, targets in sorted(graph.items()):
        for package, allowed in LOWER_LAYERS.items():
            if _within(module, package):
                bad += [f"{module} imports {t}" for t in sorted(targets) if not any(_within(t, a) for a in allowed)]
        for system in SYSTEMS:
            if _within(module, system):
                others = [s for s in SYSTEMS if s != system]
                bad += [f"{module} imports {t}" for t in sorted(targets) if any(_within(t, o) for o in others)]
    return bad


def test_the_toolkit_has_no_import_cycle():
    cycles = find_cycles(import_graph(module_files()))
    assert not cycles, "import cycles (module level or inside functions): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_kernels_and_geometry_import_only_downward():
    bad = layer_violations(import_graph(module_files()))
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_checks_see_function_level_imports_and_cycles(tmp_path):
    # A toy package: kernels reaching up into a system inside a function, and a two-module cycle.
    pkg = tmp_path / "toolkit"
    for folder in ("kernels", "sof"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels" / "op.py").write_text("def f():\n    from toolkit.sof.model import M\n    return M\n")
    (pkg / "sof" / "model.py").write_text("from toolkit.sof import train\nM = 1\n")
    (pkg / "sof" / "train.py").write_text("import toolkit.sof.model\n")
    graph = import_graph(module_files(pkg))
    assert graph["toolkit.kernels.op"] == {"toolkit.sof.model"}
    assert find_cycles(graph) == [["toolkit.sof.model", "toolkit.sof.train"]]
    assert layer_violations(graph) == ["toolkit.kernels.op imports toolkit.sof.model"]


@pytest.mark.parametrize("module", ["toolkit.kernels.marching_cubes", "toolkit.geometry.meshing"])
def test_known_modules_are_in_the_graph(module):
    assert module in import_graph(module_files())


# ------------------------------------------------------------------------------------------------ helpers


def _imports(path: Path, module: str, files: dict[str, Path]) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in files)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            if base is None or not base.startswith("toolkit"):
                continue
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
            yield from submodules
            if len(submodules) < len(node.names) and base in files:
                yield base


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    if not node.level:
        return node.module
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        return None
    base = ".".join(parts[:len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("package", ["toolkit.sof", "toolkit.oflow", "toolkit.geometry", "toolkit.training",
                                     "toolkit.viz", "toolkit.synthetic", "toolkit.kernels"])
def test_package_faces_shadow_no_module(package):
    # A face name equal to a submodule's (e.g. a function ``train`` beside ``train.py``) would make
    # ``import toolkit.<package>.<module> as m`` return the function instead of the module.
    import importlib
    import pkgutil
    import types

    face = importlib.import_module(package)
    shadowed = [m.name for m in pkgutil.iter_modules(face.__path__)
                if hasattr(face, m.name) and not isinstance(getattr(face, m.name), types.ModuleType)]
    assert not shadowed, f"{package} exports names of its own modules: {shadowed}"
    assert all(hasattr(face, name) for name in getattr(face, "__all__", ())), "an __all__ name is missing"
