"""Issue 9, part 3: one eval. Training, `rlvr eval` and sweep cells run `rlvr.eval.evaluate` with
one settings type; its rows do not depend on the number of processes, and the base cache key
changes exactly when the rows would."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_random_model

ROOT = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.rollout import HFEngine

    path = make_random_model(tmp_path_factory.mktemp("model") / "m")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield HFEngine(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), batch_size=6), path
    torch.set_num_threads(threads)


def problems(k: int = 5):
    from rlvr.tasks import Problem

    return [Problem(id=f"p{i}", prompt=f"{i} + {i + 3} =", answer=str(2 * i + 3)) for i in range(k)]


def parity_reward(problems, completions):
    return [float((sum(map(ord, c)) + len(p.prompt)) % 3 == 0) for p, c in zip(problems, completions, strict=True)]


def settings(**kw):
    from rlvr.eval import EvalSettings

    return EvalSettings(
        **{
            "n": 3,
            "max_new_tokens": 5,
            "temperature": 1.0,
            "top_p": 1.0,
            "batch_size": 6,
            "resamples": 20,
            "perplexity": False,
            **kw,
        }
    )


def rows_with(engine, world: int, **kw) -> list[tuple]:
    """Every process's share of the samples, drawn one process after the other here, gathered."""
    from rlvr.eval.runner import _in_order, sample_rows
    from rlvr.rewards import RewardRunner

    probs = problems()
    rows = [
        r
        for rank in range(world)
        for r in sample_rows(
            engine, probs, settings(**kw), RewardRunner(parity_reward), progress=False, rank=rank, world=world
        )
    ]
    return [(r["problem_id"], r["sample"], r["text"]) for r in _in_order(rows, [p.id for p in probs])]


def test_rows_do_not_depend_on_the_number_of_processes(engine):
    eng, _ = engine
    one = rows_with(eng, 1)
    assert len(one) == 15 and len({t for _, _, t in one}) > 5  # 5 problems x 3 random samples
    for world in (2, 3, 7):  # 7 > the 3 seeded calls: some processes draw nothing
        assert rows_with(eng, world) == one, world
    assert rows_with(eng, 1) == one  # and drawing again draws the same


def test_cache_key_differs_exactly_when_the_rows_differ(engine):
    from rlvr.eval.runner import base_cache_path

    eng, path = engine
    probs = problems()
    key = lambda **kw: base_cache_path(str(path), probs, settings(**kw), engine_batch=6)  # noqa: E731
    one = rows_with(eng, 1)
    # other draws: another seed, or other problems sharing a seeded call (batch_size // n)
    for change in ({"seed": 1}, {"batch_size": 3}):
        assert rows_with(eng, 1, **change) != one, change
        assert key(**change) != key(), change
    # the same draws: the metric-only settings and any number of processes share one key
    assert rows_with(eng, 2, K=2, resamples=50, threshold=0.5) == one
    assert key(K=2, resamples=50, threshold=0.5, perplexity=True) == key()


def test_one_settings_type_for_config_cli_and_sweep():
    from rlvr.config import EvalConfig, RolloutConfig
    from rlvr.eval import EvalSettings
    from rlvr.eval.settings import EvalOverrides, add_arguments, overrides_from_args, to_arguments
    from rlvr.sweep import SweepConfig

    # the run config's eval: section is EvalSettings plus when to evaluate: the same defaults
    assert issubclass(EvalConfig, EvalSettings)
    cfg, plain = EvalConfig(), EvalSettings()
    for name in EvalSettings.model_fields:
        assert getattr(cfg, name) == getattr(plain, name), name
    assert (plain.temperature, plain.top_p) == (0.6, 0.95)  # the paper's protocol, one default
    # a sweep's eval: section is every field, each optional
    assert SweepConfig.model_fields["eval"].annotation is EvalOverrides
    assert set(EvalOverrides.model_fields) == set(EvalSettings.model_fields)
    assert EvalOverrides().model_dump(exclude_none=True) == {}
    # rlvr eval's flags: one per field, unset = the config's; the sweep's print launcher writes the same flags
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--n", "8", "--top-p", "0.5", "--no-perplexity", "--K", "4"])
    over = overrides_from_args(args)
    assert over == {"n": 8, "top_p": 0.5, "perplexity": False, "K": 4}
    assert overrides_from_args(parser.parse_args(to_arguments(over))) == over
    # resolution: the config's values, rollout's lengths, final_n for the full eval, then the overrides
    e = EvalConfig(n=4, final_n=16, temperature=1.0)
    r = RolloutConfig(max_new_tokens=7, generation_batch_size=32)
    assert e.settings(r).model_dump() == {
        **plain.model_dump(),
        "n": 4,
        "temperature": 1.0,
        "max_new_tokens": 7,
        "batch_size": 32,
    }
    assert e.settings(r, final=True).n == 16
    assert e.settings(r, final=True, n=2, seed=None).n == 2


def test_sweep_cell_calls_evaluate_and_ctrl_c_stays_an_interrupt(tmp_path, monkeypatch):
    import rlvr.cli
    import rlvr.eval.runner
    from rlvr import sweep
    from rlvr.eval.settings import EvalOverrides

    cell = tmp_path / "cell"
    (cell / "final").mkdir(parents=True)
    import helpers

    helpers.write_config(cell / "config.yaml", "tiny")
    seen = {}

    def interrupted(cfg, **kw):
        seen.update(kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(rlvr.cli, "main", lambda *a, **k: pytest.fail("a sweep cell must not go through the CLI"))
    monkeypatch.setattr(rlvr.eval.runner, "evaluate_run", interrupted)
    s = sweep.SweepConfig(base="b.yaml", output_dir=str(tmp_path), axes={"seed": [0]}, eval=EvalOverrides(n=2))
    with pytest.raises(KeyboardInterrupt):
        sweep.run_cell_inprocess(s, cell / "config.yaml", [], cell, train=False)
    assert seen["overrides"] == {"n": 2} and seen["label"] == "cell" and seen["model"] == str(cell / "final")


@pytest.mark.distributed
def test_two_process_eval_draws_the_one_process_rows(tmp_path, engine):
    """`evaluate` under accelerate with 2 processes: the base cache it writes is the file (same key,
    same rows) that one process writes."""
    from rlvr.eval import evaluate
    from rlvr.eval.runner import read_jsonl
    from rlvr.rewards import RewardRunner

    eng, path = engine
    one = evaluate(
        problems(),
        settings(),
        RewardRunner(parity_reward),
        model=eng,
        base=str(path),
        model_is_base=True,
        progress=False,
    )
    assert one["base_cache"]["hit"] is False
    cache = Path(one["base_cache"]["path"])
    rows = read_jsonl(cache)
    cache.unlink()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29531",
        str(ROOT / "eval_worker.py"),
        str(path),
        str(tmp_path / "two.json"),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["world"] == 2 and two["hit"] is False
    assert two["cache"] == str(cache)  # the same key
    assert two["rows"] == rows  # and the same rows, in the same order
    assert two["counts"] == one["model_metrics"]["counts"]
