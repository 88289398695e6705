"""`rlvr sweep` and `rlvr report`: a grid of tiny runs that is interrupted and resumed, the
per-cell eval, the aggregated report, the print launcher and the sweep file's errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import helpers
from helpers import make_random_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CELLS = ["grpo-seed0", "grpo-seed1", "rloo-seed0", "rloo-seed1"]


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def write_recipe(path: Path, model: Path) -> Path:
    return helpers.write_config(
        path,
        model,
        {
            "data": {"train_size": 8, "eval_size": 4},
            "rollout": {"n": 2, "max_new_tokens": 4},
            "train": {"steps": 3, "prompts_per_step": 2, "lr": 1e-1},
            "checkpoint": {"every": 0},
            "reward": {"functions": [{"name": "helpers:graded"}]},  # by import path, as a user would: 0, 0.5 or 1
        },
        output_dir=str(path.parent / "unused"),
    )


def write_sweep(path: Path, base: str, output_dir: Path, **extra) -> Path:
    sweep = {
        "base": base,
        "output_dir": str(output_dir),
        "axes": {"algorithm": ["grpo", "rloo"], "seed": [0, 1]},
        "overrides": ["train.steps=1"],
        "eval": {"n": 2, "problems": 4, "resamples": 50, "perplexity": False},
        **extra,
    }
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def cli(args) -> int:
    from rlvr.cli import main

    return main([str(a) for a in args])


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG_MAGIC


class Counting:
    """Stands in for rlvr.trainer.Trainer: counts constructions; can interrupt one cell's training
    (Ctrl-C right after its first step is logged)."""

    def __init__(self, real, interrupt: str | None = None):
        self.real, self.interrupt, self.made = real, interrupt, []

    def __call__(self, cfg, reward_fn=None):
        self.made.append(Path(cfg.output_dir).name)
        trainer = self.real(cfg, reward_fn=reward_fn)
        if self.interrupt and Path(cfg.output_dir).name == self.interrupt:
            log = trainer.log

            def log_then_interrupt(*args, **kwargs):
                log(*args, **kwargs)
                raise KeyboardInterrupt

            trainer.log = log_then_interrupt
        return trainer


def interrupt_eval_of(label: str):
    """A stand-in for rlvr.eval.runner.evaluate that is interrupted (Ctrl-C) for one cell's eval."""
    import rlvr.eval.runner

    real = rlvr.eval.runner.evaluate

    def evaluate(*args, **kw):
        if kw.get("label") == label:
            raise KeyboardInterrupt
        return real(*args, **kw)

    return evaluate


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, random_model):
    """A 2 x 2 sweep (algorithm x seed): the third cell is interrupted while training, then on a rerun
    the fourth while evaluating, then a third run finishes."""
    import rlvr.eval.runner
    import rlvr.trainer

    d = tmp_path_factory.mktemp("sweep")
    (d / "recipes").mkdir()
    (d / "sweeps").mkdir()
    write_recipe(d / "recipes" / "base.yaml", random_model)
    sweep_file = write_sweep(d / "sweeps" / "s.yaml", "../recipes/base.yaml", d / "out")  # relative to the sweep file
    out = d / "out"
    info: dict = {"dir": d, "out": out, "sweep_file": sweep_file}
    real = rlvr.trainer.Trainer
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLVR_CACHE", str(d / "cache"))
        # 1: Ctrl-C in the third cell's training
        counting = Counting(real, interrupt="rloo-seed0")
        mp.setattr(rlvr.trainer, "Trainer", counting)
        info["rc1"] = cli(["sweep", sweep_file])
        info["made1"] = list(counting.made)
        info["state1"] = {c: _state(out / c) for c in CELLS}
        info["mtimes"] = {c: _mtimes(out / c) for c in CELLS[:2]}
        info["cache_files"] = sorted(p.name for p in (d / "cache" / "eval").glob("*.jsonl"))
        # 2: Ctrl-C in the fourth cell's eval
        counting = Counting(real)
        mp.setattr(rlvr.trainer, "Trainer", counting)
        mp.setattr(rlvr.eval.runner, "evaluate", interrupt_eval_of("rloo-seed1"))
        try:
            info["rc2"] = cli(["sweep", sweep_file])
        except Exception as e:  # noqa: BLE001 - recorded for the tests below
            info["rc2"] = e
        info["made2"] = list(counting.made)
        info["state2"] = {c: _state(out / c) for c in CELLS}
        mp.undo()
        # 3: to the end
        mp.setenv("RLVR_CACHE", str(d / "cache"))
        counting = Counting(real)
        mp.setattr(rlvr.trainer, "Trainer", counting)
        info["rc3"] = cli(["sweep", sweep_file])
        info["made3"] = list(counting.made)
        info["state3"] = {c: _state(out / c) for c in CELLS}
    return info


def _state(cell: Path) -> str:
    from rlvr.sweep import cell_state

    return cell_state(cell)


def _mtimes(cell: Path) -> dict[str, int]:
    return {str(p.relative_to(cell)): p.stat().st_mtime_ns for p in cell.rglob("*") if p.is_file()}


def test_interrupted_sweep_resumes_without_redoing_finished_cells(sweep_run):
    out = sweep_run["out"]
    assert sweep_run["rc1"] == 130  # KeyboardInterrupt: the CLI says so and exits 130
    assert sweep_run["made1"] == ["grpo-seed0", "grpo-seed1", "rloo-seed0"]
    assert sweep_run["state1"] == {
        "grpo-seed0": "done",
        "grpo-seed1": "done",
        "rloo-seed0": "partial",
        "rloo-seed1": "new",
    }
    # the rerun retrains the interrupted cell (no checkpoint: it restarts) and trains the last one
    assert sweep_run["made2"] == ["rloo-seed0", "rloo-seed1"]
    assert sweep_run["state2"] == {
        "grpo-seed0": "done",
        "grpo-seed1": "done",
        "rloo-seed0": "done",
        "rloo-seed1": "trained",
    }
    # the cell whose eval was interrupted is only evaluated
    assert sweep_run["rc3"] == 0
    assert sweep_run["made3"] == []
    assert set(sweep_run["state3"].values()) == {"done"}
    for c in CELLS[:2]:  # nor re-evaluated: no file of theirs was touched
        assert _mtimes(out / c) == sweep_run["mtimes"][c], c
    # one base model, one eval set, one sampling setting: the base was sampled once for all cells
    assert len(sweep_run["cache_files"]) == 1
    assert len(list((sweep_run["dir"] / "cache" / "eval").glob("*.jsonl"))) == 1
    for c in CELLS:
        cell = out / c
        for f in (
            "recipe.yaml",
            "config.yaml",
            "cell.json",
            "cell_done.json",
            "train_done.json",
            "metrics.jsonl",
            "final/config.json",
            "eval/metrics.json",
            "eval/summary.md",
            "eval/samples_base.jsonl",
        ):
            assert (cell / f).is_file(), (c, f)
        assert is_png(cell / "eval" / "pass_at_k.png")
        meta = json.loads((cell / "cell.json").read_text())
        algo, seed = c.split("-seed")
        assert meta["settings"] == {"algorithm": algo, "seed": int(seed)}
        assert f"train.seed={seed}" in meta["overrides"] and f"output_dir={cell}" in meta["overrides"]
        recipe = yaml.safe_load((cell / "recipe.yaml").read_text())
        assert recipe["algorithm"] == {"name": algo}
        config = yaml.safe_load((cell / "config.yaml").read_text())
        assert config["algorithm"]["name"] == algo and config["train"]["seed"] == int(seed)
        assert config["train"]["steps"] == 1 and config["output_dir"] == str(cell)
        if c != "rloo-seed0":  # see test_restarted_cell_starts_a_fresh_metrics_log
            assert len((cell / "metrics.jsonl").read_text().splitlines()) == 1
        m = json.loads((cell / "eval" / "metrics.json").read_text())
        assert m["label"] == c and m["spec"]["n"] == 2 and m["spec"]["resamples"] == 50
        assert m["model_metrics"]["problems"] == 4 and "perplexity" not in m
        assert m["base_cache"]["hit"] is (c != "grpo-seed0")
    sweep = json.loads((out / "sweep.json").read_text())
    assert len(sweep["cells"]) == 4


def test_restarted_cell_starts_a_fresh_metrics_log(sweep_run):
    """The interrupted cell had logged its only step before Ctrl-C; it restarted from step 0 (no
    checkpoint), so its metrics.jsonl should hold that one step once."""
    rows = [json.loads(l) for l in (sweep_run["out"] / "rloo-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]


def test_interrupt_during_a_cells_eval_exits_like_an_interrupt(sweep_run):
    """Ctrl-C during a cell's eval: `rlvr sweep` should stop as it does during training (exit 130)."""
    assert sweep_run["rc2"] == 130, repr(sweep_run["rc2"])


def read_report_csv(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "report.csv") as f:
        return {r["setting"]: r for r in csv.DictReader(f)}


def test_report_aggregates_cell_metrics_over_seeds(sweep_run, capsys):
    out = sweep_run["out"]
    for f in ("report.md", "report.csv", "pass_at_k_all.png", "dse_bars.png"):
        (out / f).unlink(missing_ok=True)  # written by `rlvr sweep` already: write them again
    assert cli(["report", out]) == 0
    printed = capsys.readouterr().out
    for f in ("report.md", "report.csv"):
        assert (out / f).is_file()
    assert is_png(out / "pass_at_k_all.png") and is_png(out / "dse_bars.png")
    md = (out / "report.md").read_text()
    assert "4 finished cells" in md and md in printed
    rows = read_report_csv(out)
    assert set(rows) == {"algorithm=grpo", "algorithm=rloo"}
    for algo in ("grpo", "rloo"):
        ms = [json.loads((out / f"{algo}-seed{s}" / "eval" / "metrics.json").read_text()) for s in (0, 1)]
        p1 = [m["model_metrics"]["pass_at_k"]["1"]["mean"] for m in ms]
        p2 = [m["model_metrics"]["pass_at_k"]["2"]["mean"] for m in ms]
        base2 = [m["base_metrics"]["pass_at_k"]["2"]["mean"] for m in ms]
        dse = [m["comparison"]["dse"]["dse"] for m in ms]
        kstar = [m["comparison"]["crossover_k"] for m in ms]
        gained = [m["comparison"]["coverage"]["model_only"] for m in ms]
        lost = [m["comparison"]["coverage"]["base_only"] for m in ms]
        r = rows[f"algorithm={algo}"]
        assert int(r["seeds"]) == 2
        for name, vals, scale in (  # pass@k and dSE in points
            ("pass@1 (points)", p1, 100),
            ("pass@2 (points)", p2, 100),
            ("base pass@2 (points)", base2, 100),
            ("dSE (points)", dse, 100),
            ("gained", gained, 1),
            ("lost", lost, 1),
        ):
            sd_name = name.replace(" (points)", " sd (points)") if "points" in name else name + " sd"
            assert float(r[name]) == pytest.approx(scale * np.mean(vals), abs=1e-3), (algo, name)
            assert float(r[sd_name]) == pytest.approx(scale * np.std(vals, ddof=1), abs=1e-3), (algo, name)
        assert r["k*"] == " / ".join("none" if k is None else str(k) for k in kstar)  # each seed's, an integer
        lo, hi = float(r["dSE CI lo (points)"]), float(r["dSE CI hi (points)"])
        assert lo <= 100 * np.mean(dse) <= hi
        # every session of a cell counts: rloo-seed0 was interrupted once, rloo-seed1 stopped in its eval once
        sessions = {
            s: [json.loads(l)["seconds"] for l in (out / f"{algo}-seed{s}" / "sessions.jsonl").read_text().splitlines()]
            for s in (0, 1)
        }
        if algo == "rloo":
            assert [len(v) for v in sessions.values()] == [2, 2], sessions
        assert float(r["wall time (s)"]) == pytest.approx(np.mean([sum(v) for v in sessions.values()]), abs=1e-3)
        for m in ms:  # dSE = pass@K(base) - pass@1(cell), K = n = 2
            assert m["comparison"]["K"] == 2
            assert m["comparison"]["dse"]["dse"] == pytest.approx(
                m["base_metrics"]["pass_at_k"]["2"]["mean"] - m["model_metrics"]["pass_at_k"]["1"]["mean"]
            )
        line = next(l for l in md.splitlines() if l.startswith(f"| algorithm={algo} |"))
        assert f"{100 * np.mean(p1):.1f} ± {100 * np.std(p1, ddof=1):.1f}" in line
        assert f"{100 * np.mean(dse):.1f} ± {100 * np.std(dse, ddof=1):.1f}" in line
    # the two seeds trained different models: the sd is not trivially zero everywhere
    assert any(float(r[k]) > 0 for r in rows.values() for k in ("pass@1 sd (points)", "dSE sd (points)"))


def test_half_finished_cell_only_runs_its_eval(sweep_run, tmp_path, monkeypatch):
    """A cell whose training finished but whose eval is missing (state 'trained') is only evaluated."""
    import rlvr.trainer
    from rlvr.sweep import cell_state

    out = tmp_path / "out"
    src = sweep_run["out"] / "grpo-seed0"
    shutil.copytree(src, out / "grpo-seed0", ignore=shutil.ignore_patterns("eval", "cell_done.json"))
    cell = out / "grpo-seed0"
    assert cell_state(cell) == "trained"
    weights = {p.name: p.stat().st_mtime_ns for p in (cell / "final").iterdir()}
    sweep_file = write_sweep(
        tmp_path / "s.yaml",
        str(sweep_run["dir"] / "recipes" / "base.yaml"),
        out,
        axes={"algorithm": ["grpo"], "seed": [0]},
    )
    monkeypatch.setenv("RLVR_CACHE", str(sweep_run["dir"] / "cache"))
    counting = Counting(rlvr.trainer.Trainer)
    monkeypatch.setattr(rlvr.trainer, "Trainer", counting)
    assert cli(["sweep", sweep_file]) == 0
    assert counting.made == []  # not retrained
    assert cell_state(cell) == "done"
    assert {p.name: p.stat().st_mtime_ns for p in (cell / "final").iterdir()} == weights
    m = json.loads((cell / "eval" / "metrics.json").read_text())
    old = json.loads((src / "eval" / "metrics.json").read_text())
    assert m["label"] == "grpo-seed0" and m["base_cache"]["hit"] is True
    # the same model, base samples and eval seed: the same numbers as the first eval
    assert m["comparison"]["dse"]["dse"] == pytest.approx(old["comparison"]["dse"]["dse"])
    assert m["model_metrics"]["counts"] == old["model_metrics"]["counts"]
    assert (out / "report.md").is_file()


def test_print_launcher_prints_commands_and_runs_nothing(tmp_path, monkeypatch, capsys, random_model):
    import rlvr.trainer

    recipe = write_recipe(tmp_path / "base.yaml", random_model)
    out = tmp_path / "out"
    sweep_file = write_sweep(tmp_path / "s.yaml", "base.yaml", out, accelerate_config="recipes/accelerate/ddp.yaml")
    counting = Counting(rlvr.trainer.Trainer)
    monkeypatch.setattr(rlvr.trainer, "Trainer", counting)
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    assert cli(["sweep", sweep_file, "--launcher", "print"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert counting.made == []
    train = [l for l in printed if l.startswith("accelerate launch")]
    evals = [l for l in printed if " -m rlvr eval " in l]
    assert len(train) == len(evals) == 4
    for c, t, e in zip(CELLS, train, evals, strict=True):
        cell = out / c
        seed = c.split("-seed")[1]
        assert t.startswith(
            f"accelerate launch --config_file recipes/accelerate/ddp.yaml -m rlvr train {cell / 'recipe.yaml'} "
        )
        assert "train.steps=1" in t and f"train.seed={seed}" in t and f"output_dir={cell}" in t
        assert f"--model {cell / 'final'}" in e and f"--label {c}" in e
        for flag in ("--n=2", "--problems=4", "--resamples=50", "--no-perplexity"):
            assert flag in e, (flag, e)
        assert yaml.safe_load((cell / "recipe.yaml").read_text())["algorithm"]["name"] == c.split("-")[0]
        for f in ("cell.json", "cell_done.json", "config.yaml", "metrics.jsonl", "final", "eval"):
            assert not (cell / f).exists(), (c, f)
    assert not (out / "report.md").exists()
    assert not (tmp_path / "cache").exists()
    assert recipe.is_file()


def test_command_line_overrides_reach_every_cell(tmp_path, monkeypatch, capsys, random_model):
    """`rlvr sweep FILE key=value ...`: applied to every cell after the file's own overrides (which set
    train.steps=1 here), so the command line wins; printed in each cell's train command."""
    write_recipe(tmp_path / "base.yaml", random_model)
    out = tmp_path / "out"
    sweep_file = write_sweep(tmp_path / "s.yaml", "base.yaml", out)
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    assert cli(["sweep", sweep_file, "train.steps=3", "train.lr=0.002", "--launcher", "print"]) == 0
    train = [line for line in capsys.readouterr().out.splitlines() if line.startswith("accelerate launch")]
    assert len(train) == len(CELLS)
    for t in train:
        assert t.index("train.steps=1") < t.index("train.steps=3") and "train.lr=0.002" in t
    from rlvr.config import load_config

    cell = out / CELLS[0]
    assert not (cell / "cell.json").exists()  # print runs nothing
    from rlvr.sweep import cell_overrides, cells, load_sweep

    sweep, _ = load_sweep(sweep_file, ["train.steps=3"])
    cfg = load_config(str(cell / "recipe.yaml"), cell_overrides(sweep, cells(sweep)[0], cell))
    assert cfg.train.steps == 3


@pytest.mark.parametrize(
    "override, says",
    [
        ("seed=4", "axes.seed"),
        ("train.seed=4", "axes.seed"),
        ("output_dir=/tmp/x", "output_dir"),
        ("train.steps", "expected dotted.key=value"),
    ],
)
def test_command_line_overrides_of_the_grid_are_refused(tmp_path, capsys, random_model, override, says):
    write_recipe(tmp_path / "base.yaml", random_model)
    sweep_file = write_sweep(tmp_path / "s.yaml", "base.yaml", tmp_path / "out")
    assert cli(["sweep", sweep_file, override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rlvr: config error: sweep override") and says in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_bad_command_line_override_names_its_key(tmp_path, capsys, random_model):
    write_recipe(tmp_path / "base.yaml", random_model)
    sweep_file = write_sweep(tmp_path / "s.yaml", "base.yaml", tmp_path / "out")
    assert cli(["sweep", sweep_file, "train.stepz=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.stepz" in err[0], err


def test_unknown_key_in_sweep_file(tmp_path, capsys, random_model):
    write_recipe(tmp_path / "base.yaml", random_model)
    s = write_sweep(tmp_path / "s.yaml", "base.yaml", tmp_path / "out", axis={"seed": [0]})
    assert cli(["sweep", s]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "unknown key 'axis'" in err and "did you mean 'axes'" in err
    assert not (tmp_path / "out").exists()
    s = write_sweep(tmp_path / "s.yaml", "base.yaml", tmp_path / "out", eval={"n": 2, "samples": 4})
    assert cli(["sweep", s]) == 2
    assert "unknown key 'eval.samples'" in capsys.readouterr().err


def test_unknown_algorithm_fails_before_the_first_cell(tmp_path, capsys, monkeypatch, random_model):
    import rlvr.trainer

    counting = Counting(rlvr.trainer.Trainer)
    monkeypatch.setattr(rlvr.trainer, "Trainer", counting)
    write_recipe(tmp_path / "base.yaml", random_model)
    s = write_sweep(
        tmp_path / "s.yaml", "base.yaml", tmp_path / "out", axes={"algorithm": ["grpo", "rlooo"], "seed": [0]}
    )
    assert cli(["sweep", s]) == 2
    err = capsys.readouterr().err
    assert "rlooo" in err and "unknown algorithm" in err
    assert counting.made == []
    assert not (tmp_path / "out").exists()  # not even the first (valid) cell was started
    # an option an algorithm does not have is caught up front too
    s = write_sweep(
        tmp_path / "s.yaml",
        "base.yaml",
        tmp_path / "out",
        axes={"algorithm": ["grpo", "ppo"]},
        algorithms={"ppo": {"no_such_option": 1}},
    )
    assert cli(["sweep", s]) == 2
    assert "no_such_option" in capsys.readouterr().err
    assert counting.made == [] and not (tmp_path / "out").exists()


def test_missing_base_recipe_and_sweep_file(tmp_path, capsys):
    s = write_sweep(tmp_path / "s.yaml", "nowhere/base.yaml", tmp_path / "out")
    assert cli(["sweep", s]) == 2
    err = capsys.readouterr().err
    assert "base recipe not found" in err and "nowhere/base.yaml" in err
    assert cli(["sweep", tmp_path / "missing.yaml"]) == 2
    assert "sweep file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_empty_axis_is_an_error(tmp_path, capsys, random_model):
    write_recipe(tmp_path / "base.yaml", random_model)
    s = write_sweep(tmp_path / "s.yaml", "base.yaml", tmp_path / "out", axes={"algorithm": ["grpo"], "seed": []})
    assert cli(["sweep", s]) == 2
    assert "axes.seed has no values" in capsys.readouterr().err


def test_report_on_a_directory_without_finished_cells(tmp_path, capsys):
    (tmp_path / "cell").mkdir()
    assert cli(["report", tmp_path]) == 2  # one line, no traceback (more in test_report.py)
    assert "not a sweep directory" in capsys.readouterr().err


def test_cells_and_names():
    from rlvr.sweep import SweepConfig, cell_name, cells

    sweep = SweepConfig(base="b.yaml", output_dir="o", axes={"algorithm": ["grpo", "ppo"], "train.lr": [1e-4, 3e-4]})
    grid = cells(sweep)
    assert grid == [
        {"algorithm": "grpo", "train.lr": 1e-4},
        {"algorithm": "grpo", "train.lr": 3e-4},
        {"algorithm": "ppo", "train.lr": 1e-4},
        {"algorithm": "ppo", "train.lr": 3e-4},
    ]
    names = [cell_name(s) for s in grid]
    assert len(set(names)) == 4 and names[0] == "grpo-lr0.0001"


# ----------------------------------------------------------------------------- sweep cells = the recipes

ROOT = Path(__file__).resolve().parents[1]


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolved(cfg) -> dict:
    """The run config as trained: the `algorithm:` section with every default filled in by the
    algorithm's own config class (the trainer's resolved config.yaml does the same)."""
    from rlvr.algorithms import build_algorithm

    d = cfg.model_dump(mode="json")
    d["algorithm"] = build_algorithm(cfg.algorithm).config.model_dump(mode="json")
    return flat(d)


# What a cell may change of its algorithm's own recipe, per sweep, and nothing else: the run
# directory, the seed axis, and the sweep's `overrides:` (the sweep's `eval:` settings are
# arguments of `rlvr eval`, not keys of the training config).
SWEEPS = {
    "six_algorithms_tiny": ("tiny", {"output_dir", "train.seed", "eval.full"}),
    "six_algorithms_paper": ("paper", {"output_dir", "train.seed", "eval.full"}),
}
SWEEP_CELLS = [
    (s, a)
    for s in SWEEPS
    for a in yaml.safe_load((ROOT / "recipes" / "sweeps" / f"{s}.yaml").read_text())["axes"]["algorithm"]
]


@pytest.mark.parametrize("sweep_name,algorithm", SWEEP_CELLS, ids=[f"{s}-{a}" for s, a in SWEEP_CELLS])
def test_sweep_cell_resolves_to_the_algorithms_own_recipe(tmp_path, sweep_name, algorithm):
    """Issue 8: the headline ablation built every cell from grpo.yaml with only `algorithm:` swapped,
    so its DAPO ran without DAPO's overlong shaping (then a `reward:` key). A cell must be its algorithm's
    recipe, apart from the swept keys."""
    from rlvr.config import load_config
    from rlvr.sweep import cell_overrides, cells, load_sweep, write_cell_recipe

    recipe_dir, allowed = SWEEPS[sweep_name]
    assert len(SWEEP_CELLS) == 12 and {a for s, a in SWEEP_CELLS if s == sweep_name} == {
        "grpo",
        "ppo",
        "rloo",
        "reinforce_pp",
        "remax",
        "dapo",
    }
    sweep, base = load_sweep(ROOT / "recipes" / "sweeps" / f"{sweep_name}.yaml")
    own = resolved(load_config(ROOT / "recipes" / recipe_dir / f"{algorithm}.yaml"))
    grid = [s for s in cells(sweep) if s["algorithm"] == algorithm]
    assert grid
    for settings in grid:
        out = tmp_path / f"cell-{settings['seed']}"
        recipe = write_cell_recipe(sweep, base, settings, out)
        cell = resolved(load_config(recipe, cell_overrides(sweep, settings, out)))
        assert cell.keys() == own.keys()
        differ = {k for k in own if cell[k] != own[k]}
        assert differ <= allowed, {k: (cell[k], own[k]) for k in differ - allowed}
        assert cell["output_dir"] == str(out) and cell["train.seed"] == settings["seed"]
        if "eval.full" in allowed:
            assert cell["eval.full"] is False  # the sweep's own eval is the one (rlvr.sweep.cell_overrides)
    if algorithm == "dapo":  # the defect itself: DAPO's overlong shaping reaches the cell
        assert cell["algorithm.overlong_buffer"] == own["algorithm.overlong_buffer"] > 0


def test_each_model_of_a_sweep_is_evaluated_once(tmp_path, monkeypatch, capsys, random_model):
    """Issue 13: the paper sweep's cells inherited the recipes' eval.full: true (n = 256) and the sweep
    then evaluated the same model again at n = 256. A cell of a recipe with eval.full: true gets one full
    eval, the sweep's; the paper sweep's is the paper's pass@256; asking a sweep for eval.full is refused."""
    import rlvr.eval
    import rlvr.eval.runner
    from rlvr.config import load_config
    from rlvr.sweep import load_sweep

    paper, _ = load_sweep(ROOT / "recipes" / "sweeps" / "six_algorithms_paper.yaml")
    assert paper.eval.n == paper.eval.K == load_config(ROOT / "recipes" / "paper" / "grpo.yaml").eval.final_n == 256

    recipe = write_recipe(tmp_path / "base.yaml", random_model)
    raw = yaml.safe_load(recipe.read_text())
    raw["eval"] = {**raw["eval"], "full": True, "n": 2}
    recipe.write_text(yaml.safe_dump(raw))
    sweep_file = write_sweep(tmp_path / "s.yaml", "base.yaml", tmp_path / "out", axes={"seed": [0]})
    full_evals = []  # one per call of rlvr.eval's evaluate that writes an eval directory (a full eval)

    def spy(real):
        def evaluate(*args, **kw):
            if kw.get("out_dir") is not None:
                full_evals.append(kw.get("label"))
            return real(*args, **kw)

        return evaluate

    monkeypatch.setattr(rlvr.eval, "evaluate", spy(rlvr.eval.evaluate))  # the trainer's full eval
    monkeypatch.setattr(rlvr.eval.runner, "evaluate", spy(rlvr.eval.runner.evaluate))  # the sweep's
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    assert cli(["sweep", sweep_file]) == 0
    assert full_evals == ["seed0"]
    assert cli(["sweep", sweep_file, "eval.full=true"]) == 2
    assert "the training run's full eval is off in every cell" in capsys.readouterr().err


def test_recipes_map_algorithm_options_on_top_and_sibling_lookup(tmp_path):
    from rlvr.sweep import cell_recipe, load_sweep

    (tmp_path / "r").mkdir()
    helpers.write_config(tmp_path / "r" / "grpo.yaml", "tiny", algorithm={"name": "grpo", "scale": "none"})
    helpers.write_config(
        tmp_path / "r" / "ppo.yaml", "tiny", algorithm={"name": "ppo", "critic_lr": 1e-3, "vf_coef": 0.5}
    )
    helpers.write_config(
        tmp_path / "elsewhere.yaml", "tiny", algorithm={"name": "dapo", "max_gen_batches": 4}, reward={"workers": 3}
    )
    s = write_sweep(
        tmp_path / "s.yaml",
        "r/grpo.yaml",
        tmp_path / "out",
        axes={"algorithm": ["grpo", "ppo", "dapo", "rloo"], "seed": [0]},
        recipes={"dapo": "elsewhere.yaml"},
        algorithms={"ppo": {"critic_lr": 2e-3}},
    )
    sweep, base = load_sweep(s)
    got = {a: cell_recipe(sweep, base, {"algorithm": a, "seed": 0}) for a in ("grpo", "ppo", "dapo", "rloo")}
    assert got["grpo"][0]["algorithm"] == {"name": "grpo", "scale": "none"} and got["grpo"][1] == base
    # the sibling ppo.yaml, with the sweep's option on top of the recipe's
    assert got["ppo"][0]["algorithm"] == {"name": "ppo", "critic_lr": 2e-3, "vf_coef": 0.5}
    assert got["ppo"][1] == tmp_path / "r" / "ppo.yaml"
    # the recipes: map, relative to the sweep file; its reward section comes along
    assert got["dapo"][0]["algorithm"] == {"name": "dapo", "max_gen_batches": 4}
    assert got["dapo"][0]["reward"]["workers"] == 3 and got["dapo"][1] == tmp_path / "elsewhere.yaml"
    # no recipe of its own: the base with the algorithm section replaced whole
    assert got["rloo"][0]["algorithm"] == {"name": "rloo"} and got["rloo"][1] == base


def test_recipe_for_the_wrong_algorithm_and_bad_cells_fail_at_load(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    helpers.write_config(tmp_path / "r" / "grpo.yaml", "tiny")
    helpers.write_config(tmp_path / "r" / "rloo.yaml", "tiny", algorithm={"name": "grpo"})  # misnamed
    s = write_sweep(tmp_path / "s.yaml", "r/grpo.yaml", tmp_path / "out", axes={"algorithm": ["rloo"]})
    assert cli(["sweep", s]) == 2
    err = capsys.readouterr().err
    assert "rloo.yaml trains 'grpo', not 'rloo'" in err
    s = write_sweep(
        tmp_path / "s.yaml",
        "r/grpo.yaml",
        tmp_path / "out",
        axes={"algorithm": ["ppo"]},
        recipes={"ppo": "r/grpo.yaml"},
    )
    assert cli(["sweep", s]) == 2
    assert "grpo.yaml trains 'grpo', not 'ppo'" in capsys.readouterr().err
    # a cell that cannot run (a group baseline with one sample per prompt) stops the sweep before any cell
    s = write_sweep(
        tmp_path / "s.yaml",
        "r/grpo.yaml",
        tmp_path / "out",
        axes={"algorithm": ["remax", "grpo"], "seed": [0]},
        overrides=["rollout.n=1"],
    )
    assert cli(["sweep", s]) == 2
    err = capsys.readouterr().err
    assert "cell grpo-seed0" in err and "algorithm grpo needs rollout.n >= 2" in err
    assert not (tmp_path / "out").exists()
