"""Import graph among rlvr modules (rlvr/, algorithms/, eval/), built with `ast`.

Counts module-level AND in-function (late) imports as edges; `if TYPE_CHECKING:` blocks are
skipped (they never run). Prints the edges, marks late
ones with `(late)`, lists the strongly connected components (cycles) and the imports that go
up the layers (`LAYERS`). Exit status 1 if any cycle or upward import exists; tests/test_layering.py
runs the same check. Usage: python bench/import_graph.py [--edges]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rlvr", "algorithms", "eval")

# The layers, lowest first (rlvr/__init__.py says why): a module may import its own layer's
# modules and lower layers', never a higher layer's; and nothing forms a cycle.
LAYERS = (
    ("core", "every rlvr.* module not named below: tasks, data, rewards, sandbox, models, rollout, losses, ..."),
    ("algorithms", "rlvr.algorithms.*"),
    ("eval", "rlvr.eval.*"),
    ("config", "rlvr.config"),
    ("trainer", "rlvr.trainer"),
    ("app", "rlvr.sweep, rlvr.cli, rlvr.__main__"),
)
SIBLINGS = {("algorithms", "eval"), ("eval", "algorithms")}  # neither of these two imports the other


def layer_of(module: str) -> str:
    if module.startswith("rlvr.algorithms"):
        return "algorithms"
    if module.startswith("rlvr.eval"):
        return "eval"
    if module in ("rlvr.config", "rlvr.trainer"):
        return module.rpartition(".")[2]
    if module in ("rlvr.sweep", "rlvr.cli", "rlvr.__main__"):
        return "app"
    return "core"


def upward_edges(graph: dict[str, dict[str, bool]]) -> list[str]:
    """Imports of a higher layer (or of the sibling eval/algorithms), as 'a -> b (layer -> layer)'."""
    rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    bad = []
    for src, dsts in sorted(graph.items()):
        for dst in sorted(dsts):
            a, b = layer_of(src), layer_of(dst)
            if rank[b] > rank[a] or (a, b) in SIBLINGS:
                bad.append(f"{src} -> {dst} ({a} -> {b})")
    return bad


def _modules() -> dict[str, Path]:
    """Module name -> file, subpackages included (rlvr/rewards/ -> rlvr.rewards.*); symlinked folders skipped."""
    mods = {}
    for pkg in PACKAGES:
        top = "rlvr" if pkg == "rlvr" else f"rlvr.{pkg}"  # eval/, algorithms/ install as rlvr.eval, rlvr.algorithms
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT / pkg)
            if any((ROOT / pkg / Path(*rel.parts[:i])).is_symlink() for i in range(1, len(rel.parts))):
                continue
            parts = [top, *rel.parts[:-1]] + ([] if path.stem == "__init__" else [path.stem])
            mods[".".join(parts)] = path
    return mods


def _resolve(target: str, mods: dict[str, Path]) -> str | None:
    while target:
        if target in mods:
            return target
        target = target.rpartition(".")[0]
    return None


def build_graph() -> dict[str, dict[str, bool]]:
    """{module: {imported module: late}}; late is True only if every import of it is in a function."""
    mods = _modules()
    graph: dict[str, dict[str, bool]] = {m: {} for m in mods}
    for name, path in mods.items():
        pkg = name if path.stem == "__init__" else name.rpartition(".")[0]  # what a relative import is relative to
        _visit(ast.parse(path.read_text(), str(path)), False, name, pkg, mods, graph[name])
    return graph


def _visit(node: ast.AST, late: bool, name: str, pkg: str, mods: dict[str, Path], edges: dict[str, bool]) -> None:
    """Add the imports under `node` (module `name`, in package `pkg`) to `edges` {target: late}."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue  # annotation-only imports never run
        inner = late or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        targets: list[str] = []
        if isinstance(child, ast.Import):
            targets = [a.name for a in child.names]
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - child.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in child.names] + [base]
        for t in targets:
            dst = _resolve(t, mods)
            if dst and dst != name:
                edges[dst] = edges.get(dst, True) and inner
        _visit(child, inner, name, pkg, mods, edges)


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def main() -> int:
    graph = build_graph()
    if "--edges" in sys.argv:
        for src in sorted(graph):
            for dst, late in sorted(graph[src].items()):
                print(f"{src} -> {dst}{' (late)' if late else ''}")
    comps, up = cycles(graph), upward_edges(graph)
    print(f"{sum(map(len, graph.values()))} edges, {len(comps)} cycle(s), {len(up)} upward import(s)")
    for comp in comps:
        print("cycle:", " <-> ".join(comp))
    for edge in up:
        print("upward:", edge)
    return 1 if comps or up else 0


if __name__ == "__main__":
    sys.exit(main())
