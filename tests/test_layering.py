"""The import graph of rlvr/, algorithms/ and eval/ has no cycle and no import up the layers
(bench/import_graph.py: LAYERS, read by `ast`, late imports included)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "bench" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_import_cycles_and_no_upward_imports():
    g = load_graph_module()
    graph = g.build_graph()
    assert "rlvr.rewards.mathgrade" in graph or any(m.startswith("rlvr.rewards.") for m in graph)  # subpackages seen
    assert len(graph) > 30 and sum(map(len, graph.values())) > 80  # the graph was really read
    assert g.cycles(graph) == []
    assert g.upward_edges(graph) == []


def test_the_checker_sees_a_late_cycle_and_an_upward_import():
    """The check can fail: a late import of the trainer from the data module closes a cycle and goes up."""
    g = load_graph_module()
    graph = g.build_graph()
    graph["rlvr.data"] = {**graph["rlvr.data"], "rlvr.trainer": True}
    assert any("rlvr.data" in c and "rlvr.trainer" in c for c in g.cycles(graph))
    assert "rlvr.data -> rlvr.trainer (core -> trainer)" in g.upward_edges(graph)
    graph = g.build_graph()
    graph["rlvr.eval.runner"] = {**graph["rlvr.eval.runner"], "rlvr.algorithms.grpo": True}
    assert "rlvr.eval.runner -> rlvr.algorithms.grpo (eval -> algorithms)" in g.upward_edges(graph)


def test_late_imports_and_type_checking_blocks_are_read_as_python_runs_them(tmp_path, monkeypatch):
    """An import inside a function is an edge; one under `if TYPE_CHECKING:` is not."""
    g = load_graph_module()
    for pkg in ("rlvr", "algorithms", "eval"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "rlvr" / "a.py").write_text("def f():\n    from rlvr import b\n")
    (tmp_path / "rlvr" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rlvr import a\n"
    )
    (tmp_path / "rlvr" / "sub").mkdir()
    (tmp_path / "rlvr" / "sub" / "__init__.py").write_text("from .c import x\n")
    (tmp_path / "rlvr" / "sub" / "c.py").write_text("from ..a import f\nx = 1\n")
    monkeypatch.setattr(g, "ROOT", tmp_path)
    graph = g.build_graph()
    assert graph["rlvr.a"] == {"rlvr.b": True, "rlvr": True}  # `from rlvr import b` runs rlvr/__init__ too
    assert graph["rlvr.b"] == {}
    assert graph["rlvr.sub"] == {"rlvr.sub.c": False}
    assert graph["rlvr.sub.c"] == {"rlvr.a": False}
