"""Import graph among rlvr modules (rlvr/, algorithms/, eval/), built with `ast`.

Counts module-level AND in-function (late) imports as edges; `if TYPE_CHECKING:` blocks are
skipped (they never run). Prints the edges, marks late
ones with `(late)`, and lists the strongly connected components (cycles). Exit status 1 if
any cycle exists. Usage: python bench/import_graph.py [--edges]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rlvr", "algorithms", "eval")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).glob("*.py")):
            full = "rlvr" if pkg == "rlvr" else f"rlvr.{pkg}"  # eval/, algorithms/ install as rlvr.eval, rlvr.algorithms
            name = full if path.stem == "__init__" else f"{full}.{path.stem}"
            mods[name] = path
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
        tree = ast.parse(path.read_text(), str(path))
        pkg = name if path.stem == "__init__" else name.rpartition(".")[0]

        def visit(node: ast.AST, late: bool) -> None:
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
                        graph[name][dst] = graph[name].get(dst, True) and inner
                visit(child, inner)

        visit(tree, False)
    return graph


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
    comps = cycles(graph)
    print(f"{sum(map(len, graph.values()))} edges, {len(comps)} cycle(s)")
    for comp in comps:
        print("cycle:", " <-> ".join(comp))
    return 1 if comps else 0


if __name__ == "__main__":
    sys.exit(main())
