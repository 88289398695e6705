"""A run directory belongs to one run (rlvr/rundir.py): a run whose config trains something else is
refused before anything is written, a finished run is reported done instead of retrained, a run may
be continued to more steps but not shortened, and `--overwrite` deletes the old run and starts afresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import helpers
from rlvr import rundir
from rlvr.cli import main
from rlvr.errors import ConfigError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return helpers.make_random_model(tmp_path_factory.mktemp("model") / "m", hidden=16)


def recipe(path: Path, model: Path, algorithm: dict, steps: int = 2) -> Path:
    return helpers.write_config(
        path,
        model,
        {"data": {"train_size": 16, "eval_size": 4}},
        algorithm=algorithm,
        train={"steps": steps, "prompts_per_step": 2, "micro_batch_size": 8},
        checkpoint={"every": 1},
    )


def train(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["train", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------ the comparison, on dicts


def test_only_keys_that_change_what_is_trained_count():
    old = {"output_dir": "a", "algorithm": {"name": "grpo", "kl_coef": 0.0}, "train": {"steps": 2, "lr": 1e-3},
           "eval": {"n": 4}, "checkpoint": {"every": 1}, "tracking": {"report_to": []}}  # fmt: skip
    same = {**old, "output_dir": "b", "train": {"steps": 9, "lr": 1e-3}, "eval": {"n": 64, "full": True},
            "checkpoint": {"every": 5}, "tracking": {"report_to": ["wandb"]}}  # fmt: skip
    assert rundir.differing(old, same) == []
    other = {**old, "algorithm": {"name": "ppo", "critic_lr": 1e-3}, "train": {"steps": 2, "lr": 1e-4}}
    assert rundir.differing(old, other) == [  # the name first, then the rest by key; a missing key is absent
        ("algorithm.name", "grpo", "ppo"),
        ("algorithm.critic_lr", rundir._ABSENT, 1e-3),
        ("algorithm.kl_coef", 0.0, rundir._ABSENT),
        ("train.lr", 1e-3, 1e-4),
    ]


def test_check_refuses_another_run_reports_a_finished_one_and_refuses_shortening(tmp_path):
    new = {"output_dir": str(tmp_path), "algorithm": {"name": "ppo"}, "train": {"steps": 4}}
    assert rundir.check(tmp_path, new) is None  # nothing there
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**new, "algorithm": {"name": "grpo"}}))
    with pytest.raises(ConfigError, match=r"^output_dir .* holds another run: .*\(algorithm\.name grpo -> ppo\); "):
        rundir.check(tmp_path, new)
    assert rundir.check(tmp_path, new, overwrite=True) is None
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(new))
    assert rundir.check(tmp_path, new) is None  # this run, not finished
    (tmp_path / "train_done.json").write_text(json.dumps({"steps": 4, "evals": []}))
    assert rundir.check(tmp_path, new) is None  # no final/: not finished
    (tmp_path / "final").mkdir()
    assert rundir.check(tmp_path, new) == {"steps": 4, "evals": []}
    assert rundir.check(tmp_path, {**new, "checkpoint": {"resume": False}}) is None  # asks to train from step 0
    assert rundir.check(tmp_path, {**new, "train": {"steps": 6}}) is None  # continued to more steps
    with pytest.raises(ConfigError, match=r"trained to step 4; train\.steps=3 cannot shorten it"):
        rundir.check(tmp_path, {**new, "train": {"steps": 3}})


# ------------------------------------------------------------ the command


def test_ppo_in_a_grpo_run_dir_is_refused_a_finished_run_is_done_and_overwrite_starts_afresh(tmp_path, model, capsys):
    grpo = recipe(tmp_path / "grpo.yaml", model, {"name": "grpo"})
    ppo = recipe(tmp_path / "ppo.yaml", model, {"name": "ppo", "critic_lr": 1e-3})
    run = tmp_path / "run"
    rc, _, err = train(capsys, grpo)
    assert rc == 0, err
    before = {p: p.read_bytes() for p in (run / "config.yaml", run / "metrics.jsonl", run / "train_done.json")}

    # before: PPO resumed from GRPO's checkpoint and died with FileNotFoundError ... pytorch_model_1.bin
    rc, out, err = train(capsys, ppo)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rlvr: config error: output_dir {run} holds another run"), err
    assert "algorithm.name grpo -> ppo" in lines[0] and "--overwrite" in lines[0]
    assert {p: p.read_bytes() for p in before} == before  # nothing written: config.yaml still GRPO's

    # before: the rerun resumed from step-1 and retrained step 2
    rc, out, err = train(capsys, grpo)
    assert rc == 0
    assert out.strip() == rundir.done_line(str(run), {"steps": 2})
    assert "resuming" not in out + err
    assert {p: p.read_bytes() for p in before} == before

    # a config.yaml written before a key existed (rollout.is_cap) is read with this version's defaults
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["rollout"]["is_cap"]
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    rc, out, _ = train(capsys, grpo)
    assert rc == 0 and "is done" in out

    rc, out, err = train(capsys, ppo, "--overwrite")
    assert rc == 0, err
    assert "rlvr: --overwrite: deleted the previous run's config.yaml" in out
    assert yaml.safe_load((run / "config.yaml").read_text())["algorithm"]["name"] == "ppo"
    assert list((run / "checkpoints" / "step-1").glob("*model_1.*"))  # the critic: PPO's own checkpoint
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_finished_run_continues_to_more_steps(tmp_path, model, capsys):
    """train.steps may grow: the run resumes from its last checkpoint, and is not 'trained' (no
    train_done.json) until it finishes again."""
    grpo = recipe(tmp_path / "grpo.yaml", model, {"name": "grpo"})
    run = tmp_path / "run"
    assert train(capsys, grpo)[0] == 0
    rc, out, err = train(capsys, grpo, "train.steps=3")
    assert rc == 0, err
    assert f"resuming from {run / 'checkpoints' / 'step-1'} (step 1)" in out
    assert json.loads((run / "train_done.json").read_text())["steps"] == 3
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
