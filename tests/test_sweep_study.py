"""The study in miniature's machinery (issue 15): the sweep's `recipe` axis (variants of one algorithm,
like GSPO = GRPO with policy_loss gspo, on one axis), `report.panels` (a family column and one pass@k
panel per family), and `rlvr sweep --jobs N` (shards of the grid in N processes)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import yaml

import helpers
from helpers import make_random_model

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY = ROOT / "recipes" / "sweeps" / "study_tiny.yaml"


def cli(args) -> int:
    from rlvr.cli import main

    return main([str(a) for a in args])


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolved(cfg) -> dict:
    from algorithms import build_algorithm

    d = cfg.model_dump(mode="json")
    d["algorithm"] = build_algorithm(cfg.algorithm).config.model_dump(mode="json")
    return flat(d)


STUDY_RECIPES = yaml.safe_load(STUDY.read_text())["axes"]["recipe"]


def test_the_study_covers_every_method_and_panels_every_one():
    """The study runs the six, every new policy loss and advantage, and distillation; each in one panel."""
    raw = yaml.safe_load(STUDY.read_text())
    six = {"grpo", "ppo", "reinforce_pp", "rloo", "remax", "dapo"}
    new = {"gspo", "cispo", "clip_cov", "kl_cov", "gmpo", "gpg", "opo", "passk", "passk_max"}
    assert set(STUDY_RECIPES) == six | new | {"distill"} and len(STUDY_RECIPES) == 16
    assert raw["axes"]["seed"] == [0, 1, 2] and raw["eval"]["n"] >= 64 and raw["eval"]["K"] >= 64
    members = [m for ms in raw["report"]["panels"].values() for m in ms]
    assert sorted(members) == sorted(STUDY_RECIPES)  # every method in exactly one panel


@pytest.mark.parametrize("recipe", STUDY_RECIPES)
def test_a_study_cell_is_its_recipe(tmp_path, recipe):
    """A `recipe` cell is recipes/tiny/<recipe>.yaml apart from the run dir, the seed and the sweep's eval:
    GSPO's cell trains with policy_loss gspo, passk_max's with estimator max (the algorithm axis would
    have refused them: their recipes train grpo and passk)."""
    from rlvr.config import load_config
    from rlvr.sweep import cell_overrides, cells, load_sweep, write_cell_recipe

    sweep, base = load_sweep(STUDY)
    own = resolved(load_config(ROOT / "recipes" / "tiny" / f"{recipe}.yaml"))
    for settings in [s for s in cells(sweep) if s["recipe"] == recipe]:
        out = tmp_path / f"cell-{settings['seed']}"
        cell = resolved(
            load_config(write_cell_recipe(sweep, base, settings, out), cell_overrides(sweep, settings, out))
        )
        differ = {k for k in own if cell.get(k) != own[k]}
        assert cell.keys() == own.keys() and differ <= {"output_dir", "train.seed", "eval.full"}, differ
        assert cell["train.seed"] == settings["seed"] and cell["eval.full"] is False
    if recipe == "gspo":
        assert cell["algorithm.name"] == "grpo" and cell["algorithm.policy_loss"] == "gspo"
    if recipe == "passk_max":
        assert cell["algorithm.name"] == "passk" and cell["algorithm.estimator"] == "max"


def write_sweep(path: Path, base: str, out: Path, **extra) -> Path:
    sweep = {
        "base": base,
        "output_dir": str(out),
        "axes": {"recipe": ["a", "b"], "seed": [0]},
        "overrides": ["train.steps=1"],
        "eval": {"n": 2, "problems": 4, "resamples": 50, "perplexity": False},
        **extra,
    }
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


def two_recipes(d: Path, model) -> None:
    common = {
        "data": {"train_size": 8, "eval_size": 4},
        "rollout": {"n": 2, "max_new_tokens": 4},
        "train": {"steps": 3, "prompts_per_step": 2, "lr": 1e-1},
        "checkpoint": {"every": 0},
        "reward": {"functions": [{"name": "helpers:graded"}]},
    }
    helpers.write_config(d / "a.yaml", model, common, algorithm={"name": "grpo", "policy_loss": "gspo"})
    helpers.write_config(d / "b.yaml", model, common, algorithm={"name": "rloo"})


@pytest.mark.parametrize(
    "extra,says",
    [
        ({"axes": {"recipe": ["a"], "algorithm": ["grpo"]}}, "axes.algorithm and axes.recipe both"),
        ({"axes": {"recipe": ["a", "nope"]}}, "'nope': no recipes.nope and no"),
        ({"report": {"panels": {"fam": ["a", "c"]}}}, "report.panels.fam: 'c' is not a value of axes.recipe"),
        ({"report": {"panelz": {}}}, "panelz"),
        ({"report": {"versus": "grpo"}}, "report.versus: 'grpo' is not a value of axes.recipe"),
    ],
)
def test_recipe_axis_and_panels_errors_name_the_key(tmp_path, capsys, random_model, extra, says):
    two_recipes(tmp_path, random_model)
    s = write_sweep(tmp_path / "s.yaml", "a.yaml", tmp_path / "out", **extra)
    assert cli(["sweep", s]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_jobs_runs_each_cell_once_in_its_shard_and_the_report_has_families(tmp_path, monkeypatch, capsys, random_model):
    """`--jobs 2`: two `--shard i/2` processes, cells i, i + 2, ...; each cell trained and evaluated once;
    the report orders its table by the panels, with a family column, and draws pass_at_k_panels.png."""
    two_recipes(tmp_path, random_model)
    out = tmp_path / "out"
    s = write_sweep(
        tmp_path / "s.yaml",
        "a.yaml",
        out,
        axes={"recipe": ["a", "b"], "seed": [0, 1]},
        report={"panels": {"second family": ["b"], "first family": ["a"]}},
    )
    # the children import the test reward by path (helpers:graded) and share this test's cache
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(helpers.__file__).parent), str(ROOT)]))
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    assert cli(["sweep", s, "--jobs", "2", "eval.n=2"]) == 0  # an override after an option is an override
    logs = {i: (out / f"shard-{i}.log").read_text() for i in (0, 1)}
    names = ["a-seed0", "a-seed1", "b-seed0", "b-seed1"]  # the grid's order
    for j, name in enumerate(names):
        assert (out / name / "cell_done.json").is_file() and (out / name / "eval" / "metrics.json").is_file()
        assert f"{name}: new" in logs[j % 2] and name not in logs[1 - j % 2], (name, j)
        sessions = (out / name / "sessions.jsonl").read_text().splitlines()
        assert len(sessions) == 1, sessions  # trained and evaluated once
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["family"], r["setting"], r["seeds"]) for r in rows] == [
        ("second family", "recipe=b", "2"),
        ("first family", "recipe=a", "2"),
    ]
    md = (out / "report.md").read_text()
    assert "| family | setting |" in md and "| second family | recipe=b | 2 |" in md
    assert (out / "pass_at_k_panels.png").read_bytes()[:8] == PNG_MAGIC
    # a rerun finds every cell done and runs nothing
    assert cli(["sweep", s, "--jobs", "2"]) == 0
    assert all(len((out / n / "sessions.jsonl").read_text().splitlines()) == 1 for n in names)


def test_a_failing_shard_is_named_with_its_log(tmp_path, capsys, monkeypatch, random_model):
    two_recipes(tmp_path, random_model)
    out = tmp_path / "out"
    s = write_sweep(tmp_path / "s.yaml", "a.yaml", out)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # no tests/ on the children's path: helpers:graded cannot import
    assert cli(["sweep", s, "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "sweep shard(s) [0, 1] of 2 failed" in err and str(out / "shard-0.log") in err


def test_jobs_with_another_launcher_is_refused_not_dropped(tmp_path, capsys, random_model):
    two_recipes(tmp_path, random_model)
    s = write_sweep(tmp_path / "s.yaml", "a.yaml", tmp_path / "out")
    assert cli(["sweep", s, "--jobs", "2", "--launcher", "print"]) == 2
    assert "--jobs 2 runs in-process shards; --launcher print runs its cells one at a time" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_options_are_still_refused(capsys):
    with pytest.raises(SystemExit):
        cli(["sweep", "x.yaml", "--jbos", "2"])
    assert "unrecognized arguments: --jbos 2" in capsys.readouterr().err


def test_panels_plot_one_axis_per_family(tmp_path):
    from rlvr.eval.plots import plot_pass_at_k_panels

    curve = {1: (0.3, 0.25, 0.35), 2: (0.5, 0.45, 0.55), 4: 0.7}
    p = plot_pass_at_k_panels({"x": {"m": curve}, "y": {"n": curve, "o": curve}, "z": {"p": curve}}, tmp_path / "p.png",
                              base=curve)  # fmt: skip
    assert p.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_pass_at_k_panels({}, tmp_path / "q.png")
