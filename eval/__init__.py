"""The eval: pass@k and the expand-or-sharpen metrics of Yue et al. 2025, usable on any
framework's results (per-problem counts or a samples file), and `evaluate`, the one eval
that training, `rlvr eval` and sweeps run, with its settings type `EvalSettings`.

    from rlvr.eval import pass_at_k, sampling_efficiency_gap, crossover_k, coverage
    from rlvr.eval import EvalSettings, evaluate
"""

from .metrics import (
    HISTOGRAM_BINS,
    accuracy_histogram,
    bootstrap_pass_at_k,
    bootstrap_pass_at_k_combination,
    cover_at_tau,
    coverage,
    crossover_k,
    crossover_k_from_counts,
    interval_name,
    maj_at_k,
    pass_at_k_diff_ci,
    sampling_efficiency_gap,
    standard_error,
    summarize_samples,
)
from .passk import mean_pass_at_k, pass_at_k, pass_at_k_all, pass_at_k_curve
from .settings import EvalSettings


def __getattr__(name: str):
    if name == "evaluate":  # imported on first use: it needs torch and the models
        from .runner import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EvalSettings",
    "evaluate",
    "HISTOGRAM_BINS",
    "accuracy_histogram",
    "bootstrap_pass_at_k",
    "bootstrap_pass_at_k_combination",
    "cover_at_tau",
    "coverage",
    "crossover_k",
    "crossover_k_from_counts",
    "interval_name",
    "maj_at_k",
    "mean_pass_at_k",
    "pass_at_k",
    "pass_at_k_all",
    "pass_at_k_curve",
    "pass_at_k_diff_ci",
    "sampling_efficiency_gap",
    "standard_error",
    "summarize_samples",
]
