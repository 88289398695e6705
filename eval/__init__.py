"""The eval: pass@k and the expand-or-sharpen metrics of Yue et al. 2025, usable on any
framework's results (per-problem counts or a samples file), plus `rlvr eval`'s runner.

    from rlvr.eval import pass_at_k, sampling_efficiency_gap, crossover_k, coverage
"""

from .metrics import (
    HISTOGRAM_BINS,
    accuracy_histogram,
    bootstrap_pass_at_k,
    cover_at_tau,
    coverage,
    crossover_k,
    maj_at_k,
    pass_at_k_diff_ci,
    sampling_efficiency_gap,
    standard_error,
    summarize_samples,
)
from .passk import mean_pass_at_k, pass_at_k, pass_at_k_curve

__all__ = [
    "HISTOGRAM_BINS",
    "accuracy_histogram",
    "bootstrap_pass_at_k",
    "cover_at_tau",
    "coverage",
    "crossover_k",
    "maj_at_k",
    "mean_pass_at_k",
    "pass_at_k",
    "pass_at_k_curve",
    "pass_at_k_diff_ci",
    "sampling_efficiency_gap",
    "standard_error",
    "summarize_samples",
]
