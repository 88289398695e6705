"""`rlvr eval` end to end: hand-made completions with known correctness (no sampling), the
sampling path with its base cache and perplexity cross-terms, and the trainer's eval hooks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import helpers
from helpers import make_random_model

TASK = helpers.TASK
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# 6 problems x 4 samples; c = correct samples per problem, chosen so that every coverage
# class occurs, the model wins at k = 1 and the base catches up at k = 2.
BASE_C = [0, 1, 2, 4, 0, 3]
MODEL_C = [0, 4, 0, 4, 3, 0]
N = 4


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    return make_random_model(tmp_path_factory.mktemp("model2") / "m", seed=1)


def write_config(path: Path, model: str | Path = "tiny", **sections) -> Path:
    return helpers.write_config(path, model, {"data": {"eval_size": 6}, "train": {"prompts_per_step": 2}}, **sections)


def eval_problems(cfg_path: Path):
    from rlvr.config import load_config
    from rlvr.data import load_problems

    return load_problems(load_config(cfg_path).data)[1]


def write_samples(path: Path, ids: list[str], cs: list[int], ns: list[int] | int = N) -> Path:
    """JSONL with len(ids) problems, ns[i] samples each, the first cs[i] of them correct."""
    ns = [ns] * len(ids) if isinstance(ns, int) else ns
    with open(path, "w") as f:
        for pid, c, n in zip(ids, cs, ns, strict=True):
            for j in range(n):
                ok = j < c
                f.write(
                    json.dumps(
                        {
                            "problem_id": pid,
                            "sample": j,
                            "text": f"so \\boxed{{{j if ok else 99}}}",
                            "reward": 1.0 if ok else 0.0,
                        }
                    )
                    + "\n"
                )
    return path


def chen(n: int, c: int, k: int) -> float:
    """pass@k = 1 - C(n-c, k) / C(n, k), from the definition."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_chen(cs: list[int], k: int, n: int = N) -> float:
    return sum(chen(n, c, k) for c in cs) / len(cs)


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG_MAGIC


def run_cli(args: list[str]) -> int:
    from rlvr.cli import main

    return main([str(a) for a in args])


# ---------------------------------------------------------------- offline samples


@pytest.fixture(scope="module")
def offline_eval(tmp_path_factory):
    """`rlvr eval --samples --base-samples --config` on the hand-made completions."""
    d = tmp_path_factory.mktemp("offline")
    cfg = write_config(d / "run.yaml")
    ids = [p.id for p in eval_problems(cfg)]
    assert len(ids) == 6
    model = write_samples(d / "model.jsonl", ids, MODEL_C)
    base = write_samples(d / "base.jsonl", ids, BASE_C)
    out = d / "eval"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLVR_CACHE", str(d / "cache"))
        rc = run_cli(
            [
                "eval",
                "--samples",
                model,
                "--base-samples",
                base,
                "--config",
                cfg,
                "--out",
                out,
                "--resamples",
                "50",
                "--label",
                "trained",
            ]
        )
    assert rc == 0
    return {
        "out": out,
        "ids": ids,
        "metrics": json.loads((out / "metrics.json").read_text()),
        "summary": (out / "summary.md").read_text(),
    }


def test_offline_pass_at_k_matches_chen_by_hand(offline_eval):
    m = offline_eval["metrics"]
    model, base = m["model_metrics"], m["base_metrics"]
    assert sorted(int(k) for k in model["pass_at_k"]) == [1, 2, 4]
    # a few entries fully by hand: c=1 of n=4 at k=2 is 1 - C(3,2)/C(4,2) = 1/2, c=2 is 1 - 1/6
    assert chen(4, 1, 2) == pytest.approx(0.5) and chen(4, 2, 2) == pytest.approx(5 / 6)
    assert base["pass_at_k"]["2"]["mean"] == pytest.approx((0 + 0.5 + 5 / 6 + 1 + 0 + 1) / 6)
    assert model["pass_at_k"]["1"]["mean"] == pytest.approx(2.75 / 6)
    assert model["pass_at_k"]["2"]["mean"] == pytest.approx(3 / 6)
    assert base["pass_at_k"]["4"]["mean"] == pytest.approx(4 / 6)
    for k in (1, 2, 4):
        assert model["pass_at_k"][str(k)]["mean"] == pytest.approx(mean_chen(MODEL_C, k))
        assert base["pass_at_k"][str(k)]["mean"] == pytest.approx(mean_chen(BASE_C, k))
        for side in (model, base):
            e = side["pass_at_k"][str(k)]
            assert 0.0 <= e["lo"] <= e["mean"] + 1e-12 and e["mean"] - 1e-12 <= e["hi"] <= 1.0
    assert model["avg_at_n"] == pytest.approx(2.75 / 6)
    assert model["counts"] == {"n": [4] * 6, "c": MODEL_C}
    assert base["counts"] == {"n": [4] * 6, "c": BASE_C}
    assert model["problems"] == 6 and model["samples"] == 24 and model["n_min"] == model["n_max"] == 4


def test_offline_dse_crossover_coverage_histogram(offline_eval):
    comp = offline_eval["metrics"]["comparison"]
    # K = 256 (the config default) clipped to the 4 samples per problem
    assert comp["K"] == 4 and comp["dse"]["K"] == 4
    assert comp["dse"]["dse"] == pytest.approx(4 / 6 - 2.75 / 6)
    assert comp["dse"]["base_pass_at_K"] == pytest.approx(4 / 6)
    assert comp["dse"]["model_pass_at_1"] == pytest.approx(2.75 / 6)
    assert comp["dse"]["lo"] <= comp["dse"]["dse"] <= comp["dse"]["hi"]
    assert any("K=256" in n and "K=4" in n for n in comp["notes"]), comp["notes"]
    # the model leads at k=1 (2.75/6 > 2.5/6); at k=2 the base is ahead (3.33/6 > 3/6)
    assert comp["crossover_k"] == 2
    cov = comp["coverage"]
    ids = offline_eval["ids"]
    assert (cov["both"], cov["base_only"], cov["model_only"], cov["neither"]) == (2, 2, 1, 1)
    assert cov["ids"] == {
        "both": [ids[1], ids[3]],
        "base_only": [ids[2], ids[5]],
        "model_only": [ids[4]],
        "neither": [ids[0]],
    }
    assert cov["jaccard"] == pytest.approx(2 / 5)
    m = offline_eval["metrics"]
    hist_m, hist_b = m["model_metrics"]["accuracy_histogram"], m["base_metrics"]["accuracy_histogram"]
    assert {k: v for k, v in hist_m.items() if v} == {"0": 3, "1": 2, "(0.7,0.8]": 1}
    assert {k: v for k, v in hist_b.items() if v} == {"0": 2, "1": 1, "(0.2,0.3]": 1, "(0.4,0.5]": 1, "(0.7,0.8]": 1}
    assert sum(hist_m.values()) == sum(hist_b.values()) == 6


def test_offline_writes_samples_plots_and_summary(offline_eval):
    from rlvr.eval.runner import read_jsonl

    out, s = offline_eval["out"], offline_eval["summary"]
    model_rows = read_jsonl(out / "samples_trained.jsonl")
    base_rows = read_jsonl(out / "samples_base.jsonl")
    assert len(model_rows) == len(base_rows) == 24
    assert sum(r["correct"] for r in model_rows) == sum(MODEL_C)
    assert {r["problem_id"] for r in base_rows} == set(offline_eval["ids"])
    assert all(r["prompt"] and r["answer"] for r in model_rows)
    assert is_png(out / "pass_at_k.png") and is_png(out / "accuracy_histogram.png")
    assert not (out / "perplexity.png").exists()  # no models, no perplexity
    # the numbers, in percent
    assert "pass@1: base 41.7% -> trained 45.8%" in s
    assert "pass@4: base 66.7%, trained 50.0%" in s
    assert "dSE = pass@4(base) - pass@1(trained) = 20.8 points" in s
    assert "from k = 2 on" in s
    assert "both 2, base only 2, trained only 1, neither 1" in s
    assert "> note:" in s and "clipped to K=4" in s
    assert "6 problems, n = 4 samples each" in s


def test_samples_with_different_n_per_problem(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    ids = [p.id for p in eval_problems(cfg)]
    ns = [4, 5, 6, 4, 8, 4]
    model = write_samples(tmp_path / "model.jsonl", ids, [1, 0, 6, 4, 2, 0], ns)
    base = write_samples(tmp_path / "base.jsonl", ids, [0, 5, 3, 1, 8, 0], [6, 5, 4, 4, 8, 4])
    out = tmp_path / "eval"
    assert (
        run_cli(
            ["eval", "--samples", model, "--base-samples", base, "--config", cfg, "--out", out, "--resamples", "20"]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_metrics"]["n_min"] == 4 and m["model_metrics"]["n_max"] == 8
    assert m["model_metrics"]["counts"]["n"] == ns
    assert sorted(int(k) for k in m["model_metrics"]["pass_at_k"]) == [1, 2, 4]  # up to the smallest n
    want = np.mean([chen(n, c, 2) for n, c in zip(ns, [1, 0, 6, 4, 2, 0], strict=True)])
    assert m["model_metrics"]["pass_at_k"]["2"]["mean"] == pytest.approx(want)
    assert m["comparison"]["K"] == 4
    assert "n = 4..8 samples each" in (out / "summary.md").read_text()


def test_samples_merged_from_two_files(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    ids = [p.id for p in eval_problems(cfg)]
    a = write_samples(tmp_path / "a.jsonl", ids, [1, 0, 2, 0, 0, 1], 2)
    b = write_samples(tmp_path / "b.jsonl", ids, [0, 0, 2, 1, 0, 0], 2)
    out = tmp_path / "eval"
    assert (
        run_cli(
            [
                "eval",
                "--samples",
                a,
                "--samples",
                b,
                "--base",
                "none",
                "--config",
                cfg,
                "--out",
                out,
                "--resamples",
                "20",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_metrics"]["counts"] == {"n": [4] * 6, "c": [1, 0, 4, 1, 0, 1]}
    assert "comparison" not in m and "base_metrics" not in m


def test_rows_without_reward_are_scored_by_the_run_config_verifier(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    problems = eval_problems(cfg)
    path = tmp_path / "model.jsonl"
    with open(path, "w") as f:
        for i, p in enumerate(problems):  # problem i: i % 3 right answers of 2, found by id or by prompt
            for j in range(2):
                text = p.answer if j < i % 3 else str(int(p.answer) + 1)
                key = {"problem_id": p.id} if j == 0 else {"prompt": p.prompt}
                f.write(json.dumps({**key, "completion": text}) + "\n")
    out = tmp_path / "eval"
    assert (
        run_cli(["eval", "--samples", path, "--base", "none", "--config", cfg, "--out", out, "--resamples", "20"]) == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_metrics"]["counts"] == {"n": [2] * 6, "c": [0, 1, 2, 0, 1, 2]}
    rows = [json.loads(l) for l in (out / "samples_model.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == [p.id for p in problems for _ in range(2)]
    assert all(r["reward"] in (0.0, 1.0) and r["correct"] == (r["reward"] == 1.0) for r in rows)


def test_samples_row_with_unknown_problem_names_file_and_line(tmp_path, capsys):
    cfg = write_config(tmp_path / "run.yaml")
    ids = [p.id for p in eval_problems(cfg)]
    bad = write_samples(tmp_path / "model.jsonl", ids, [1] * 6, 2)
    lines = bad.read_text().splitlines()
    lines.insert(4, json.dumps({"problem_id": "no-such-problem", "text": "x", "reward": 1.0}))
    bad.write_text("\n".join(lines) + "\n")
    # one line, no traceback (tests/test_bad_inputs.py)
    assert run_cli(["eval", "--samples", bad, "--base", "none", "--config", cfg, "--out", tmp_path / "eval"]) == 2
    assert "model.jsonl line 5: problem_id 'no-such-problem'" in capsys.readouterr().err
    # the same for the base's file, and for a line that is not JSON
    good = write_samples(tmp_path / "good.jsonl", ids, [1] * 6, 2)
    (tmp_path / "base.jsonl").write_text(good.read_text() + "{not json\n")
    assert (
        run_cli(
            [
                "eval",
                "--samples",
                good,
                "--base-samples",
                tmp_path / "base.jsonl",
                "--config",
                cfg,
                "--out",
                tmp_path / "eval",
            ]
        )
        == 2
    )
    assert "base.jsonl line 13: not JSON" in capsys.readouterr().err


def test_missing_samples_file_is_an_error(tmp_path, capsys):
    cfg = write_config(tmp_path / "run.yaml")
    missing = tmp_path / "nowhere.jsonl"
    assert run_cli(["eval", "--samples", missing, "--base", "none", "--config", cfg, "--out", tmp_path / "eval"]) == 2
    assert "nowhere.jsonl" in capsys.readouterr().err  # one line, no traceback (tests/test_bad_inputs.py)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_eval_without_model_or_samples_is_an_error(tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    with pytest.raises(ValueError, match="--model or --samples"):
        run_cli(["eval", "--base", "none", "--config", cfg, "--out", tmp_path / "eval"])


# ---------------------------------------------------------------- sampling path


def parity_reward(problems, completions):
    """Deterministic in the completion and the problem: about a third of random texts pass."""
    return [float((sum(map(ord, c)) + len(p.prompt)) % 3 == 0) for p, c in zip(problems, completions, strict=True)]


def test_sampling_path_base_cache_hit_and_miss(tmp_path, monkeypatch, random_model, other_model):
    import rlvr.eval.runner as runner
    from rlvr.rewards import RewardRunner

    problems = eval_problems(write_config(tmp_path / "run.yaml", random_model))[:3]
    calls: list[str] = []
    real = runner.sample_rows

    def counting(engine, probs, spec, score, **kw):
        calls.append(kw.get("desc", ""))
        return real(engine, probs, spec, score, **kw)

    monkeypatch.setattr(runner, "sample_rows", counting)

    def go(out, **spec_kw):
        settings = runner.EvalSettings(**{"n": 4, "max_new_tokens": 6, "resamples": 20, "perplexity": False, **spec_kw})
        calls.clear()
        r = runner.evaluate(
            problems,
            settings,
            RewardRunner(parity_reward),
            model=str(other_model),
            base=str(random_model),
            out_dir=tmp_path / out,
            progress=False,
        )
        return r, list(calls)

    first, c1 = go("e1", perplexity=True)
    out = tmp_path / "e1"
    assert c1 == ["sampling model", "sampling base"]
    assert first["base_cache"]["hit"] is False
    cache = Path(first["base_cache"]["path"])
    assert cache.is_file() and cache.is_relative_to(tmp_path / "cache")
    assert cache == runner.base_cache_path(str(random_model), problems, runner.EvalSettings(n=4, max_new_tokens=6))
    for f in ("metrics.json", "summary.md", "samples_model.jsonl", "samples_base.jsonl"):
        assert (out / f).is_file(), f
    for f in ("pass_at_k.png", "accuracy_histogram.png", "perplexity.png"):
        assert is_png(out / f), f
    rows = runner.read_jsonl(out / "samples_model.jsonl")
    assert len(rows) == 12 and {r["sample"] for r in rows} == {0, 1, 2, 3}
    assert set(rows[0]) >= set(runner.SAMPLE_KEYS)
    for r in rows:  # scored by our reward
        assert r["reward"] == parity_reward([next(p for p in problems if p.id == r["problem_id"])], [r["text"]])[0]
        assert r["correct"] == (r["reward"] >= 1.0)
    assert runner.read_jsonl(cache) == runner.read_jsonl(out / "samples_base.jsonl")
    m = json.loads((out / "metrics.json").read_text())
    assert m["base_cache"] == {"path": str(cache), "hit": False}
    assert m["comparison"]["K"] == 4

    # the same base, problems and sampling: a hit, the base is not sampled again (settings that do not
    # change the samples, like K and the bootstrap, do not matter)
    second, c2 = go("e2", K=2, resamples=30)
    assert c2 == ["sampling model"]
    assert second["base_cache"] == {"path": str(cache), "hit": True}
    assert second["base_metrics"]["counts"] == first["base_metrics"]["counts"]
    assert second["comparison"]["K"] == 2
    assert runner.read_jsonl(tmp_path / "e2" / "samples_base.jsonl") == runner.read_jsonl(cache)

    # other sampling settings: misses, each with its own cache file
    for out_name, kw in (("e3", {"temperature": 0.9}), ("e4", {"n": 2})):
        r, c = go(out_name, **kw)
        assert r["base_cache"]["hit"] is False, kw
        assert c == ["sampling model", "sampling base"], kw
        assert Path(r["base_cache"]["path"]) != cache and Path(r["base_cache"]["path"]).is_file()
    assert len(list((tmp_path / "cache" / "eval").glob("base-*.jsonl"))) == 3


def test_base_cache_key_depends_on_problems_and_model(tmp_path, random_model, other_model):
    from rlvr.eval.runner import EvalSettings, base_cache_path

    problems = eval_problems(write_config(tmp_path / "run.yaml", random_model))
    spec = EvalSettings(n=4)
    p = base_cache_path(str(random_model), problems[:3], spec)
    assert p == base_cache_path(str(random_model), problems[:3], EvalSettings(n=4))
    assert p.parent == tmp_path / "cache" / "eval"
    assert p != base_cache_path(str(random_model), problems[:2], spec)
    assert p != base_cache_path(str(other_model), problems[:3], spec)
    # everything that decides the samples: the sampling settings and seed, which problems share a
    # seeded generate() call (batch_size // n), and the dtype and device type they are drawn in
    for change in (
        {"n": 8},
        {"temperature": 1.0},
        {"top_p": 0.5},
        {"max_new_tokens": 5},
        {"seed": 1},
        {"batch_size": 8},
    ):
        assert p != base_cache_path(str(random_model), problems[:3], EvalSettings(**{"n": 4, **change})), change
    for how in ({"dtype": "bfloat16"}, {"device": "cuda"}, {"engine_batch": 2}):
        assert p != base_cache_path(str(random_model), problems[:3], spec, **how), how
    for same in ({"K": 2}, {"resamples": 10}, {"perplexity": False}, {"threshold": 0.5}, {"ppl_per_problem": 1}):
        assert p == base_cache_path(str(random_model), problems[:3], EvalSettings(**{"n": 4, **same})), same
    assert p == base_cache_path(str(random_model), problems[:3], spec, dtype="float32", device="cpu", engine_batch=256)


def test_perplexity_cross_terms_with_sampling(tmp_path, random_model, other_model):
    from rlvr.eval import EvalSettings, evaluate
    from rlvr.rewards import RewardRunner

    problems = eval_problems(write_config(tmp_path / "run.yaml", random_model))[:2]
    settings = EvalSettings(n=4, max_new_tokens=6, resamples=20, ppl_per_problem=2)
    r = evaluate(
        problems,
        settings,
        RewardRunner(parity_reward),
        model=str(other_model),
        base=str(random_model),
        out_dir=tmp_path / "e",
        progress=False,
    )
    ppl = r["perplexity"]
    assert set(ppl["median"]) == {"base_on_base", "base_on_model", "model_on_model"}
    for name, vals in ppl["values"].items():
        assert 0 < len(vals) <= 2 * len(problems), name  # ppl_per_problem samples of each problem
        assert all(math.isfinite(v) and v > 0 for v in vals), (name, vals)
        assert math.isfinite(ppl["median"][name]) and ppl["median"][name] > 0
    # two different random models: a model's own samples are more likely under it than under the other
    assert ppl["values"]["base_on_model"] != ppl["values"]["model_on_model"]
    assert all(math.isfinite(v) and v > 0 for v in ppl["entropy"].values())
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["perplexity"]["median"] == pytest.approx(ppl["median"])
    s = (tmp_path / "e" / "summary.md").read_text()
    assert "PPL_base(Y_base)" in s and "PPL_model(Y_model)" in s
    assert is_png(tmp_path / "e" / "perplexity.png")


def test_cli_eval_sampling_with_model_finds_run_config(tmp_path, monkeypatch, random_model, other_model):
    """`rlvr eval --model RUN/final` reads RUN/config.yaml for data and base, writes RUN/eval."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(other_model, run / "final")
    write_config(run / "config.yaml", random_model, reward={"functions": [{"name": "helpers:parity"}]})
    assert (
        run_cli(
            [
                "eval",
                "--model",
                run / "final",
                "--n",
                "2",
                "--problems",
                "2",
                "--resamples",
                "20",
                "--no-perplexity",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["label"] == "model" and m["base_path"] == str(random_model)
    assert m["spec"]["n"] == 2 and m["spec"]["max_new_tokens"] == 4
    assert m["model_metrics"]["problems"] == 2 and m["model_metrics"]["samples"] == 4
    assert m["base_cache"]["hit"] is False and Path(m["base_cache"]["path"]).is_file()
    assert "perplexity" not in m
    rows = [json.loads(l) for l in (run / "eval" / "samples_model.jsonl").read_text().splitlines()]
    assert len(rows) == 4


def test_metrics_json_records_model_path_with_default_label(tmp_path):
    from rlvr.eval import EvalSettings, evaluate
    from rlvr.rewards import RewardRunner

    cfg = write_config(tmp_path / "run.yaml")
    problems = eval_problems(cfg)
    samples = write_samples(tmp_path / "s.jsonl", [p.id for p in problems], [1] * 6, 2)
    r = evaluate(
        problems,
        EvalSettings(n=2, resamples=20),
        RewardRunner(parity_reward),
        samples=[str(samples)],
        model_path="runs/x/final",
        out_dir=tmp_path / "e",
        progress=False,
    )
    assert r["label"] == "model"
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["model_path"] == "runs/x/final"


def test_cached_base_rows_follow_the_current_threshold(tmp_path, random_model):
    from rlvr.eval.runner import EvalSettings, base_cache_path, evaluate, write_jsonl
    from rlvr.rewards import RewardRunner

    problems = eval_problems(write_config(tmp_path / "run.yaml"))[:2]
    ids = [p.id for p in problems]
    # the base's samples as cached by an eval with threshold 1.0: reward 0.5 was not correct then
    spec1 = EvalSettings(n=2, threshold=1.0, resamples=20, perplexity=False)
    cached = [
        {
            "problem_id": pid,
            "sample": j,
            "prompt": p.prompt,
            "text": "t",
            "tokens": 1,
            "finish_reason": "stop",
            "answer": "t",
            "reward": 0.5,
            "correct": False,
        }
        for p, pid in zip(problems, ids, strict=True)
        for j in range(2)
    ]
    path = base_cache_path(str(random_model), problems, spec1)
    path.parent.mkdir(parents=True)
    write_jsonl(path, cached)
    samples = write_samples(tmp_path / "m.jsonl", ids, [1, 0], 2)
    spec2 = EvalSettings(n=2, threshold=0.5, resamples=20, perplexity=False)
    r = evaluate(
        problems,
        spec2,
        RewardRunner(parity_reward),
        samples=[str(samples)],
        base=str(random_model),
        out_dir=tmp_path / "e",
        progress=False,
    )
    assert r["base_cache"]["hit"] is True
    assert r["base_metrics"]["counts"]["c"] == [2, 2]  # reward 0.5 >= threshold 0.5


# ---------------------------------------------------------------- trainer hooks


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, random_model):
    """fit() with evals before, every step and after, plus the full eval; every eval's samples captured."""
    import rlvr.eval.runner as runner
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    d = tmp_path_factory.mktemp("trained")
    cfg = load_config(
        write_config(
            d / "c.yaml",
            random_model,
            data={"eval_size": 4},
            eval={"before": True, "after": True, "every": 1, "n": 4, "ks": [1, 2, 4], "full": True},
        )
    )
    captured: list[tuple[str, list[dict]]] = []
    real = runner.sample_rows

    def capture(engine, probs, spec, score, **kw):
        rows = real(engine, probs, spec, score, **kw)
        captured.append((kw.get("desc", ""), rows))
        return rows

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLVR_CACHE", str(d / "cache"))
        mp.setattr(runner, "sample_rows", capture)
        trainer = Trainer(cfg, reward_fn=parity_reward)
        result = trainer.fit()
        cache = runner.base_cache_path(
            trainer.model_path, trainer.eval_problems, trainer.eval_settings(), engine_batch=trainer.engine.batch_size
        )
        order = [p.id for p in trainer.eval_problems]
    return {
        "out": Path(cfg.output_dir),
        "cfg": cfg,
        "result": result,
        "captured": captured,
        "cache": cache,
        "order": order,
        "cache_root": d / "cache",
    }


def test_in_training_eval_rows(trained_run):
    from rlvr.eval.metrics import coverage, crossover_k
    from rlvr.eval.passk import mean_pass_at_k
    from rlvr.eval.runner import counts, read_jsonl

    out, order = trained_run["out"], trained_run["order"]
    evals = [json.loads(l) for l in (out / "evals.jsonl").read_text().splitlines()]
    assert [(e["tag"], e["step"]) for e in evals] == [("base", 0), ("step-1", 1), ("final", 2)]
    assert evals == trained_run["result"]["evals"]
    by_desc = dict(trained_run["captured"])
    assert set(by_desc) >= {"eval base", "eval step-1", "eval final"}

    cache = trained_run["cache"]
    assert cache.is_file() and cache.is_relative_to(trained_run["cache_root"])
    base_rows = read_jsonl(cache)
    assert [(r["problem_id"], r["text"], r["correct"]) for r in base_rows] == [
        (r["problem_id"], r["text"], r["correct"]) for r in by_desc["eval base"]
    ]
    bn, bc = counts(base_rows, order)
    base = evals[0]
    assert base["problems"] == 4 and base["n"] == 4
    for k in (1, 2, 4):
        assert base[f"pass@{k}"] == pytest.approx(mean_pass_at_k(bn, bc, k), abs=1e-6)
    assert not any(k.startswith("dSE") for k in base) and "gained" not in base
    assert 0 < bc.sum() < bn.sum(), "the reward should make some samples right and some wrong"

    for e in evals[1:]:
        assert {"dSE@4", "crossover_k", "gained", "lost"} <= set(e), e
        rows = by_desc[f"eval {e['tag']}"]
        mn, mc = counts(rows, order)
        for k in (1, 2, 4):
            assert e[f"pass@{k}"] == pytest.approx(mean_pass_at_k(mn, mc, k), abs=1e-6)
        # dSE@K with K == eval.n: pass@K of the base row minus pass@1 of this row
        assert e["dSE@4"] == pytest.approx(base["pass@4"] - e["pass@1"], abs=2e-6)
        assert e["dSE@4"] == pytest.approx(mean_pass_at_k(bn, bc, 4) - mean_pass_at_k(mn, mc, 1), abs=1e-6)
        base_curve = {k: mean_pass_at_k(bn, bc, k) for k in range(1, 5)}  # k* is read at every k up to n
        model_curve = {k: mean_pass_at_k(mn, mc, k) for k in range(1, 5)}
        assert e["crossover_k"] == crossover_k(base_curve, model_curve)
        cov = coverage(bc, mc)
        assert (e["gained"], e["lost"]) == (cov["model_only"], cov["base_only"])
        assert e["reward/mean"] == pytest.approx(np.mean([r["reward"] for r in rows]))


def test_full_eval_after_training(trained_run):
    from rlvr.eval.runner import read_jsonl

    ev = trained_run["out"] / "eval"
    for f in ("metrics.json", "summary.md", "samples_final.jsonl", "samples_base.jsonl"):
        assert (ev / f).is_file(), f
    for f in ("pass_at_k.png", "accuracy_histogram.png"):
        assert is_png(ev / f), f
    m = json.loads((ev / "metrics.json").read_text())
    assert m["label"] == "final" and m["model_path"] == str(trained_run["out"] / "final")
    assert m["model_metrics"]["problems"] == 4 and m["model_metrics"]["n_min"] == 4
    # same base, problems and sampling as the in-training base eval: its cached samples are reused
    assert m["base_cache"] == {"path": str(trained_run["cache"]), "hit": True}
    assert read_jsonl(ev / "samples_base.jsonl") == read_jsonl(trained_run["cache"])
    descs = [d for d, _ in trained_run["captured"]]
    assert "sampling base" not in descs and "sampling final" in descs
    evals = {e["tag"]: e for e in trained_run["result"]["evals"]}
    assert m["base_metrics"]["pass_at_k"]["4"]["mean"] == pytest.approx(evals["base"]["pass@4"], abs=1e-6)
    assert m["comparison"]["K"] == 4
    assert "perplexity" in m
    s = (ev / "summary.md").read_text()
    assert "# Eval: final vs base" in s and "dSE = pass@4(base) - pass@1(final)" in s
    assert (trained_run["out"] / "train_done.json").is_file()
