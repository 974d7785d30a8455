"""The import graph: layers import only downward and no two modules or folders import each other.

Layers, bottom to top: ``core`` (errors, I/O, images, embeddings, AWS clients, configuration models) ->
``steps`` and ``evaluation`` -> ``pipeline`` (definition, command line, local runner) -> ``containers``.
The graph is built by grimp (import-linter's engine) from the sources, imports under ``TYPE_CHECKING``
excluded; cycles are strongly connected components found by networkx.
"""

from __future__ import annotations

import grimp
import networkx as nx

LAYERS = {"core": 0, "steps": 1, "evaluation": 1, "pipeline": 2, "containers": 3}
# evaluation sits beside steps but may use its building blocks (LoRA loading, images); never the reverse
SIDEWAYS_ALLOWED = {("evaluation", "steps")}


def _graph() -> nx.DiGraph:
    imports = grimp.build_graph(*LAYERS, cache_dir=None, exclude_type_checking_imports=True)
    graph = nx.DiGraph()
    for module in imports.modules:
        graph.add_node(module)
        for imported in imports.find_modules_directly_imported_by(module):
            graph.add_edge(module, imported)
    return graph


def _folder(module: str, modules: set[str]) -> str:
    """The package a module belongs to (a package's own ``__init__`` belongs to that package)."""
    if any(other.startswith(module + ".") for other in modules):
        return module
    return module.rsplit(".", 1)[0]


def test_layers_import_only_downward():
    graph = _graph()
    wrong = sorted((a, b) for a, b in graph.edges
                   if (LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]])
                   or (LAYERS[b.split(".")[0]] == LAYERS[a.split(".")[0]] and a.split(".")[0] != b.split(".")[0]
                       and (a.split(".")[0], b.split(".")[0]) not in SIDEWAYS_ALLOWED))
    assert not wrong, "imports against the layers (core -> steps/evaluation -> pipeline -> containers):\n" + \
        "\n".join(f"  {a} imports {b}" for a, b in wrong)


def test_no_import_cycle_between_modules_or_folders():
    graph = _graph()
    module_cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not module_cycles, f"modules that import each other: {module_cycles}"
    modules = set(graph.nodes)
    folders = nx.DiGraph()
    for a, b in graph.edges:
        fa, fb = _folder(a, modules), _folder(b, modules)
        if fa != fb:
            folders.add_edge(fa, fb)
    folder_cycles = [sorted(c) for c in nx.strongly_connected_components(folders) if len(c) > 1]
    assert not folder_cycles, f"folders that import each other: {folder_cycles}"
