"""Tests for rlvr.eval.metrics: hand-computed values on small made-up results."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from rlvr.eval.metrics import (
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
from rlvr.eval.passk import mean_pass_at_k, pass_at_k_curve

# ----------------------------------------------------------------------------- bootstrap


def _counts(problems: int = 60, n: int = 8, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n + 1, problems)


def test_bootstrap_reproducible_with_seed_and_different_with_another():
    c = _counts()
    for two_level in (False, True):
        a = bootstrap_pass_at_k(8, c, [1, 2, 8], resamples=300, seed=7, two_level=two_level)
        b = bootstrap_pass_at_k(8, c, [1, 2, 8], resamples=300, seed=7, two_level=two_level)
        other = bootstrap_pass_at_k(8, c, [1, 2, 8], resamples=300, seed=8, two_level=two_level)
        assert a == b
        assert a[1][0] == other[1][0]  # the estimate does not depend on the seed
        assert (a[1][1], a[1][2]) != (other[1][1], other[1][2])


def test_bootstrap_estimate_is_mean_pass_at_k_and_inside_its_interval():
    n = np.array([8, 8, 10, 12] * 15)
    c = _counts()
    c = np.minimum(c, n)
    for two_level in (False, True):
        got = bootstrap_pass_at_k(n, c, [1, 2, 4, 8], resamples=400, two_level=two_level)
        assert list(got) == [1, 2, 4, 8]
        for k, (mean, lo, hi) in got.items():
            assert mean == pytest.approx(mean_pass_at_k(n, c, k))
            assert 0.0 <= lo < mean < hi <= 1.0, (k, lo, mean, hi)


def test_one_level_bootstrap_of_a_half_solved_set():
    # 100 problems, half always solved, half never: pass@1 = 0.5. A replicate's mean is
    # Binomial(100, 0.5) / 100, sd 0.05, so the 95% interval is about 0.5 +- 1.96 * 0.05.
    c = np.array([4] * 50 + [0] * 50)
    mean, lo, hi = bootstrap_pass_at_k(4, c, [1], resamples=4000, seed=1, two_level=False)[1]
    assert mean == 0.5
    assert lo == pytest.approx(0.5 - 1.96 * 0.05, abs=0.015)
    assert hi == pytest.approx(0.5 + 1.96 * 0.05, abs=0.015)


def test_two_level_adds_within_problem_noise_identical_problems():
    # 50 identical problems with c=2 of n=4: resampling problems changes nothing (a zero-width
    # one-level interval). Resampling outcomes: pass@1 replicate = mean of 50 Binomial(4, 0.5)/4,
    # variance (0.5 * 0.5 / 4) / 50 = 0.00125, so the interval is 0.5 +- 1.96 * sqrt(0.00125).
    c = np.full(50, 2)
    _, lo1, hi1 = bootstrap_pass_at_k(4, c, [1], resamples=2000, two_level=False)[1]
    assert lo1 == hi1 == 0.5
    _, lo2, hi2 = bootstrap_pass_at_k(4, c, [1], resamples=2000, two_level=True)[1]
    half = 1.96 * math.sqrt(0.00125)  # 0.069
    assert lo2 == pytest.approx(0.5 - half, abs=0.015)
    assert hi2 == pytest.approx(0.5 + half, abs=0.015)


def test_two_level_is_the_default_everywhere():
    c, c2 = _counts(), _counts(seed=4)
    assert bootstrap_pass_at_k(8, c, [1, 4], resamples=200) == bootstrap_pass_at_k(
        8, c, [1, 4], resamples=200, two_level=True
    )
    assert bootstrap_pass_at_k(8, c, [1], resamples=200) != bootstrap_pass_at_k(
        8, c, [1], resamples=200, two_level=False
    )
    assert pass_at_k_diff_ci(8, c, 8, c2, 4, 1, resamples=200) == pass_at_k_diff_ci(
        8, c, 8, c2, 4, 1, resamples=200, two_level=True
    )
    assert pass_at_k_diff_ci(8, c, 8, c2, 4, 1, resamples=200) != pass_at_k_diff_ci(
        8, c, 8, c2, 4, 1, resamples=200, two_level=False
    )
    got = sampling_efficiency_gap(8, c, 8, c2, K=8, resamples=200)
    want = sampling_efficiency_gap(8, c, 8, c2, K=8, resamples=200, two_level=True)
    assert (got["lo"], got["hi"]) == (want["lo"], want["hi"])
    assert "two-level" in interval_name() and "one-level" in interval_name(False) and "95% CI" in interval_name()


def test_two_level_at_least_as_wide_on_average_with_small_n():
    c = _counts(problems=40, n=4, seed=11)
    widths = {False: [], True: []}
    for seed in range(5):
        for two_level in (False, True):
            got = bootstrap_pass_at_k(4, c, [1, 2], resamples=500, seed=seed, two_level=two_level)
            widths[two_level] += [hi - lo for _, lo, hi in got.values()]
    assert np.mean(widths[True]) > 1.1 * np.mean(widths[False])


def test_two_level_is_centred_on_the_unbiased_estimate():
    # c=1 of n=4, k=4: pass@4 = 1 exactly. Resampling the 4 outcomes with replacement loses the
    # one correct sample with probability (3/4)^4 = 0.32, so a naive two-level bootstrap would sit
    # near 0.68 and its interval would miss 1. The centred noise keeps the estimate inside.
    c = np.full(30, 1)
    mean, lo, hi = bootstrap_pass_at_k(4, c, [4], resamples=1000, two_level=True)[4]
    assert mean == 1.0
    assert hi == 1.0  # clipped to the metric's range
    assert lo < 0.95


def test_bootstrap_bad_input():
    with pytest.raises(ValueError, match=r"k=16.*n=8"):
        bootstrap_pass_at_k([8, 10], [1, 2], [1, 16])
    with pytest.raises(ValueError, match="c must satisfy"):
        bootstrap_pass_at_k(4, [1, 5], [1])
    with pytest.raises(ValueError, match="one entry per problem"):
        bootstrap_pass_at_k([4, 4, 4], [1, 2], [1])
    with pytest.raises(ValueError, match="level"):
        bootstrap_pass_at_k(4, [1, 2], [1], level=95)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_pass_at_k(4, [1, 2], [1], resamples=1)
    with pytest.raises(ValueError, match="at least one k"):
        bootstrap_pass_at_k(4, [1, 2], [])


def test_standard_error_by_hand():
    # pass@1 per problem 0, 0.5, 1: sample sd 0.5, se 0.5 / sqrt(3)
    assert standard_error(4, [0, 2, 4], 1) == pytest.approx(0.5 / math.sqrt(3))
    # pass@2 with n=4: c=1 -> 0.5, c=3 -> 1: sd = sqrt(0.125), se = sqrt(0.125) / sqrt(2) = 0.25
    assert standard_error(4, [1, 3], 2) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="2 problems"):
        standard_error(4, [1], 1)
    with pytest.raises(ValueError, match=r"k=5.*n=4"):
        standard_error(4, [1, 2], 5)


def test_diff_ci_paired():
    c = _counts()
    # the same results on both sides: every paired (one-level) replicate is exactly 0
    assert pass_at_k_diff_ci(8, c, 8, c, 1, 1, two_level=False) == (0.0, 0.0, 0.0)
    # B = A shifted by one correct sample on every problem: pass@1 differs by exactly 1/8 on
    # each problem, so every paired replicate is -1/8 too
    c_a = np.minimum(c, 7)
    diff, lo, hi = pass_at_k_diff_ci(8, c_a, 8, c_a + 1, 1, 1, two_level=False)
    assert (diff, lo, hi) == pytest.approx((-1 / 8, -1 / 8, -1 / 8), abs=1e-12)
    # pass@8 vs pass@1 on the same data: the difference and an interval around it
    diff, lo, hi = pass_at_k_diff_ci(8, c, 8, c, 8, 1, resamples=500)
    assert diff == pytest.approx(mean_pass_at_k(8, c, 8) - mean_pass_at_k(8, c, 1))
    assert lo < diff < hi
    with pytest.raises(ValueError, match="same problems"):
        pass_at_k_diff_ci(8, c, 8, c[:-1], 1, 1)


def test_combination_of_one_model_is_its_bootstrap():
    c = _counts()
    for two_level in (False, True):
        want = bootstrap_pass_at_k(8, c, [1, 2, 8], resamples=300, seed=5, two_level=two_level)
        got = bootstrap_pass_at_k_combination([(8, c, [1, 2, 8], 1.0)], resamples=300, seed=5, two_level=two_level)
        assert got == list(want.values())


def test_combination_seed_mean_and_dse_of_the_mean():
    c1, c2, base = _counts(seed=1), _counts(seed=2), _counts(seed=9)
    # the mean of two seeds at k = 1, 4: the estimate is the mean of their pass@k
    got = bootstrap_pass_at_k_combination([(8, c1, [1, 4], 0.5), (8, c2, [1, 4], 0.5)], resamples=300)
    for (est, lo, hi), k in zip(got, (1, 4), strict=True):
        assert est == pytest.approx((mean_pass_at_k(8, c1, k) + mean_pass_at_k(8, c2, k)) / 2)
        assert 0.0 <= lo < est < hi <= 1.0
    # two identical seeds, one level: the same replicates as one model (same problem draws)
    same = bootstrap_pass_at_k_combination([(8, c1, [1], 0.5), (8, c1, [1], 0.5)], resamples=300, two_level=False)
    assert same[0] == pytest.approx(bootstrap_pass_at_k(8, c1, [1], resamples=300, two_level=False)[1])
    # dSE of the seed mean = base pass@8 - mean of the seeds' pass@1, clipped to [-1, 1]
    ((d, lo, hi),) = bootstrap_pass_at_k_combination(
        [(8, base, [8], 1.0), (8, c1, [1], -0.5), (8, c2, [1], -0.5)], resamples=300
    )
    assert d == pytest.approx(mean_pass_at_k(8, base, 8) - (mean_pass_at_k(8, c1, 1) + mean_pass_at_k(8, c2, 1)) / 2)
    assert -1.0 <= lo < d < hi <= 1.0
    with pytest.raises(ValueError, match="same problems"):
        bootstrap_pass_at_k_combination([(8, c1, [1], 1.0), (8, c1[:-1], [1], -1.0)])
    with pytest.raises(ValueError, match="as many ks"):
        bootstrap_pass_at_k_combination([(8, c1, [1], 1.0), (8, c2, [1, 2], -1.0)])
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_pass_at_k_combination([])


# ----------------------------------------------------------------------------- dSE and k*


def test_sampling_efficiency_gap_by_hand():
    base_c, model_c = [1, 0, 4, 2], [3, 0, 4, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # K=2 <= n: no clipping, no warning
        got = sampling_efficiency_gap(4, base_c, 4, model_c, K=2, resamples=200)
    # base pass@2: c=1 -> 1 - C(3,2)/C(4,2) = 0.5; c=0 -> 0; c=4 -> 1; c=2 -> 1 - 1/6 = 5/6
    # model pass@1: 3/4, 0, 1, 1/4 -> mean 0.5
    assert got["K"] == 2
    assert got["base_pass_at_K"] == pytest.approx((0.5 + 0 + 1 + 5 / 6) / 4)
    assert got["model_pass_at_1"] == pytest.approx(0.5)
    assert got["dse"] == pytest.approx((0.5 + 0 + 1 + 5 / 6) / 4 - 0.5)
    assert got["lo"] <= got["dse"] <= got["hi"]


def test_sampling_efficiency_gap_clips_K_with_a_warning():
    with pytest.warns(UserWarning, match=r"K=256.*n=4.*K=4"):
        got = sampling_efficiency_gap([4, 6, 8, 4], [1, 0, 4, 2], 4, [3, 0, 4, 1], resamples=200)
    # base pass@4: c=1 of 4 -> 1; c=0 -> 0; c=4 of 8 -> 1 - C(4,4)/C(8,4) = 69/70; c=2 of 4 -> 1
    assert got["K"] == 4
    assert got["dse"] == pytest.approx((1 + 0 + 69 / 70 + 1) / 4 - 0.5)


BASE = {1: 0.2, 2: 0.4, 4: 0.6, 8: 0.8, 16: 0.9}


def test_crossover_when_curves_cross():
    trained = {1: 0.5, 2: 0.55, 4: 0.58, 8: 0.62, 16: 0.65}
    assert crossover_k(BASE, trained) == 4  # first k with base >= trained (0.6 >= 0.58)


def test_crossover_never():
    assert crossover_k(BASE, {k: v + 0.05 for k, v in BASE.items()}) is None


def test_crossover_touch_counts_as_crossing():
    trained = {1: 0.5, 2: 0.55, 4: 0.6, 8: 0.85, 16: 0.95}  # equal at k=4, above again later
    assert crossover_k(BASE, trained) == 4
    # a float-rounding tie is a tie: 0.1 + 0.2 != 0.3 in floats
    assert crossover_k({1: 0.1 + 0.2, 2: 0.5}, {1: 0.3, 2: 0.4}) == 1
    assert crossover_k({1: 0.3 - 1e-6, 2: 0.5}, {1: 0.3, 2: 0.4}) == 2


def test_crossover_from_counts_reads_every_k_not_powers_of_two():
    # base: every problem 1 correct of 16, pass@k = k/16; model: 6 of 20 problems always right, 0.3 at every k.
    # The curves cross at k = 5 (5/16 = 0.3125 >= 0.3 > 4/16); on the grid 1, 2, 4, 8, 16 the first k is 8.
    base_c, model_c = [1] * 20, [16] * 6 + [0] * 14
    assert crossover_k_from_counts(16, base_c, 16, model_c) == 5
    assert crossover_k(pass_at_k_curve(16, base_c), pass_at_k_curve(16, model_c)) == 8  # what the grid says
    # per-problem n: every k up to the smallest n of both
    assert crossover_k_from_counts([16] * 19 + [5], base_c, 16, model_c) == 5
    assert crossover_k_from_counts([16] * 19 + [4], base_c, 16, model_c) is None  # k = 5 is past n = 4
    assert crossover_k_from_counts(16, base_c, 16, [0] * 20) == 1
    with pytest.raises(ValueError, match="same problems"):
        crossover_k_from_counts(16, base_c, 16, model_c[:-1])


def test_crossover_uses_common_ks_and_accepts_bootstrap_tuples():
    base = {1: (0.2, 0.1, 0.3), 2: (0.4, 0.3, 0.5), 3: (0.9, 0.8, 1.0), 4: (0.6, 0.5, 0.7)}
    trained = {1: (0.5, 0.4, 0.6), 2: (0.55, 0.5, 0.6), 4: (0.58, 0.5, 0.65)}
    assert crossover_k(base, trained) == 4  # k=3 is only in the base curve
    assert crossover_k({1: 0.5}, {1: 0.4}) == 1  # base ahead from the start
    with pytest.raises(ValueError, match="share no k"):
        crossover_k({1: 0.5}, {2: 0.4})


# ----------------------------------------------------------------------------- coverage, histogram, cover@tau


def test_coverage_by_hand():
    base_c = [3, 0, 1, 0, 5, 0]
    model_c = [2, 1, 0, 0, 8, 0]
    got = coverage(base_c, model_c)
    # base solves {0, 2, 4}, model {0, 1, 4}: both {0, 4}, base only {2}, model only {1}, neither {3, 5}
    assert (got["both"], got["base_only"], got["model_only"], got["neither"]) == (2, 1, 1, 2)
    assert (got["base"], got["model"]) == (3, 3)
    assert got["jaccard"] == pytest.approx(2 / 4)
    assert got["ids"] == {"both": [0, 4], "base_only": [2], "model_only": [1], "neither": [3, 5]}
    named = coverage(base_c, model_c, ids=["a", "b", "c", "d", "e", "f"])
    assert named["ids"]["model_only"] == ["b"] and named["ids"]["neither"] == ["d", "f"]
    assert math.isnan(coverage([0, 0], [0, 0])["jaccard"])
    with pytest.raises(ValueError, match="ids"):
        coverage(base_c, model_c, ids=["a"])
    with pytest.raises(ValueError, match="one count per problem"):
        coverage([1, 2], [1])


def test_accuracy_histogram_bins_and_boundaries():
    n = [10, 10, 10, 10, 10, 10, 20, 20, 7, 3, 100, 10]
    c = [0, 1, 2, 9, 10, 3, 19, 1, 6, 1, 99, 7]
    # 0 -> "0"; 0.1 -> (0,0.1]; 0.2 -> (0.1,0.2]; 0.9 -> (0.8,0.9]; 1 -> "1"; 0.3 -> (0.2,0.3];
    # 0.95 -> (0.9,1); 0.05 -> (0,0.1]; 6/7 = 0.857 -> (0.8,0.9]; 1/3 -> (0.3,0.4]; 0.99 -> (0.9,1);
    # 0.7 -> (0.6,0.7]
    got = accuracy_histogram(n, c)
    assert list(got) == list(HISTOGRAM_BINS)
    assert len(got) == 12 and HISTOGRAM_BINS[0] == "0" and HISTOGRAM_BINS[-2:] == ("(0.9,1)", "1")
    expected = dict.fromkeys(HISTOGRAM_BINS, 0)
    expected.update(
        {
            "0": 1,
            "(0,0.1]": 2,
            "(0.1,0.2]": 1,
            "(0.2,0.3]": 1,
            "(0.3,0.4]": 1,
            "(0.6,0.7]": 1,
            "(0.8,0.9]": 2,
            "(0.9,1)": 2,
            "1": 1,
        }
    )
    assert got == expected
    assert sum(got.values()) == len(c)


def test_cover_at_tau_by_hand():
    n, c = 10, [0, 1, 3, 5, 10]  # accuracies 0, 0.1, 0.3, 0.5, 1
    assert cover_at_tau(n, c, 0.0) == 1.0
    assert cover_at_tau(n, c, 0.1) == pytest.approx(4 / 5)  # 0.1 >= 0.1 counts
    assert cover_at_tau(n, c, 0.3) == pytest.approx(3 / 5)
    assert cover_at_tau(n, c, 0.31) == pytest.approx(2 / 5)
    assert cover_at_tau(n, c, 1.0) == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="tau"):
        cover_at_tau(n, c, 1.5)


# ----------------------------------------------------------------------------- maj@k


def test_maj_at_k_all_samples_by_hand():
    answers = [
        ["a", "b", "a", None],  # a wins 2-1 -> correct
        ["x", "y", None, None],  # x and y tie 1-1: x appears first -> wrong
        [None, None, "z", None],  # None never wins: z is the only vote -> correct
        [None, None, None, None],  # no vote at all -> wrong
        ["p", "q", "q", "p"],  # tie 2-2: p first -> wrong (q, the right one, loses the tie)
    ]
    correct = [
        [True, False, True, False],
        [False, True, False, False],
        [False, False, True, False],
        [False, False, False, False],
        [False, True, True, False],
    ]
    assert maj_at_k(answers, correct, 4) == pytest.approx(2 / 5)


def test_maj_at_k_expectation_over_subsets():
    # answers a b b, a correct, k=2: subsets {a,b} tie -> a (first) correct, {a,b} correct,
    # {b,b} wrong -> 2/3, enumerated exactly since C(3,2)=3 <= resamples
    assert maj_at_k([["a", "b", "b"]], [[True, False, False]], 2) == pytest.approx(2 / 3)
    # k=1 is avg accuracy over non-None samples' answers: 1 of 3 -> 1/3
    assert maj_at_k([["a", "b", "b"]], [[True, False, False]], 1) == pytest.approx(1 / 3)
    # Monte Carlo when C(n, k) > resamples: n=12 answers "a"*4 + "b"*8, a correct, k=3.
    # a wins when >= 2 of the 3 are a: [C(4,2)C(8,1) + C(4,3)] / C(12,3) = (48 + 4) / 220
    answers = [["a"] * 4 + ["b"] * 8]
    correct = [[True] * 4 + [False] * 8]
    got = maj_at_k(answers, correct, 3, resamples=200, seed=0)
    assert got == pytest.approx(52 / 220, abs=0.07)
    assert got == maj_at_k(answers, correct, 3, resamples=200, seed=0)
    assert maj_at_k(answers, correct, 3, resamples=220) == pytest.approx(52 / 220)  # exact


def exact_maj(counts: dict, order: list, right: str, k: int) -> float:
    """maj@k by hand: every composition of a k-subset (x None, x of each answer), weighted by its number of
    subsets (prod C(m, x)); the most votes wins, ties to the earliest answer in `order`, None no vote."""
    import itertools
    import math

    names = [None, *order]
    total, win = 0, 0
    for xs in itertools.product(*(range(counts[a] + 1) for a in names)):
        if sum(xs) != k:
            continue
        w = math.prod(math.comb(counts[a], x) for a, x in zip(names, xs, strict=True))
        votes = xs[1:]
        total += w
        if max(votes) > 0 and order[votes.index(max(votes))] == right:
            win += w
    return win / total


def test_maj_at_k_monte_carlo_agrees_with_a_hand_count_on_ties_and_nones():
    """The Monte Carlo branch (C(24, 9) subsets > resamples; answer counts drawn at once) against an exact hand
    count: ties go to the earliest answer (b, the right one, appears before a), None casts no vote."""
    answers = [["b", None, "a", "c", None, "a"] + ["b", "a", None, "c"] * 4 + ["b", None]]
    counts = {a: answers[0].count(a) for a in (None, "a", "b", "c")}
    assert counts == {None: 7, "a": 6, "b": 6, "c": 5}
    correct = [[a == "b" for a in answers[0]]]
    exact = exact_maj(counts, ["b", "a", "c"], "b", 9)
    assert maj_at_k(answers, correct, 9, resamples=20_000, seed=1) == pytest.approx(exact, abs=0.017)  # 5 s.e.
    # a subset of Nones only is wrong: 20 Nones of 24, k = 3 (C(24, 3) = 2024 > 2000 resamples)
    sparse = [[None] * 10 + ["b", "a"] + [None] * 10 + ["b", "a"]]
    expect = exact_maj({None: 20, "a": 2, "b": 2}, ["b", "a"], "b", 3)
    assert maj_at_k(sparse, [[a == "b" for a in sparse[0]]], 3, resamples=2000) == pytest.approx(expect, abs=0.05)
    # the other tie rule or None as a vote would be off by more than that
    assert abs(exact_maj(counts, ["a", "b", "c"], "b", 9) - exact) > 0.05
    assert abs(exact_maj({**counts, None: 0, "n": 7}, ["b", "a", "c", "n"], "b", 9) - exact) > 0.05


def test_maj_at_k_bad_input():
    with pytest.raises(ValueError, match=r"k=3.*n=2"):
        maj_at_k([["a", "b"], ["a", "b", "c"]], [[True, False], [True, False, False]], 3)
    with pytest.raises(ValueError, match="problem 0"):
        maj_at_k([["a", "b"]], [[True]], 1)
    with pytest.raises(ValueError, match="same problems"):
        maj_at_k([["a"]], [], 1)


# ----------------------------------------------------------------------------- samples table


def _row(pid, correct, tokens, finish="stop", answer="1", entropy=None, reward=None):
    row = {
        "problem_id": pid,
        "reward": float(correct) if reward is None else reward,
        "correct": correct,
        "tokens": tokens,
        "finish_reason": finish,
        "answer": answer,
    }
    if entropy is not None:
        row["entropy"] = entropy
    return row


def test_summarize_samples_by_hand():
    rows = [
        _row("p1", True, 10, answer="4", entropy=0.5),
        _row("p2", False, 30, finish="length", answer=None, entropy=1.5),
        _row("p1", False, 20, answer="5"),
        _row("p1", True, 12, answer="4"),
        _row("p2", False, 40, answer="7"),
        _row("p3", True, 8, answer="9"),
    ]
    got = summarize_samples(rows)
    assert got["ids"] == ["p1", "p2", "p3"]
    np.testing.assert_array_equal(got["n"], [3, 2, 1])
    np.testing.assert_array_equal(got["c"], [2, 0, 1])
    assert got["avg_at_n"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert got["mean_reward"] == pytest.approx(3 / 6)
    assert "mean_entropy" not in got and "grader_timeout_rate" not in got  # no row source has them (issue 9)
    np.testing.assert_array_equal(got["distinct_answers"], [2, 1, 1])  # None is not an answer
    assert got["distinct_answers_mean"] == pytest.approx(4 / 3)
    assert got["length_correct_mean"] == pytest.approx((10 + 12 + 8) / 3)
    assert got["length_wrong_mean"] == pytest.approx((30 + 20 + 40) / 3)
    assert got["length_mean"] == pytest.approx(120 / 6)
    assert got["truncation_rate"] == pytest.approx(1 / 6)
    assert got["extraction_failure_rate"] == pytest.approx(1 / 6)
    assert (got["samples"], got["problems"]) == (6, 3)
    # the counts feed straight into the other metrics
    assert mean_pass_at_k(got["n"], got["c"], 1) == pytest.approx(got["avg_at_n"])


def test_summarize_samples_bad_rows():
    with pytest.raises(ValueError, match=r"row 1 lacks \['tokens'\]"):
        summarize_samples([_row("p", True, 3), {k: v for k, v in _row("p", True, 3).items() if k != "tokens"}])
    with pytest.raises(ValueError, match="finish_reason"):
        summarize_samples([_row("p", True, 3, finish="eos")])
    with pytest.raises(ValueError, match="correct must be a bool"):
        summarize_samples([_row("p", 1, 3)])
    with pytest.raises(ValueError, match="at least one row"):
        summarize_samples([])
