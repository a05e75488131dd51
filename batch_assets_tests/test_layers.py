"""The package's imports point downward only and never in a circle (DESIGN.md, README "Layout"):

    defs -> pipelines -> warehouse, ledger, local -> batching

Read from the source with `ast`, every import counted, those inside functions too: an import a function
makes lazily is still a dependency. Only ``if TYPE_CHECKING:`` imports, which never run, are left out.
Modules at the package root (settings, provider, sources, the CLIs) are glue: a layer may use one only
when it reaches nothing of that layer or above.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import batch_assets

PACKAGE = Path(batch_assets.__file__).parent
# Lowest first: a package may import only packages of a lower layer (and itself).
LAYERS = (("batching",), ("warehouse", "ledger", "local"), ("pipelines",), ("defs",))
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}
# Only the code location may use Dagster: its defs folder and the module dg loads it from.
DAGSTER_USERS = ("defs", "definitions")


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runs(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes under `node` that can run: an ``if TYPE_CHECKING:`` block only tells the type checker."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
            yield from (grandchild for statement in child.orelse for grandchild in [statement, *_runs(statement)])
            continue
        yield child
        yield from _runs(child)


def imported_names(path: Path) -> Iterator[str]:
    """Every module name an import statement of the file names (``from a import b`` gives ``a.b``)."""
    for node in _runs(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, f"{path}: use absolute imports"
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> project modules it imports, project module -> outside top-level names it imports)."""
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    inside: dict[str, set[str]] = {name: set() for name in paths}
    outside: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for imported in imported_names(path):
            if imported.split(".")[0] != package.name:
                outside[name].add(imported.split(".")[0])
                continue
            while imported not in paths:  # `from pkg.mod import function` names the module pkg.mod
                imported = imported.rsplit(".", 1)[0]
            if imported not in (name, package.name):
                inside[name].add(imported)
    return inside, outside


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def top(module: str) -> str:
    """``batch_assets.pipelines.plan`` -> ``pipelines``; ``batch_assets.settings`` -> ``settings``."""
    return module.split(".")[1] if "." in module else ""


def layer_reached(module: str, graph: Mapping[str, set[str]]) -> int:
    """The highest layer a module reaches through its imports (-1: none)."""
    seen, todo, highest = {module}, [module], -1
    while todo:
        for target in graph[todo.pop()]:
            highest = max(highest, LAYER_OF.get(top(target), -1))
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return highest


def upward_imports(graph: Mapping[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        level = LAYER_OF.get(top(module))
        for target in sorted(targets):
            if top(target) == top(module):
                continue
            if top(target) == "defs" and top(module) != "definitions":
                wrong.append(f"{module} -> {target} (only the code location imports defs)")
            elif level is None:
                continue
            elif top(target) in LAYER_OF and LAYER_OF[top(target)] >= level:
                wrong.append(f"{module} -> {target}")
            elif top(target) not in LAYER_OF and layer_reached(target, graph) >= level:
                wrong.append(f"{module} -> {target} (which reaches layer {LAYERS[layer_reached(target, graph)]})")
    return wrong


def test_the_package_has_no_import_cycle() -> None:
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_imports_point_downward_only() -> None:
    graph, _ = import_graph()
    assert upward_imports(graph) == []


def test_only_the_code_location_imports_dagster() -> None:
    _, outside = import_graph()
    users = sorted(module for module, names in outside.items()
                   if any(name.startswith("dagster") for name in names) and top(module) not in DAGSTER_USERS)
    assert users == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "batch_assets"
    for folder in ("local", "pipelines", "batching"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "local" / "models.py").write_text(
        "def load():\n    from batch_assets.local.embedder import Embedder\n    return Embedder\n")
    (package / "local" / "embedder.py").write_text("from batch_assets.local.models import load\n")
    (package / "batching" / "client.py").write_text("from batch_assets.pipelines.plan import make\n")
    (package / "pipelines" / "plan.py").write_text(
        "import dagster\nfrom typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:  # never runs: no cycle with batching.client\n"
        "    from batch_assets.batching import client\n")
    graph, outside = import_graph(package)
    assert cycles(graph) == [["batch_assets.local.embedder", "batch_assets.local.models"]]
    assert upward_imports(graph) == ["batch_assets.batching.client -> batch_assets.pipelines.plan"]
    assert outside["batch_assets.pipelines.plan"] == {"dagster", "typing"}
