"""Metrics for the expand-or-sharpen question (Yue et al. 2025), on plain numbers.

Every function takes per-problem counts (`n` samples, `c` correct, one entry per
problem, position = problem identity) or a list of per-sample dicts, so results
from any framework can be scored without this project's trainer.

Choices made here, stated once:

- Uncertainty is over problems: `standard_error` and the bootstrap resample the
  eval set. The bootstrap is two-level by default (`two_level=True`, what `rlvr eval`
  and `rlvr report` show): it also resamples each problem's n outcomes
  (c* ~ Binomial(n, c/n)), so it is the wider, conservative one. bench/bootstrap_coverage.py
  measures both against a known truth (300 trials, 200 problems x n = 16, k = 1/4/16: one
  level 94.3/94.3/94.3%, two levels 95.7/94.7/97.3%; 50 problems: 95.7/96.0/95.7% and
  96.3/97.3/98.0%). Resampling with replacement biases pass@k low for
  k > 1 (duplicated samples; the same bias as a bootstrapped best@N), so the
  within-problem draw enters as *centred noise*: pass@k(n, c*) minus its exact
  expectation 1 - (1 - c/n)^k. A replicate is then the one-level replicate plus
  mean-zero noise: unbiased, and never narrower on average than one level.
- Intervals are percentile intervals at `level`, clipped to the metric's range;
  the point estimate is always the estimate on the data, not a bootstrap mean.
- A difference between two models (dSE, any pass@k gap) is a paired bootstrap:
  the same resampled problems for both models.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from .passk import _as_int_array, check_int, mean_pass_at_k, pass_at_k, pass_at_k_all

__all__ = [
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
    "pass_at_k_diff_ci",
    "sampling_efficiency_gap",
    "standard_error",
    "summarize_samples",
]

# Labels of the per-problem accuracy histogram, in order (EVAL.md metric 6).
HISTOGRAM_BINS: tuple[str, ...] = (
    "0",
    *(f"({i / 10:g},{(i + 1) / 10:g}]" for i in range(9)),
    "(0.9,1)",
    "1",
)

# The bootstrap's default: two levels (problems, then each problem's samples).
DEFAULT_TWO_LEVEL = True


def interval_name(two_level: bool = DEFAULT_TWO_LEVEL, level: float = 0.95) -> str:
    """How an interval was made, in words for a table's header: "95% CI, two-level bootstrap ..."."""
    how = "two-level bootstrap (problems, then samples within each)" if two_level else "one-level bootstrap (problems)"
    return f"{100 * level:g}% CI, {how}"


# Bootstrap replicates are built in chunks so that resamples x problems x ks stays small.
_CHUNK_CELLS = 2_000_000


# ----------------------------------------------------------------------------- input checks


def _problems(n: int | Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem (n, c) as equal-length 1-D int64 arrays; a scalar n is shared by all."""
    n_arr = _as_int_array(n, "n")
    c_arr = _as_int_array(c, "c")
    if c_arr.ndim != 1 or n_arr.ndim > 1:
        raise ValueError(
            f"c must be 1-D (one count per problem) and n a scalar or 1-D, got shapes {n_arr.shape}, {c_arr.shape}"
        )
    if n_arr.ndim == 1 and n_arr.shape != c_arr.shape:
        raise ValueError(f"n and c must have one entry per problem, got {n_arr.size} and {c_arr.size}")
    if c_arr.size == 0:
        raise ValueError("need at least one problem")
    n_arr = np.broadcast_to(n_arr, c_arr.shape).copy()
    if n_arr.min() < 1:
        raise ValueError(f"every problem needs n >= 1 samples, got n={int(n_arr.min())}")
    bad = (c_arr < 0) | (c_arr > n_arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"c must satisfy 0 <= c <= n, got c={int(c_arr[i])} with n={int(n_arr[i])} (problem {i})")
    return n_arr, c_arr


def _check_ks(ks: int | Sequence[int], n: np.ndarray) -> list[int]:
    ks_list = [ks] if isinstance(ks, numbers.Integral) else list(ks)
    if not ks_list:
        raise ValueError("ks must name at least one k")
    for k in ks_list:
        check_int(k)
    k_max, n_min = max(ks_list), int(n.min())
    if k_max > n_min:
        raise ValueError(f"k={k_max} exceeds the number of samples n={n_min} of some problem (pass@k needs k <= n)")
    return [int(k) for k in ks_list]


def _check_bootstrap_args(resamples: int, level: float) -> None:
    check_int(resamples, "resamples", minimum=2)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


# ----------------------------------------------------------------------------- bootstrap


class _Resampler:
    """Bootstrap replicates of mean pass@k for one model's (n, c), at several ks."""

    def __init__(self, n: np.ndarray, c: np.ndarray, ks: list[int]):
        self.n, self.c, self.ks = n, c, ks
        self.per_problem = np.stack([np.asarray(pass_at_k(n, c, k), dtype=np.float64) for k in ks], axis=1)  # [P, K]
        self._table: np.ndarray | None = None

    def _two_level_tables(self) -> None:
        # pass@k(u, c', k) for every distinct n = u and every c' in 0..u, stacked: row offset[u] + c'.
        uniq = np.unique(self.n)
        sizes = uniq + 1
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._table = np.concatenate(
            [np.stack([np.asarray(pass_at_k(int(u), np.arange(u + 1), k)) for k in self.ks], axis=1) for u in uniq]
        )  # [sum(u + 1), K]
        self._offset = starts[np.searchsorted(uniq, self.n)]  # [P]
        p = self.c / self.n
        # E[pass@k(n, c*)] for c* ~ Binomial(n, p) is exactly 1 - (1 - p)^k (the estimator is unbiased).
        self._expected = 1.0 - (1.0 - p[:, None]) ** np.asarray(self.ks)[None, :]  # [P, K]

    def replicates(self, idx: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Mean pass@k over the problems idx [R, P] -> [R, K]; within-problem noise if rng is given."""
        reps = self.per_problem[idx].mean(axis=1)  # [R, K]
        if rng is None:
            return reps
        if self._table is None:
            self._two_level_tables()
        n_i, c_i = self.n[idx], self.c[idx]  # [R, P]
        c_star = rng.binomial(n_i, c_i / n_i)  # [R, P]
        noise = self._table[self._offset[idx] + c_star] - self._expected[idx]  # [R, P, K]
        return reps + noise.mean(axis=1)


def _chunks(resamples: int, problems: int, ks: int) -> list[int]:
    size = max(1, _CHUNK_CELLS // max(1, problems * ks))
    return [min(size, resamples - s) for s in range(0, resamples, size)]


def _interval(reps: np.ndarray, level: float, lo_clip: float, hi_clip: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    return np.clip(lo, lo_clip, hi_clip), np.clip(hi, lo_clip, hi_clip)


def bootstrap_pass_at_k(
    n: int | Sequence[int] | np.ndarray,
    c: Sequence[int] | np.ndarray,
    ks: int | Sequence[int],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    two_level: bool = DEFAULT_TWO_LEVEL,
) -> dict[int, tuple[float, float, float]]:
    """{k: (mean pass@k, lo, hi)} with a bootstrap percentile interval over problems.

    `mean` is the estimate on the data. The interval resamples problems with
    replacement (`resamples` times, numpy Generator seeded with `seed`, so the same
    seed gives the same interval). With `two_level=True` (the default) each resampled
    problem's outcomes are resampled too, c* ~ Binomial(n, c/n), entering as centred
    noise (see the module docstring), which adds the within-problem sampling noise
    that a one-level bootstrap (`two_level=False`) ignores; it matters when n is small.
    """
    n_arr, c_arr = _problems(n, c)
    ks_list = _check_ks(ks, n_arr)
    _check_bootstrap_args(resamples, level)
    rng = np.random.default_rng(seed)
    res = _Resampler(n_arr, c_arr, ks_list)
    P = n_arr.size
    reps = []
    for r in _chunks(resamples, P, len(ks_list)):
        idx = rng.integers(0, P, size=(r, P))
        reps.append(res.replicates(idx, rng if two_level else None))
    lo, hi = _interval(np.concatenate(reps), level, 0.0, 1.0)
    est = res.per_problem.mean(axis=0)
    return {k: (float(est[j]), float(lo[j]), float(hi[j])) for j, k in enumerate(ks_list)}


def standard_error(n: int | Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, k: int) -> float:
    """Standard error over problems of mean pass@k: std(per-problem pass@k, ddof=1) / sqrt(P).

    Needs at least two problems. It treats each problem's pass@k as known, so it
    leaves out the within-problem sampling noise (see `bootstrap_pass_at_k(two_level=True)`).
    """
    n_arr, c_arr = _problems(n, c)
    _check_ks(k, n_arr)
    if n_arr.size < 2:
        raise ValueError("standard_error needs at least 2 problems")
    per_problem = np.asarray(pass_at_k(n_arr, c_arr, k), dtype=np.float64)
    return float(per_problem.std(ddof=1) / math.sqrt(per_problem.size))


def pass_at_k_diff_ci(
    n_a: int | Sequence[int] | np.ndarray,
    c_a: Sequence[int] | np.ndarray,
    n_b: int | Sequence[int] | np.ndarray,
    c_b: Sequence[int] | np.ndarray,
    k_a: int,
    k_b: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    two_level: bool = DEFAULT_TWO_LEVEL,
) -> tuple[float, float, float]:
    """(diff, lo, hi) for diff = pass@k_a(A) - pass@k_b(B), paired bootstrap over problems.

    A and B must be scored on the same problems in the same order: each replicate
    resamples one set of problem indices and uses it for both, so the shared
    problem difficulty cancels (a much tighter interval than two independent
    bootstraps). With `two_level=True` each model's outcomes are resampled
    independently within problems as in `bootstrap_pass_at_k`. Clipped to [-1, 1].
    """
    for k, name in ((k_a, "k_a"), (k_b, "k_b")):
        if not isinstance(k, numbers.Integral):
            raise ValueError(f"{name} must be one int, got {k!r}")
    (out,) = bootstrap_pass_at_k_combination(
        [(n_a, c_a, [k_a], 1.0), (n_b, c_b, [k_b], -1.0)],
        resamples=resamples,
        seed=seed,
        level=level,
        two_level=two_level,
    )
    return out


def bootstrap_pass_at_k_combination(
    terms: Sequence[tuple[Any, Any, Sequence[int], float]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    two_level: bool = DEFAULT_TWO_LEVEL,
) -> list[tuple[float, float, float]]:
    """[(value, lo, hi)] for value_j = sum_i w_i * mean pass@k_ij(model i), paired over problems.

    `terms` is one (n, c, ks, w) per model, every model scored on the same problems
    in the same order and every `ks` of the same length L; the result has one
    (value, lo, hi) per position j < L. Each replicate resamples one set of problem
    indices and uses it for every model (and, with `two_level`, each model's outcomes
    within problems independently), so shared problem difficulty cancels. Examples:
    a difference [(a, [k_a], 1), (b, [k_b], -1)] (`pass_at_k_diff_ci`); a mean over
    S seeds' models [(m_s, ks, 1/S) ...]; dSE of a seed mean [(base, [K], 1), (m_s, [1], -1/S) ...].
    The interval is clipped to [sum of negative w, sum of positive w].
    """
    if not terms:
        raise ValueError("need at least one (n, c, ks, weight) term")
    _check_bootstrap_args(resamples, level)
    models = []
    for i, (n, c, ks, w) in enumerate(terms):
        n_arr, c_arr = _problems(n, c)
        if models and n_arr.size != models[0][0].n.size:
            raise ValueError(
                f"a paired bootstrap needs the same problems for every model: got {models[0][0].n.size} "
                f"and {n_arr.size} problems (term {i})"
            )
        ks_list = _check_ks(ks, n_arr)
        if models and len(ks_list) != len(models[0][0].ks):
            raise ValueError(f"every term needs as many ks: {len(models[0][0].ks)} and {len(ks_list)} (term {i})")
        if not isinstance(w, numbers.Real) or not math.isfinite(w):
            raise ValueError(f"term {i}: weight must be a finite number, got {w!r}")
        models.append((_Resampler(n_arr, c_arr, ks_list), float(w)))
    rng = np.random.default_rng(seed)
    P, L = models[0][0].n.size, len(models[0][0].ks)
    reps = []
    for r in _chunks(resamples, P, L):  # the models one after another: the same memory as one
        idx = rng.integers(0, P, size=(r, P))
        noise_rng = rng if two_level else None
        reps.append(sum(w * res.replicates(idx, noise_rng) for res, w in models))
    lo_clip = sum(min(w, 0.0) for _, w in models)
    hi_clip = sum(max(w, 0.0) for _, w in models)
    lo, hi = _interval(np.concatenate(reps), level, lo_clip, hi_clip)
    est = sum(w * res.per_problem.mean(axis=0) for res, w in models)
    return [(float(est[j]), float(lo[j]), float(hi[j])) for j in range(L)]


# ----------------------------------------------------------------------------- expand or sharpen


def sampling_efficiency_gap(
    base_n: int | Sequence[int] | np.ndarray,
    base_c: Sequence[int] | np.ndarray,
    model_n: int | Sequence[int] | np.ndarray,
    model_c: Sequence[int] | np.ndarray,
    K: int = 256,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    two_level: bool = DEFAULT_TWO_LEVEL,
) -> dict[str, float | int]:
    """dSE = pass@K(base) - pass@1(model), with a paired bootstrap interval. Lower is better.

    It measures how far the trained model's single try falls short of what the base
    model reaches with K tries (the paper's Omni test set: 41.0 to 45.3 points). K
    is clipped to the smallest base n, with a warning naming both. Returns
    {"dse", "lo", "hi", "K" (the K used), "base_pass_at_K", "model_pass_at_1"}.
    """
    bn, bc = _problems(base_n, base_c)
    mn, mc = _problems(model_n, model_c)
    check_int(K, "K")
    k_used = int(K)
    if k_used > int(bn.min()):
        k_used = int(bn.min())
        warnings.warn(
            f"sampling_efficiency_gap: K={K} exceeds the base model's smallest n={k_used}; clipped to K={k_used}",
            stacklevel=2,
        )
    dse, lo, hi = pass_at_k_diff_ci(
        bn, bc, mn, mc, k_used, 1, resamples=resamples, seed=seed, level=level, two_level=two_level
    )
    return {
        "dse": dse,
        "lo": lo,
        "hi": hi,
        "K": k_used,
        "base_pass_at_K": mean_pass_at_k(bn, bc, k_used),
        "model_pass_at_1": mean_pass_at_k(mn, mc, 1),
    }


def _point(value: float | Sequence[float]) -> float:
    """The estimate of a curve entry: a float, or the first item of (mean, lo, hi)."""
    if isinstance(value, numbers.Real):
        return float(value)
    return float(value[0])


def crossover_k_from_counts(
    base_n: int | Sequence[int] | np.ndarray,
    base_c: Sequence[int] | np.ndarray,
    model_n: int | Sequence[int] | np.ndarray,
    model_c: Sequence[int] | np.ndarray,
) -> int | None:
    """k* from per-problem counts: `crossover_k` on pass@k at every k = 1 .. the smallest n of
    both models (`pass_at_k_all`), not only on the power-of-two grid of the tables (where curves
    crossing at k = 5 read as k* = 8)."""
    bn, bc = _problems(base_n, base_c)
    mn, mc = _problems(model_n, model_c)
    if bn.size != mn.size:
        raise ValueError(f"k* needs the same problems for both: got {bn.size} and {mn.size} problems")
    return crossover_k(pass_at_k_all(bn, bc), pass_at_k_all(mn, mc))


def crossover_k(
    base_curve: Mapping[int, float | Sequence[float]],
    model_curve: Mapping[int, float | Sequence[float]],
    *,
    tol: float = 1e-12,
) -> int | None:
    """k*: the smallest k at which the base model's pass@k >= the trained model's.

    Only the ks present in both curves are compared, in increasing order. Values
    may be floats or (mean, lo, hi) tuples (the mean is used). Ties count as
    crossing: a touch (base == model, within `tol` to absorb float rounding)
    returns that k, so two curves that are equal at k = 1 give k* = 1 even if the
    trained model pulls ahead later. None if the base is below at every common k.
    """
    common = sorted(set(base_curve) & set(model_curve))
    if not common:
        raise ValueError(f"the curves share no k: base has {sorted(base_curve)}, model has {sorted(model_curve)}")
    for k in common:
        if _point(base_curve[k]) >= _point(model_curve[k]) - tol:
            return int(k)
    return None


def coverage(
    base_c: Sequence[int] | np.ndarray,
    model_c: Sequence[int] | np.ndarray,
    ids: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Solvable sets (c > 0) of the base and the trained model, compared.

    Problems are identified by position, or by `ids` (one per problem) if given.
    Returns counts {"both", "base_only", "model_only", "neither", "base", "model"},
    "jaccard" = |both| / |base or model| (nan when neither solves anything), and
    "ids": {"both", "base_only", "model_only", "neither"} -> list of problem ids.
    "model_only" non-empty is what expansion looks like; "base_only" is lost coverage.
    """
    b = _as_int_array(base_c, "base_c")
    m = _as_int_array(model_c, "model_c")
    if b.ndim != 1 or b.shape != m.shape:
        raise ValueError(f"base_c and model_c must be 1-D with one count per problem, got shapes {b.shape}, {m.shape}")
    if (b < 0).any() or (m < 0).any():
        raise ValueError("counts c must be >= 0")
    keys = list(range(b.size)) if ids is None else list(ids)
    if len(keys) != b.size:
        raise ValueError(f"ids must name each problem once: got {len(keys)} ids for {b.size} problems")
    bs, ms = b > 0, m > 0
    masks = {"both": bs & ms, "base_only": bs & ~ms, "model_only": ~bs & ms, "neither": ~bs & ~ms}
    out: dict[str, Any] = {name: int(mask.sum()) for name, mask in masks.items()}
    out["base"], out["model"] = int(bs.sum()), int(ms.sum())
    union = int((bs | ms).sum())
    out["jaccard"] = out["both"] / union if union else float("nan")
    out["ids"] = {name: [keys[i] for i in np.flatnonzero(mask)] for name, mask in masks.items()}
    return out


def accuracy_histogram(n: int | Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray) -> dict[str, int]:
    """Count of problems per accuracy bin c/n: {0}, (0,0.1], ..., (0.8,0.9], (0.9,1), {1}.

    Labels are `HISTOGRAM_BINS`, in order, every bin present (zeros included).
    Binning is done in integers (bin = ceil(10 c / n) for 0 < c < n), so c/n exactly
    0.1 lands in (0,0.1] and exactly 0.9 in (0.8,0.9] with no float rounding.
    """
    n_arr, c_arr = _problems(n, c)
    counts = dict.fromkeys(HISTOGRAM_BINS, 0)
    inner = -(-10 * c_arr // n_arr)  # ceil(10 c / n): 1..10 when 0 < c < n
    for ni, ci, b in zip(n_arr, c_arr, inner, strict=True):
        if ci == 0:
            counts["0"] += 1
        elif ci == ni:
            counts["1"] += 1
        else:
            counts[HISTOGRAM_BINS[int(b)]] += 1
    return counts


def cover_at_tau(n: int | Sequence[int] | np.ndarray, c: Sequence[int] | np.ndarray, tau: float) -> float:
    """Cover@tau: the fraction of problems whose accuracy c/n is >= tau (tau in [0, 1])."""
    n_arr, c_arr = _problems(n, c)
    if not isinstance(tau, numbers.Real) or not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau!r}")
    return float(np.mean(c_arr / n_arr >= tau))


# ----------------------------------------------------------------------------- majority vote


def _majority_correct(codes: np.ndarray, code_correct: np.ndarray) -> bool:
    """Whether the most frequent non-None code (ties: smallest code) is correct."""
    valid = codes[codes >= 0]
    if valid.size == 0:
        return False
    counts = np.bincount(valid, minlength=code_correct.size)
    return bool(code_correct[int(np.argmax(counts))])


def maj_at_k(
    answers_per_problem: Sequence[Sequence[str | None]],
    correct_per_problem: Sequence[Sequence[bool]],
    k: int,
    *,
    seed: int = 0,
    resamples: int = 200,
) -> float:
    """maj@k: expected accuracy of a majority vote over k of a problem's n samples.

    For each problem, k samples are drawn without replacement and their extracted
    answers voted on (answers equal as strings are one answer). None (extraction
    failed) casts no vote; a subset whose answers are all None counts as wrong.
    Ties go to the answer that appears first in the problem's sample order. The
    winner's correctness is that of its first sample (equal strings are assumed
    graded alike). The per-problem expectation is exact, over every k-subset, when
    C(n, k) <= `resamples` (always for k = n); otherwise it is a Monte Carlo mean
    over `resamples` random subsets from a Generator seeded with `seed` (each drawn
    as its answer counts, multivariate hypergeometric, all at once). Returns the
    mean over problems.
    """
    check_int(k)
    check_int(resamples, "resamples")
    if len(answers_per_problem) != len(correct_per_problem):
        raise ValueError(
            f"answers and correct flags must cover the same problems: "
            f"{len(answers_per_problem)} vs {len(correct_per_problem)}"
        )
    if not answers_per_problem:
        raise ValueError("maj_at_k needs at least one problem")
    sizes = [len(a) for a in answers_per_problem]
    for i, (a, f) in enumerate(zip(answers_per_problem, correct_per_problem, strict=True)):
        if len(a) != len(f):
            raise ValueError(f"problem {i}: {len(a)} answers but {len(f)} correct flags")
    if k > min(sizes):
        raise ValueError(f"k={k} exceeds the number of samples n={min(sizes)} of some problem (maj@k needs k <= n)")

    rng = np.random.default_rng(seed)
    scores = []
    for answers, flags in zip(answers_per_problem, correct_per_problem, strict=True):
        # Codes in order of first appearance, so argmax's first-max rule is "earliest answer wins".
        first: dict[str, int] = {}
        code_correct: list[bool] = []
        codes = np.empty(len(answers), dtype=np.int64)
        for j, (ans, ok) in enumerate(zip(answers, flags, strict=True)):
            if ans is None:
                codes[j] = -1
                continue
            if ans not in first:
                first[ans] = len(first)
                code_correct.append(bool(ok))
            codes[j] = first[ans]
        cc = np.asarray(code_correct, dtype=bool)
        n = len(answers)
        if not first:
            scores.append(0.0)
        elif math.comb(n, k) <= resamples:
            subsets = itertools.combinations(range(n), k)
            wins = [_majority_correct(codes[list(s)], cc) for s in subsets]
            scores.append(float(np.mean(wins)))
        else:
            # a random k-subset's vote depends only on how many of each answer it holds: draw those counts
            # (multivariate hypergeometric; column 0: None) for all resamples at once
            drawn = rng.multivariate_hypergeometric(np.bincount(codes + 1, minlength=cc.size + 1), k, size=resamples)
            votes = drawn[:, 1:]
            wins = cc[votes.argmax(1)] & (votes.max(1) > 0)  # argmax: the earliest answer of the most votes
            scores.append(float(np.mean(wins)))
    return float(np.mean(scores))


# ----------------------------------------------------------------------------- samples table

_REQUIRED = ("problem_id", "reward", "correct", "tokens", "finish_reason", "answer")


def _nanmean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize_samples(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-problem (ids, n, c) and hygiene statistics from a table of samples.

    Each row is one sample: {problem_id, reward (float), correct (bool), tokens
    (int, response length), finish_reason ('stop' | 'length'), answer (extracted
    str, or None when extraction failed)}. Problems are ordered by first
    appearance; n may differ between problems. (Token entropy is measured under a
    model, not read from rows: `rlvr.eval.perplexity.perplexity_cross_terms`.)

    Returns:
        ids, n, c: problem ids (list) and per-problem counts (int64 arrays), ready
            for every other function here.
        avg_at_n: mean over problems of c/n (= pass@1).
        mean_reward: mean reward over samples.
        distinct_answers: per problem, the number of distinct non-None answers
            (array); distinct_answers_mean its mean.
        length_mean, length_correct_mean, length_wrong_mean: mean tokens over all,
            correct and wrong samples (nan for an empty group).
        truncation_rate: fraction with finish_reason == 'length'.
        extraction_failure_rate: fraction with answer None.
        samples, problems: totals.
    """
    if not rows:
        raise ValueError("summarize_samples needs at least one row")
    order: dict[Hashable, int] = {}
    n: list[int] = []
    c: list[int] = []
    answers: list[set[str]] = []
    len_ok: list[float] = []
    len_bad: list[float] = []
    rewards: list[float] = []
    truncated = failed = 0
    for i, row in enumerate(rows):
        missing = [key for key in _REQUIRED if key not in row]
        if missing:
            raise ValueError(f"row {i} lacks {missing} (needs {list(_REQUIRED)})")
        ok, finish, tokens = row["correct"], row["finish_reason"], row["tokens"]
        if not isinstance(ok, (bool, np.bool_)):
            raise ValueError(f"row {i}: correct must be a bool, got {ok!r}")
        if finish not in ("stop", "length"):
            raise ValueError(f"row {i}: finish_reason must be 'stop' or 'length', got {finish!r}")
        check_int(tokens, f"row {i}: tokens", minimum=0)
        if row["answer"] is not None and not isinstance(row["answer"], str):
            raise ValueError(f"row {i}: answer must be a str or None, got {row['answer']!r}")
        pid = row["problem_id"]
        if pid not in order:
            order[pid] = len(order)
            n.append(0)
            c.append(0)
            answers.append(set())
        j = order[pid]
        n[j] += 1
        c[j] += int(bool(ok))
        (len_ok if ok else len_bad).append(float(tokens))
        rewards.append(float(row["reward"]))
        truncated += finish == "length"
        if row["answer"] is None:
            failed += 1
        else:
            answers[j].add(row["answer"])
    n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    distinct = np.asarray([len(a) for a in answers], dtype=np.int64)
    total = len(rows)
    return {
        "ids": list(order),
        "n": n_arr,
        "c": c_arr,
        "avg_at_n": float(np.mean(c_arr / n_arr)),
        "mean_reward": float(np.mean(rewards)),
        "distinct_answers": distinct,
        "distinct_answers_mean": float(distinct.mean()),
        "length_mean": _nanmean(len_ok + len_bad),
        "length_correct_mean": _nanmean(len_ok),
        "length_wrong_mean": _nanmean(len_bad),
        "truncation_rate": truncated / total,
        "extraction_failure_rate": failed / total,
        "samples": total,
        "problems": len(order),
    }
