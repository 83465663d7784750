"""The code's structure, read with ``ast``: no import cycle in prolab/ or app/ (imports inside functions
count), the app reaches the image side only through the editing session, and the library's scoring layers
import downwards only."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("prolab", "app")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            out[".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")] = path
    return out


def _typing_only(tree: ast.AST) -> set[int]:
    return {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of prolab/ and app/ it imports (at the top or inside a function; imports
    only for type checkers left out). ``from pkg import name`` imports ``pkg.name`` when that is a module."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip, edges = _typing_only(tree), set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names]
            else:
                continue
            edges |= {n for n in names if n in modules and n != module}
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_prolab_or_app():
    graph = import_graph()
    assert {"prolab.class_scorer", "prolab.inference", "app.tabs.segment"} <= set(graph)
    assert "prolab.inference" in graph["prolab.class_scorer"]  # the graph sees real imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_app_talks_to_the_editing_session_not_the_workbench():
    hits = [f"{p.relative_to(REPO)}:{i}" for p in sorted((REPO / "app").rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if ".workbench" in line]
    assert not hits, hits


#: The library's editing and scoring modules, top first: each imports only the layers below it.
SCORING_LAYERS = [["prolab.edit_session"], ["prolab.workbench"], ["prolab.class_scorer"],
                  ["prolab.novel_prior", "prolab.alignment"], ["prolab.inference"], ["prolab.input_shape", "prolab.images"]]


def test_the_scoring_layers_import_downwards_only():
    graph = import_graph()
    rank = {m: i for i, layer in enumerate(SCORING_LAYERS) for m in layer}
    for module, i in rank.items():
        for target in graph[module]:
            assert rank.get(target, len(SCORING_LAYERS)) > i or target == module, f"{module} imports {target}"
    # the image side holds no label state: it never sees descriptions, label sets or label spaces being made
    assert not graph["prolab.workbench"] & {"prolab.descriptions", "prolab.labelsets", "prolab.encoder"}


def test_the_library_never_imports_the_app_or_gradio():
    for module, path in _modules().items():
        if not module.startswith("prolab"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("app", "gradio") for n in names), (module, names)
