"""Tests for rlvr.eval.plots: each function writes a readable PNG with several series."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from rlvr.eval.metrics import accuracy_histogram, bootstrap_pass_at_k, crossover_k
from rlvr.eval.plots import (
    plot_accuracy_histogram,
    plot_dse_bars,
    plot_metric_vs_step,
    plot_pass_at_k,
    plot_perplexity_box,
)

KS = [1, 2, 4, 8, 16, 32]


def _read_png(path: Path) -> np.ndarray:
    assert path.suffix == ".png" and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300 and img.shape[2] in (3, 4)
    assert img[..., :3].std() > 0.05  # something was drawn, not a blank canvas
    return img


def _counts(seed: int, shrink: float) -> np.ndarray:
    p = np.random.default_rng(0).beta(0.4, 1.5, 80)
    return np.random.default_rng(seed).binomial(32, np.clip(p * shrink, 0, 1))


def test_plot_pass_at_k_bands_crossover_and_plain_floats(tmp_path):
    curves = {"base": bootstrap_pass_at_k(32, _counts(1, 1.0), KS, resamples=100)}
    for i, name in enumerate(["GRPO", "PPO", "RLOO"]):
        curves[name] = bootstrap_pass_at_k(32, np.where(_counts(1, 1.0) > 1, _counts(i + 2, 3.0), 0), KS, resamples=100)
    curves["plain floats"] = {k: min(1.0, 0.3 + 0.1 * np.log2(k)) for k in KS}
    crossover = {name: crossover_k(curves["base"], curves[name]) for name in curves if name != "base"}
    out = plot_pass_at_k(curves, tmp_path / "sub" / "passk.png", crossover=crossover)
    assert out == tmp_path / "sub" / "passk.png"
    _read_png(out)
    # the crossover line is drawn: the figure differs from one without it
    plain = plot_pass_at_k(curves, tmp_path / "plain.png")
    assert not np.array_equal(mpimg.imread(plain), mpimg.imread(out))
    with pytest.raises(ValueError, match="empty"):
        plot_pass_at_k({}, tmp_path / "x.png")


def test_plot_accuracy_histogram(tmp_path):
    hists = {
        name: accuracy_histogram(32, _counts(s, f))
        for name, s, f in [("base", 1, 1.0), ("GRPO", 2, 3.0), ("PPO", 3, 2.0)]
    }
    _read_png(plot_accuracy_histogram(hists, tmp_path / "hist.png"))
    with pytest.raises(ValueError, match="bins"):
        plot_accuracy_histogram({"a": {"0": 1, "1": 2}, "b": {"0": 1}}, tmp_path / "bad.png")


def test_plot_perplexity_box_linear_and_log(tmp_path):
    rng = np.random.default_rng(0)
    narrow = {
        "PPL_base(Y_base)": 2 + rng.random(50),
        "PPL_base(Y_GRPO)": 1.5 + rng.random(50),
        "PPL_GRPO(Y_GRPO)": np.append(1.1 + rng.random(49), np.nan),
    }  # nan (empty response) dropped
    _read_png(plot_perplexity_box(narrow, tmp_path / "ppl.png"))
    wide = {"a": rng.lognormal(0, 2, 50), "b": rng.lognormal(1, 2, 50)}  # spans > 20x: log axis
    _read_png(plot_perplexity_box(wide, tmp_path / "ppl_log.png"))
    with pytest.raises(ValueError, match="no finite"):
        plot_perplexity_box({"a": [np.nan]}, tmp_path / "bad.png")


def test_plot_dse_bars_with_and_without_intervals(tmp_path):
    _read_png(
        plot_dse_bars(
            {
                "GRPO": (0.432, 0.40, 0.46),
                "PPO": (0.423, 0.39, 0.45),
                "RLOO": (0.41, 0.38, 0.44),
                "ReMax": (0.453, 0.42, 0.48),
            },
            tmp_path / "dse.png",
        )
    )
    _read_png(plot_dse_bars({"GRPO": 0.432, "PPO": 0.423}, tmp_path / "dse_plain.png"))
    with pytest.raises(ValueError, match="mean, lo, hi"):
        plot_dse_bars({"GRPO": (0.4, 0.3)}, tmp_path / "bad.png")


def test_plot_metric_vs_step(tmp_path):
    series = {  # Yue et al.: GRPO steps 150 / 300 / 450
        "train pass@1": [(150, 0.261), (300, 0.336), (450, 0.425)],
        "test pass@256": [(450, 0.639), (150, 0.683), (300, 0.666)],  # unsorted on purpose
        "test pass@1": [(150, 0.251), (300, 0.262), (450, 0.27)],
    }
    _read_png(plot_metric_vs_step(series, tmp_path / "steps.png", "accuracy"))


@pytest.fixture
def figures(monkeypatch):
    """The Figure each plot saves, to read its data back."""
    import rlvr.eval.plots as plots

    saved = []
    real = plots._save

    def save(fig, path):
        saved.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    return saved


def test_pass_at_k_is_drawn_in_points_with_bands(tmp_path, figures):
    from matplotlib.collections import PolyCollection

    curves = {"base": {1: (0.2, 0.1, 0.3), 2: (0.4, 0.3, 0.5)}, "GRPO": {1: 0.5, 2: 0.55}}
    plot_pass_at_k(curves, tmp_path / "p.png")
    ax = figures[-1].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["base"].get_ydata()) == pytest.approx([20.0, 40.0])
    assert list(lines["GRPO"].get_ydata()) == pytest.approx([50.0, 55.0])
    assert "%" in ax.get_ylabel() and ax.get_ylim()[1] > 100
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]  # the base's CI band, in points
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(10.0) and ys.max() == pytest.approx(50.0)


def test_dse_bars_in_points_with_intervals_and_K(tmp_path, figures):
    plot_dse_bars(
        {"GRPO": (0.432, 0.40, 0.46), "PPO": 0.423}, tmp_path / "d.png", K=16, interval="95% CI, two-level bootstrap"
    )
    ax = figures[-1].axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([43.2, 42.3])
    assert "points" in ax.get_ylabel()
    title = ax.get_title()
    assert "K = 16" in title and "pass@16(base)" in title and "two-level bootstrap" in title
    (err,) = [c for c in ax.collections]  # one error bar: GRPO's (PPO has no interval)
    (seg,) = err.get_segments()
    assert sorted(seg[:, 1]) == pytest.approx([40.0, 46.0])
    assert [t.get_text() for t in ax.texts] == ["43.2", "42.3"]
