"""The folders are layers: data flows down, nothing imports upward or sideways, no module imports itself round.

Every module under rollout/ is parsed with `ast` (nothing is imported), and
every import in it, at module level or inside a function, becomes an edge of
the graph. Imports under `if TYPE_CHECKING:` count for the layers (a type is a
dependency too) but not for circles (they never run).

    core  <-  store  <-  sdk  <-  adapters (api, cli, prefect, openfeature)
      ^         ^                     |
      |         +------ app  <--------+        errors: everyone; testing: anything
      +-- ports <-------+
    ports (Protocols over core types) may be imported by every layer above core:
    the store and the SDK implement or consume them, the app composes them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rollout"

# layer -> the layers it may import (its own always included)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "ports": {"core", "errors"},
    "store": {"core", "errors", "ports"},
    "sdk": {"core", "store", "errors", "ports"},
    "app": {"core", "store", "errors", "ports"},
    "adapters": {"core", "store", "sdk", "app", "errors", "ports"},
    "testing": {"*"},
    "root": {"*"},  # rollout/__init__.py (the curated surface) and __main__.py
}

# Imports from one adapter into another, each with its reason. Keep this short.
ADAPTER_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("adapters.cli", "adapters.api"): "`rollout serve` starts the HTTP service and hands it its settings",
    ("adapters.cli", "adapters.prefect"): "`rollout start` runs the rollout flow in this process when no "
                                          "deployment exists",
}


@dataclass(frozen=True)
class Import:
    source: str        # the importing module, dotted
    target: str        # the imported rollout module, dotted
    line: int
    runs: bool         # False under `if TYPE_CHECKING:`


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    # Alembic's migration scripts are loaded by file path, not imported: not part of the graph.
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "root"
    if parts[1] == "adapters":
        return "adapters" if len(parts) == 2 else f"adapters.{parts[2]}"
    return parts[1]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))

    def resolve(name: str) -> str | None:
        # The longest known rollout module the dotted name starts with.
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in known:
                return candidate
        return None

    def visit(node: ast.AST, runs: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit_stmt(stmt, False)
                for stmt in child.orelse:
                    yield from visit_stmt(stmt, runs)
                continue
            yield from visit_stmt(child, runs)

    def visit_stmt(node: ast.AST, runs: bool) -> Iterator[Import]:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from a.b import c` imports module a.b.c when there is one, else a name of a.b.
            names = [f"{prefix}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "rollout":
                target = resolve(name)
                if target is not None and target != module:
                    yield Import(module, target, node.lineno, runs)  # type: ignore[attr-defined]
        yield from visit(node, runs)

    yield from visit(tree, True)


def import_graph() -> list[Import]:
    found = modules()
    known = set(found)
    return [imp for name, path in found.items() for imp in imports_of(name, path, known)]


def violation(imp: Import) -> str | None:
    source, target = layer(imp.source), layer(imp.target)
    if source == target:
        return None
    base = source.split(".")[0]
    allowed = ALLOWED[base]
    if "*" in allowed or target.split(".")[0] in allowed or target == base:
        return None
    if (source, target) in ADAPTER_EXCEPTIONS:
        return None
    return f"{imp.source}:{imp.line} imports {imp.target} ({source} may not import {target})"


def cycles(edges: list[Import]) -> list[list[str]]:
    """Every strongly connected set of modules larger than one, each as one concrete circle through it."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        if e.runs:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_circle_in(sorted(c)[0], c, graph) for c in components]


def _circle_in(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    # Breadth-first from start back to start, inside the component: the shortest circle through it.
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected component always has a circle")


# --- the checks on the real tree ----------------------------------------------------------

def test_no_module_imports_upward_or_across_adapters() -> None:
    # Given every import in the package, When each is checked against its layer's rule
    problems = [v for imp in import_graph() if (v := violation(imp)) is not None]
    # Then none breaks a rule
    assert not problems, "\n".join(problems)


def test_no_import_circles() -> None:
    # Given the imports that run, When the graph is searched for circles, Then there are none
    found = cycles(import_graph())
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_every_adapter_exception_is_still_needed() -> None:
    # An exception nobody uses any more is a door left open: close it.
    used = {(layer(i.source), layer(i.target)) for i in import_graph()}
    assert set(ADAPTER_EXCEPTIONS) <= used, set(ADAPTER_EXCEPTIONS) - used


def test_the_graph_sees_function_level_imports() -> None:
    # The CLI imports the store only inside its commands: those edges must be in the graph.
    edges = {(i.source, i.target) for i in import_graph()}
    assert ("rollout.adapters.cli.main", "rollout.store.flags") in edges
    assert len(modules()) > 50


# --- the checker itself, on made-up graphs: it can fail ------------------------------------

@pytest.mark.parametrize(("source", "target", "bad"), [
    ("rollout.core.plan", "rollout.core.stats", False),
    ("rollout.core.flag", "rollout.errors", False),
    ("rollout.core.plan", "rollout.store.db", True),          # the core reaching for SQL
    ("rollout.store.flags", "rollout.app.plans", True),       # upward
    ("rollout.sdk.client", "rollout.app.reconcile", True),
    ("rollout.app.reconcile", "rollout.sdk.client", True),    # sideways
    ("rollout.adapters.api.app", "rollout.sdk.snapshot", False),
    ("rollout.adapters.api.routes.flags", "rollout.adapters.api.common", False),
    ("rollout.adapters.api.app", "rollout.adapters.cli.main", True),   # across adapters
    ("rollout.adapters.cli.tokens", "rollout.adapters.api.settings", False),  # a documented exception
    ("rollout.adapters.openfeature", "rollout.adapters.prefect.flow", True),
    ("rollout.testing", "rollout.adapters.prefect.flow", False),
    ("rollout.errors", "rollout.core", True),
])
def test_the_layer_rule(source: str, target: str, bad: bool) -> None:
    assert (violation(Import(source, target, 1, True)) is not None) is bad


def test_a_circle_is_found_and_named() -> None:
    edges = [Import("rollout.sdk.client", "rollout.sdk.shadow", 1, True),
             Import("rollout.sdk.shadow", "rollout.sdk.buffer", 1, True),
             Import("rollout.sdk.buffer", "rollout.sdk.client", 9, True),
             Import("rollout.core.a", "rollout.core.b", 1, True),
             Import("rollout.core.b", "rollout.core.a", 1, False)]  # under TYPE_CHECKING: never runs
    assert cycles(edges) == [["rollout.sdk.buffer", "rollout.sdk.client", "rollout.sdk.shadow", "rollout.sdk.buffer"]]
