"""The eval's plots (EVAL.md): PNG files written next to the numbers.

Each function writes one PNG (parent folders created) and returns its path. They
draw on a bare `matplotlib.figure.Figure`, so they never touch pyplot's global
state or the process's backend: safe from a training loop or a notebook alike.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_accuracy_histogram",
    "plot_dse_bars",
    "plot_metric_vs_step",
    "plot_pass_at_k",
    "plot_pass_at_k_panels",
    "plot_perplexity_box",
]

_DPI = 120
_BASE_COLOR = "black"


def _colors(n: int) -> list:
    """n distinguishable colours (tab10, then tab20 beyond ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path


def _triple(value: float | Sequence[float]) -> tuple[float, float | None, float | None]:
    """(mean, lo, hi) from a float or a (mean, lo, hi) sequence; lo and hi None for a float."""
    if isinstance(value, numbers.Real):
        return float(value), None, None
    if len(value) != 3:
        raise ValueError(f"expected a float or (mean, lo, hi), got {value!r}")
    return float(value[0]), float(value[1]), float(value[2])


def _points(t: tuple[float, float | None, float | None]) -> tuple[float, float | None, float | None]:
    """A (value, lo, hi) of fractions in points (x 100)."""
    return tuple(None if v is None else 100.0 * v for v in t)  # type: ignore[return-value]


def _need(data: Mapping, what: str) -> None:
    if not data:
        raise ValueError(f"nothing to plot: {what} is empty")


def _draw_curve(ax, curve: Mapping, label: str, color, is_base: bool, *, ms: float, lw: float) -> list[int]:
    """One pass@k curve on `ax` (dashed when it is the base's), its band where (mean, lo, hi) are given;
    returns its ks."""
    ks = sorted(curve)
    if not ks:
        raise ValueError(f"curve {label!r} has no points")
    pts = [_points(_triple(curve[k])) for k in ks]
    ax.plot(ks, [p[0] for p in pts], marker="o", ms=ms, lw=lw, ls="--" if is_base else "-", color=color,
            label=label, zorder=3 if is_base else 2)  # fmt: skip
    if all(p[1] is not None for p in pts):
        ax.fill_between(ks, [p[1] for p in pts], [p[2] for p in pts], color=color, alpha=0.15, lw=0)
    return ks


def _k_axis(ax, ks: set[int]) -> None:
    """k on a log2 axis (powers of two only beyond twelve ticks, to stay readable), pass@k in points."""
    ax.set_xscale("log", base=2)
    ticks = sorted(ks)
    if len(ticks) > 12:
        ticks = [k for k in ticks if k & (k - 1) == 0] or ticks
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_ylim(-2, 102)


def plot_pass_at_k(
    curves: Mapping[str, Mapping[int, float | Sequence[float]]],
    path: str | Path,
    *,
    base_label: str = "base",
    crossover: Mapping[str, int | None] | None = None,
    title: str = "pass@k: base vs trained",
) -> Path:
    """pass@k against k on a log2 axis, one line per model; bands where (mean, lo, hi) are given.

    Values are fractions (as the metrics give them), drawn in points (percent), as every table shows them.

    The curve named `base_label` (if present) is drawn in black, dashed, so the
    trained models read against it. `crossover` maps a model's label to its k*
    (from `crossover_k`), drawn as a vertical dashed line in that model's colour;
    None is noted in the legend as "no crossover".
    """
    _need(curves, "curves")
    labels = sorted(curves, key=lambda lab: lab != base_label)  # base first, then in the given order
    colors = dict(
        zip([lab for lab in labels if lab != base_label], _colors(len(labels)), strict=False)
    )  # one color spare: the base has its own
    colors[base_label] = _BASE_COLOR
    fig = Figure(figsize=(9.0, 4.8))
    ax = fig.add_subplot()
    all_ks: set[int] = set()
    for lab in labels:
        is_base = lab == base_label
        all_ks.update(_draw_curve(ax, curves[lab], lab, colors[lab], is_base, ms=3.5, lw=2.2 if is_base else 1.8))
    for lab, k_star in (crossover or {}).items():
        color = colors.get(lab, "grey")
        if k_star is None:
            ax.plot([], [], ls=":", color=color, label=f"{lab}: no crossover")
        else:
            ax.axvline(k_star, ls="--", lw=1.2, color=color, alpha=0.8, label=f"{lab}: k* = {k_star}")
            if lab in curves and k_star in curves[lab]:  # a star where the model is caught up with
                ax.plot(
                    [k_star],
                    [100.0 * _triple(curves[lab][k_star])[0]],
                    marker="*",
                    ms=12,
                    color=color,
                    markeredgecolor="black",
                    zorder=4,
                )
    _k_axis(ax, all_ks)
    ax.set_xlabel("k (samples per problem, log2 scale)")
    ax.set_ylabel("pass@k (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    # Outside the axes: bands and crossings fill every corner of the plot.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0)
    fig.tight_layout()
    return _save(fig, path)


def plot_pass_at_k_panels(
    panels: Mapping[str, Mapping[str, Mapping[int, float | Sequence[float]]]],
    path: str | Path,
    *,
    base: Mapping[int, float | Sequence[float]] | None = None,
    title: str = "pass@k by family",
) -> Path:
    """One pass@k panel per family (`panels`: family -> label -> curve, as `plot_pass_at_k` takes
    them), the base's curve (black, dashed) in every panel, shared axes so the panels compare.
    Bands where (mean, lo, hi) are given. Two columns; each panel's legend inside it, lower right
    (pass@k curves rise to the upper right, so that corner is free at small k)."""
    _need(panels, "panels")
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(5.2 * cols, 3.9 * rows))
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    all_ks: set[int] = set()
    for ax, (family, curves) in zip(axes, panels.items(), strict=False):
        if base is not None:
            all_ks.update(_draw_curve(ax, base, "base", _BASE_COLOR, True, ms=2.5, lw=2.0))
        for (label, curve), color in zip(curves.items(), _colors(len(curves)), strict=True):
            all_ks.update(_draw_curve(ax, curve, label, color, False, ms=2.5, lw=1.5))
        ax.set_title(family, fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="x-small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[: len(panels)]:
        _k_axis(ax, all_ks)
    for i, ax in enumerate(axes[: len(panels)]):
        if i + cols >= len(panels):  # no panel below it: its own k labels
            ax.set_xlabel("k (log2 scale)")
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[::cols]:
        ax.set_ylabel("pass@k (%)")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_histogram(
    hists: Mapping[str, Mapping[str, int]],
    path: str | Path,
    *,
    title: str = "Per-problem accuracy c/n",
) -> Path:
    """Grouped bars: problems per accuracy bin, one bar colour per model.

    Bins are the first histogram's keys in order (`accuracy_histogram` gives every
    bin, zeros included); every histogram must have the same bins.
    """
    _need(hists, "hists")
    labels = list(hists)
    bins = list(hists[labels[0]])
    for lab in labels[1:]:
        if list(hists[lab]) != bins:
            raise ValueError(f"histogram {lab!r} has bins {list(hists[lab])}, expected {bins}")
    fig = Figure(figsize=(max(7.5, 0.6 * len(bins) * max(1, len(labels) / 2)), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(bins))
    width = 0.8 / len(labels)
    for j, (lab, color) in enumerate(zip(labels, _colors(len(labels)), strict=True)):
        counts = [hists[lab][b] for b in bins]
        ax.bar(x + (j - (len(labels) - 1) / 2) * width, counts, width, label=lab, color=color)
    ax.set_xticks(x, bins, rotation=45, ha="right")
    ax.set_xlabel("accuracy c/n")
    ax.set_ylabel("problems")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def plot_perplexity_box(
    ppl: Mapping[str, Sequence[float] | np.ndarray],
    path: str | Path,
    *,
    title: str = "Perplexity of responses",
    log_ratio: float = 20.0,
) -> Path:
    """One box per label (e.g. "PPL_base(Y_base)"); nan values (empty responses) dropped.

    The y axis is logarithmic when the largest value is more than `log_ratio` times
    the smallest, so a heavy tail does not flatten the boxes.
    """
    _need(ppl, "ppl")
    labels = list(ppl)
    data = []
    for lab in labels:
        v = np.asarray(ppl[lab], dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ValueError(f"{lab!r} has no finite perplexity to plot")
        data.append(v)
    fig = Figure(figsize=(max(6.0, 1.6 * len(labels)), 4.5))
    ax = fig.add_subplot()
    box = ax.boxplot(data, patch_artist=True, showfliers=True, medianprops={"color": "black"})
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=15 if len(labels) > 3 else 0)
    for patch, color in zip(box["boxes"], _colors(len(labels)), strict=True):
        patch.set_facecolor(color)
        patch.set_alpha(0.5)
    lo = min(float(v.min()) for v in data)
    hi = max(float(v.max()) for v in data)
    if lo > 0 and hi / lo > log_ratio:
        ax.set_yscale("log")
    ax.set_ylabel("perplexity PPL(Y | x)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_dse_bars(
    dse: Mapping[str, float | Sequence[float]],
    path: str | Path,
    *,
    K: int | str = "K",
    interval: str | None = None,
    title: str | None = None,
) -> Path:
    """One bar per model with its value written on it; error bars where (value, lo, hi) is given.

    Values are fractions, drawn in points. The title names K (dSE = pass@K(base) - pass@1(model))
    and, when any bar has error bars, `interval` (how they were made, e.g. `interval_name()`).
    """
    _need(dse, "dse")
    labels = list(dse)
    vals = [_points(_triple(dse[lab])) for lab in labels]
    fig = Figure(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    heights = [v[0] for v in vals]
    ax.bar(x, heights, color=_colors(len(labels)), alpha=0.85)
    has = [i for i, v in enumerate(vals) if v[1] is not None]
    if has:
        yerr = np.array([[vals[i][0] - vals[i][1] for i in has], [vals[i][2] - vals[i][0] for i in has]])
        ax.errorbar(
            x[has],
            [heights[i] for i in has],
            yerr=np.clip(yerr, 0, None),
            fmt="none",
            ecolor="black",
            capsize=4,
            lw=1.2,
        )
    for xi, h in zip(x, heights, strict=True):  # beside the error bar, not under it
        ax.text(xi + 0.05, h / 2, f"{h:.1f}", ha="left", va="center", fontsize="small")
    ax.set_xticks(x, labels, rotation=15 if len(labels) > 4 else 0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("dSE (points; lower is better)")
    if title is None:
        title = f"Sampling-efficiency gap dSE = pass@{K}(base) - pass@1(model), K = {K}"
        if has:
            title += f"\nerror bars: {interval or 'given (lo, hi)'}"
    ax.set_title(title, fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.15)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_vs_step(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    ylabel: str,
    *,
    title: str | None = None,
) -> Path:
    """One line per label through its (step, value) points (sorted by step), e.g. pass@1 and pass@256."""
    _need(series, "series")
    labels = list(series)
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    for lab, color in zip(labels, _colors(len(labels)), strict=True):
        pts = sorted((float(s), float(v)) for s, v in series[lab])
        if not pts:
            raise ValueError(f"series {lab!r} has no points")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, color=color, label=lab)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else f"{ylabel} vs training step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)
