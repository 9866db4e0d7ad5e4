"""The layers of plugins/: the models layer imports no layer above it, and no plugins modules import each other in a loop.

The import graph is read from source (:func:`plugins.identity.module_info`: every ``import`` at
module level or inside functions, none under ``if TYPE_CHECKING:``), so nothing is imported here.
The models layer is held to more: not even its type annotations name a layer above it (methods
reach it through :class:`plugins.models.intervention.Intervention`).
Layers, bottom up: world (``plugins/world``) < models (``plugins/models``: checkpoint lookup,
adapter, caches, hooks, the tiny model's configs and training loop) < trainers and tuning < methods
(``plugins/methods``) < benchmarks < the embedded model's recipe (``plugins/embedded``, which
evaluates with the benchmarks) < runner. The registry lists methods, benchmarks and models;
:mod:`plugins.models.zoo` is the one models module that registers with it.
"""
from __future__ import annotations

import ast
import functools

import networkx as nx
import pytest

from plugins import identity

ROOT = identity.REPO_ROOT
ABOVE_MODELS = ("plugins.methods", "plugins.benchmarks", "plugins.runner", "plugins.registry", "plugins.embedded",
                "plugins.trainers", "plugins.tuning", "plugins.diagnostics", "plugins.explain")
"""What a models module must not import: the layers that use models, and the registry of all plugins."""
MAY_REGISTER = {"plugins.models.zoo": ("plugins.registry",)}
"""Models modules allowed one exception: the zoo registers the models by name."""
NOT_YET: dict[str, str] = {}
"""Known violations, each with its reason; strict, so fixing one makes its test say so."""


def _module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def plugin_modules() -> tuple[str, ...]:
    """Every module and package of plugins/, by dotted name, sorted."""
    return tuple(sorted(_module_name(p) for p in (ROOT / "plugins").rglob("*.py")))


@functools.cache
def import_graph() -> nx.DiGraph:
    """module → every plugins module it imports (at any level but ``if TYPE_CHECKING:``)."""
    graph = nx.DiGraph()
    for module in plugin_modules():
        graph.add_node(module)
        _, candidates = identity.module_info(module, ROOT)
        for name in candidates:  # `from a import b` lists a and a.b: keep the ones that are modules
            if name != module and name.split(".")[0] == "plugins" and identity.module_source(name, ROOT) is not None:
                graph.add_edge(module, name)
    return graph


def every_import(module: str) -> set[str]:
    """Every plugins module ``module``'s import statements name, under ``if TYPE_CHECKING:`` too."""
    path = identity.module_source(module, ROOT)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if identity.module_source(n, ROOT) is not None and n != module}


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_sees_function_level_imports_and_skips_type_checking():
    graph = import_graph()
    assert graph.has_edge("plugins.models.zoo", "plugins.registry")  # module level
    assert graph.has_edge("plugins.models.adapter", "plugins.models.cache")  # inside a function
    assert graph.has_edge("plugins.models.adapter", "plugins.models.prefix")  # `from plugins.models import prefix`
    assert not graph.has_edge("plugins.models.adapter", "plugins.models.intervention")  # only under TYPE_CHECKING
    assert "plugins.models.intervention" in every_import("plugins.models.adapter")


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.xfail(reason=NOT_YET[m], strict=True)) if m in NOT_YET else m
    for m in plugin_modules() if _under(m, "plugins.models")])
def test_models_import_no_layer_above_them(module):
    allowed = MAY_REGISTER.get(module, ())
    wrong = sorted(name for name in every_import(module)
                   if any(_under(name, layer) for layer in ABOVE_MODELS) and name not in allowed)
    assert not wrong, (f"{module} imports {', '.join(wrong)}: the models layer must not depend on methods, benchmarks, "
                       "the runner or the registry (take what it needs as an argument, or move the code up a layer)")


def test_plugins_modules_import_each_other_in_no_loop():
    graph = import_graph()
    loops = sorted(sorted(group) for group in nx.strongly_connected_components(graph) if len(group) > 1)
    described = []
    for group in loops:
        cycle = nx.find_cycle(graph.subgraph(group))  # [(a, b), (b, c), (c, a)]
        described.append(" -> ".join([a for a, _ in cycle] + [cycle[0][0]]))
    assert not loops, "import loops among plugins modules (one each): " + "; ".join(described)
