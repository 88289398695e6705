"""`rlvr report` and the eval's summary.md on hand-made cells: units, seeds, intervals, k*, wall time,
and a directory that is not a sweep. Fast: no model, no training (test_sweep.py runs a real sweep)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rlvr.eval.metrics import bootstrap_pass_at_k_combination, interval_name, sampling_efficiency_gap
from rlvr.eval.passk import mean_pass_at_k
from rlvr.eval.report import gather_cells, summary_markdown, write_sweep_report
from rlvr.eval.runner import comparison_metrics, model_metrics
from rlvr.eval.settings import EvalSettings

N = 8
SETTINGS = EvalSettings(n=N, K=N, resamples=200, seed=3, perplexity=False)


def rows_from_counts(c: list[int], n: int = N) -> list[dict]:
    """Samples with c[i] correct of n on problem i (answers "1" right, "0" wrong)."""
    rows = []
    for i, ci in enumerate(c):
        for j in range(n):
            ok = j < ci
            rows.append(
                {
                    "problem_id": f"p{i}",
                    "reward": float(ok),
                    "correct": ok,
                    "tokens": 5,
                    "finish_reason": "stop",
                    "answer": "1" if ok else "0",
                }
            )
    return rows


BASE_C = [1, 0, 3, 8, 2, 5, 0, 1, 4, 6, 2, 1]


def model_c(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(min(N, x)) for x in rng.binomial(N, np.clip(np.array(BASE_C) / N * 1.6, 0, 1))]


def make_result(mc: list[int], bc: list[int] = BASE_C, label: str = "m", interval: bool = True) -> dict:
    order = [f"p{i}" for i in range(len(bc))]
    m = model_metrics(rows_from_counts(mc), order, SETTINGS, maj=False)
    b = model_metrics(rows_from_counts(bc), order, SETTINGS, maj=False)
    if not interval:
        m.pop("interval")
        b.pop("interval")
    comp = comparison_metrics(rows_from_counts(mc), rows_from_counts(bc), order, SETTINGS)
    r = {
        "spec": SETTINGS.model_dump(),
        "label": label,
        "model_metrics": m,
        "base_metrics": b,
        "comparison": comp,
        "wall_time_s": 2.0,
    }
    return json.loads(json.dumps(r))  # as read back from metrics.json: string keys


def write_cell(root: Path, name: str, settings: dict, result: dict, sessions: list[float] | None = None) -> Path:
    cell = root / name
    (cell / "eval").mkdir(parents=True)
    (cell / "cell.json").write_text(json.dumps({"settings": settings}))
    (cell / "eval" / "metrics.json").write_text(json.dumps(result))
    (cell / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "time/step": 1.5}) + "\n" for s in (1, 2)))
    if sessions is not None:
        (cell / "sessions.jsonl").write_text(
            "".join(json.dumps({"state": "new", "seconds": s, "ended": "stopped"}) + "\n" for s in sessions)
        )
    return cell


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    results = {}
    for algo in ("grpo", "rloo"):
        for seed in (0, 1) if algo == "grpo" else (0,):
            name = f"{algo}-seed{seed}"
            results[name] = make_result(model_c(seed + (10 if algo == "rloo" else 0)), label=name)
            write_cell(
                root,
                name,
                {"algorithm": algo, "seed": seed},
                results[name],
                sessions=[10.0, 5.5] if name == "grpo-seed1" else [7.0],
            )
    return root, results


def read_csv(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "report.csv") as f:
        return {r["setting"]: r for r in csv.DictReader(f)}


def test_report_is_in_points_with_unit_headers_and_no_zero_sd_for_one_seed(sweep):
    root, results = sweep
    write_sweep_report(root)
    rows = read_csv(root)
    one, two = rows["algorithm=rloo"], rows["algorithm=grpo"]
    p1 = results["rloo-seed0"]["model_metrics"]["pass_at_k"]["1"]["mean"]
    assert float(one["pass@1 (points)"]) == pytest.approx(100 * p1, abs=1e-3)
    dse = results["rloo-seed0"]["comparison"]["dse"]["dse"]
    assert float(one["dSE (points)"]) == pytest.approx(100 * dse, abs=1e-3)
    assert one["pass@1 sd (points)"] == "" and one["dSE sd (points)"] == ""  # one seed: no spread, not 0.0
    g = [results[f"grpo-seed{s}"]["model_metrics"]["pass_at_k"]["1"]["mean"] for s in (0, 1)]
    assert float(two["pass@1 (points)"]) == pytest.approx(100 * np.mean(g), abs=1e-3)
    assert float(two["pass@1 sd (points)"]) == pytest.approx(100 * np.std(g, ddof=1), abs=1e-3)
    assert f"pass@{N} (points)" in one and f"base pass@{N} (points)" in one and one["K"] == str(N)
    md = (root / "report.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| algorithm=rloo |"))
    assert "±" not in line
    assert f"| {100 * p1:.1f} |" in line
    line2 = next(l for l in md.splitlines() if l.startswith("| algorithm=grpo |"))
    assert f"{100 * np.mean(g):.1f} ± {100 * np.std(g, ddof=1):.1f}" in line2
    assert "points (percent)" in md and interval_name() in md
    table = [l for l in md.splitlines() if l.startswith("|")]
    assert len(table) == 4 and len({l.count("|") for l in table}) == 1  # header, rule and rows line up


def test_k_star_is_each_seeds_integer(sweep):
    root, results = sweep
    write_sweep_report(root)
    rows = read_csv(root)
    ks = [results[f"grpo-seed{s}"]["comparison"]["crossover_k"] for s in (0, 1)]
    want = " / ".join("none" if k is None else str(k) for k in ks)
    assert rows["algorithm=grpo"]["k*"] == want
    assert "." not in want
    line = next(l for l in (root / "report.md").read_text().splitlines() if l.startswith("| algorithm=grpo |"))
    assert f"| {want} |" in line


def test_dse_interval_is_the_paired_two_level_bootstrap_of_the_seed_mean(sweep):
    root, results = sweep
    write_sweep_report(root)
    rows = read_csv(root)
    # one seed: the eval's own dSE interval (two-level, the same seed and resamples)
    d = results["rloo-seed0"]["comparison"]["dse"]
    one = rows["algorithm=rloo"]
    assert (float(one["dSE CI lo (points)"]), float(one["dSE CI hi (points)"])) == pytest.approx(
        (100 * d["lo"], 100 * d["hi"]), abs=1e-3
    )
    bc = results["rloo-seed0"]["base_metrics"]["counts"]["c"]
    want = sampling_efficiency_gap(N, bc, N, model_c(10), K=N, resamples=200, seed=3, two_level=True)
    assert (d["lo"], d["hi"]) == pytest.approx((want["lo"], want["hi"]))
    # two seeds: dSE of their mean, by the combination, and it holds the mean of the seeds' dSEs
    terms = [(N, BASE_C, [N], 0.5), (N, BASE_C, [N], 0.5), (N, model_c(0), [1], -0.5), (N, model_c(1), [1], -0.5)]
    ((est, lo, hi),) = bootstrap_pass_at_k_combination(terms, resamples=200, seed=3)
    two = rows["algorithm=grpo"]
    assert est == pytest.approx(np.mean([results[f"grpo-seed{s}"]["comparison"]["dse"]["dse"] for s in (0, 1)]))
    assert float(two["dSE (points)"]) == pytest.approx(100 * est, abs=1e-3)
    assert (float(two["dSE CI lo (points)"]), float(two["dSE CI hi (points)"])) == pytest.approx(
        (100 * lo, 100 * hi), abs=1e-3
    )
    assert lo < est < hi


def test_dse_bars_and_curves_carry_intervals(sweep, monkeypatch):
    import rlvr.eval.report as report

    seen = {}

    def spy(name, real):
        def f(data, path, **kw):
            seen[name] = (data, kw)
            return real(data, path, **kw)

        return f

    monkeypatch.setattr(report, "plot_pass_at_k", spy("curves", report.plot_pass_at_k))
    import rlvr.eval.plots as plots

    monkeypatch.setattr(plots, "plot_dse_bars", spy("bars", plots.plot_dse_bars))
    root, results = sweep
    out = write_sweep_report(root)
    assert out["pass_at_k"].is_file() and out["dse"].is_file()
    bars, kw = seen["bars"]
    assert kw["K"] == str(N) and kw["interval"] == interval_name()
    rows = read_csv(root)
    for key, (v, lo, hi) in bars.items():
        assert (100 * lo, 100 * hi) == pytest.approx(
            (float(rows[key]["dSE CI lo (points)"]), float(rows[key]["dSE CI hi (points)"])), abs=1e-3
        )
        assert lo < v < hi
    curves, _ = seen["curves"]
    assert set(curves) == {"base", "algorithm=grpo", "algorithm=rloo"}
    for lab, curve in curves.items():
        for k, (mean, lo, hi) in curve.items():
            assert lo <= mean <= hi and lo < hi or mean in (0.0, 1.0), (lab, k)
    # one seed's band is its eval's own interval; the base's is the base's
    r = results["rloo-seed0"]["model_metrics"]["pass_at_k"]
    assert curves["algorithm=rloo"][2] == pytest.approx((r["2"]["mean"], r["2"]["lo"], r["2"]["hi"]))
    b = results["rloo-seed0"]["base_metrics"]["pass_at_k"]
    assert curves["base"][4] == pytest.approx((b["4"]["mean"], b["4"]["lo"], b["4"]["hi"]))


def test_wall_time_sums_every_session_of_a_resumed_cell(sweep):
    root, _ = sweep
    cells = {c["cell"]: c for c in gather_cells(root)}
    assert cells["grpo-seed1"]["wall_time_s"] == pytest.approx(15.5)  # two sessions: 10 + 5.5
    assert cells["grpo-seed0"]["wall_time_s"] == pytest.approx(7.0)
    write_sweep_report(root)
    assert float(read_csv(root)["algorithm=grpo"]["wall time (s)"]) == pytest.approx((15.5 + 7.0) / 2)
    # without a session log: step times + the eval's time, marked as a lower bound
    (root / "rloo-seed0" / "sessions.jsonl").unlink()
    assert {c["cell"]: c for c in gather_cells(root)}["rloo-seed0"]["wall_time_s"] == pytest.approx(1.5 + 1.5 + 2.0)
    write_sweep_report(root)
    md = (root / "report.md").read_text()
    assert "5.0 * |" in md and "a lower bound" in md


def test_report_on_a_directory_that_is_not_a_sweep(tmp_path, capsys):
    from rlvr.cli import main

    (tmp_path / "cell").mkdir()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a sweep directory" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "file.txt").write_text("x")
    assert main(["report", str(tmp_path / "file.txt")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "metrics.json").write_text("{}")  # one eval's directory
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.md" in capsys.readouterr().err
    bad = write_cell(tmp_path / "s", "c", {"seed": 0}, {})
    (bad / "eval" / "metrics.json").write_text("{not json")
    assert main(["report", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and len(err.strip().splitlines()) == 1
    (bad / "eval" / "metrics.json").write_text("{}")  # JSON, but not an eval's
    assert main(["report", str(tmp_path / "s")]) == 2
    assert "no model_metrics" in capsys.readouterr().err


def test_summary_names_the_interval():
    r = make_result(model_c(0))
    s = summary_markdown(r)
    assert s.count(interval_name()) == 2  # the dSE line and the pass@k table's header
    assert "two-level" in s
    old = make_result(model_c(0), interval=False)  # a metrics.json from before the two-level default
    assert "one-level bootstrap" in summary_markdown(old)


def test_eval_intervals_are_two_level():
    """The eval's pass@k and dSE intervals are the library's two-level ones (not one-level)."""
    from rlvr.eval.metrics import bootstrap_pass_at_k

    r = make_result(model_c(0))
    mc = r["model_metrics"]["counts"]["c"]
    two = bootstrap_pass_at_k(N, mc, [1, 2, 4, 8], resamples=200, seed=3, two_level=True)
    one = bootstrap_pass_at_k(N, mc, [1, 2, 4, 8], resamples=200, seed=3, two_level=False)
    got = {int(k): (v["mean"], v["lo"], v["hi"]) for k, v in r["model_metrics"]["pass_at_k"].items()}
    assert list(got) == list(two)
    for k in two:
        assert got[k] == pytest.approx(two[k])
    assert got[1] != pytest.approx(one[1])
    d = r["comparison"]["dse"]
    want = sampling_efficiency_gap(N, BASE_C, N, mc, K=N, resamples=200, seed=3, two_level=True)
    assert (d["lo"], d["hi"]) == pytest.approx((want["lo"], want["hi"]))
    assert r["model_metrics"]["interval"] == interval_name(True)


def test_comparison_k_star_is_read_at_every_k():
    # base: every problem 1 correct of 16 -> pass@k = k / 16; model: 6 of 20 problems always right -> 0.3.
    # They cross at k = 5 (0.3125 >= 0.3); the power-of-two grid would say 8.
    bc, mc = [1] * 20, [16] * 6 + [0] * 14
    order = [f"p{i}" for i in range(20)]
    comp = comparison_metrics(
        rows_from_counts(mc, 16), rows_from_counts(bc, 16), order, EvalSettings(n=16, K=16, resamples=20)
    )
    assert comp["crossover_k"] == 5
    assert mean_pass_at_k(16, bc, 4) < 0.3 <= mean_pass_at_k(16, bc, 5)


def test_a_metrics_json_without_counts_gets_no_interval_and_says_so(sweep):
    root, results = sweep
    r = results["rloo-seed0"]
    for m in ("model_metrics", "base_metrics"):
        del r[m]["counts"]
    (root / "rloo-seed0" / "eval" / "metrics.json").write_text(json.dumps(r))
    write_sweep_report(root)
    rows = read_csv(root)
    assert rows["algorithm=rloo"]["dSE CI lo (points)"] == "" and rows["algorithm=grpo"]["dSE CI lo (points)"] != ""
    md = (root / "report.md").read_text()
    assert "> note: algorithm=rloo: no dSE interval" in md and "> note: algorithm=rloo: no pass@k band" in md


def _pass_at_k_by_hand(n: int, c: list[int], k: int) -> float:
    """The unbiased estimator, 1 - C(n - c, k) / C(n, k), averaged over problems (Chen et al. 2021)."""
    from math import comb

    return float(np.mean([1 - comb(n - ci, k) / comb(n, k) for ci in c]))


def test_pass_at_K_minus_base_is_the_paired_seed_mean_difference(sweep):
    """Issue 15's question per setting: pass@K of the seed mean minus the base's, by hand, with a paired
    interval holding it; in the table and the CSV."""
    root, results = sweep
    write_sweep_report(root)
    rows = read_csv(root)
    base = _pass_at_k_by_hand(N, BASE_C, N)
    want = np.mean([_pass_at_k_by_hand(N, model_c(s), N) for s in (0, 1)]) - base
    two = rows["algorithm=grpo"]
    assert float(two[f"pass@{N} - base (points)"]) == pytest.approx(100 * want, abs=1e-3)
    lo, hi = float(two[f"pass@{N} - base CI lo (points)"]), float(two[f"pass@{N} - base CI hi (points)"])
    assert lo <= 100 * want <= hi and lo < hi
    one = rows["algorithm=rloo"]
    want1 = _pass_at_k_by_hand(N, model_c(10), N) - base
    assert float(one[f"pass@{N} - base (points)"]) == pytest.approx(100 * want1, abs=1e-3)
    line = next(l for l in (root / "report.md").read_text().splitlines() if l.startswith("| algorithm=grpo |"))
    assert f"| {100 * want:+.1f} [" in line
    md = (root / "report.md").read_text()
    b1 = _pass_at_k_by_hand(N, BASE_C, 1)
    assert f"The base (every cell's comparison): pass@1 {100 * b1:.1f} [" in md


def test_versus_is_the_paired_difference_of_seed_means(sweep):
    """report.versus (saved in sweep.json by rlvr sweep): each setting's pass@K minus the reference's, by hand."""
    root, results = sweep
    (root / "sweep.json").write_text(json.dumps({"method_axis": "algorithm", "versus": "grpo"}))
    write_sweep_report(root)
    rows = read_csv(root)
    grpo = np.mean([_pass_at_k_by_hand(N, model_c(s), N) for s in (0, 1)])
    want = _pass_at_k_by_hand(N, model_c(10), N) - grpo
    one = rows["algorithm=rloo"]
    assert float(one[f"pass@{N} - grpo (points)"]) == pytest.approx(100 * want, abs=1e-3)
    lo, hi = float(one[f"pass@{N} - grpo CI lo (points)"]), float(one[f"pass@{N} - grpo CI hi (points)"])
    assert lo <= 100 * want <= hi and lo < hi
    assert rows["algorithm=grpo"][f"pass@{N} - grpo (points)"] == ""  # the reference itself
    md = (root / "report.md").read_text()
    assert f"| pass@{N} - grpo [CI] |" in md
    line = next(l for l in md.splitlines() if l.startswith("| algorithm=rloo |"))
    assert f"| {100 * want:+.1f} [" in line
    table = [l for l in md.splitlines() if l.startswith("|")]
    assert len({l.count("|") for l in table}) == 1  # header, rule and rows line up
