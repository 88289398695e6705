"""Tests for rlvr.eval.passk: the unbiased pass@k estimator against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rlvr.eval.passk import mean_pass_at_k, pass_at_k, pass_at_k_curve


def _brute_force(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c correct) that hold a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_matches_brute_force_enumeration_for_all_small_cases():
    checked = 0
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                got = pass_at_k(n, c, k)
                assert isinstance(got, float)
                assert got == pytest.approx(_brute_force(n, c, k), abs=1e-12), (n, c, k)
                checked += 1
    assert checked == sum((n + 1) * n for n in range(1, 9))  # 240 cases


def test_hand_values():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5 ; product form 1 - (1 - 2/4) = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7 ; product 1 - (1-2/4)(1-2/5) = 1 - 0.3
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)


def test_edge_cases():
    assert pass_at_k(10, 0, 3) == 0.0  # no correct sample
    assert pass_at_k(10, 10, 3) == 1.0  # all correct
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: the one correct sample is always drawn
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 8, 3) == 1.0  # n - c = 2 < k = 3: exactly 1, no float product


@pytest.mark.parametrize(("n", "c"), [(1, 0), (1, 1), (7, 3), (256, 17), (256, 0)])
def test_pass_at_1_is_fraction_correct(n, c):
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_large_n_is_stable():
    # n=256, k=128 overflows the binomial-ratio form; the product form stays in [0, 1]
    # and agrees with exact integer arithmetic.
    n, c, k = 256, 3, 128
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_arrays_with_different_n_per_problem():
    n = np.array([4, 5, 8, 10])
    c = np.array([1, 2, 0, 10])
    got = pass_at_k(n, c, 2)
    assert isinstance(got, np.ndarray) and got.shape == (4,)
    # 0.5 and 0.7 (hand values above), 0 (none correct), 1 (all correct)
    np.testing.assert_allclose(got, [0.5, 0.7, 0.0, 1.0])
    assert mean_pass_at_k(n, c, 2) == pytest.approx((0.5 + 0.7 + 0.0 + 1.0) / 4)
    # a scalar n broadcasts over per-problem c; lists are accepted too
    np.testing.assert_allclose(pass_at_k(4, [0, 1, 4], 2), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(pass_at_k([4, 5], 2, 1), [0.5, 0.4])
    for nn, cc, v in zip(n, c, got, strict=True):
        assert v == pytest.approx(_brute_force(int(nn), int(cc), 2))


def test_k_larger_than_n_raises_naming_k_and_smallest_n():
    with pytest.raises(ValueError, match=r"k=5.*n=4"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match=r"k=6.*n=5"):
        pass_at_k(np.array([8, 5, 7]), np.array([1, 1, 1]), 6)


@pytest.mark.parametrize(("n", "c"), [(4, -1), (4, 5), ([4, 4], [2, 5])])
def test_c_out_of_range_raises(n, c):
    with pytest.raises(ValueError, match="c"):
        pass_at_k(n, c, 1)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k_raises(k):
    with pytest.raises(ValueError, match="k"):
        pass_at_k(4, 1, k)


def test_curve_default_ks_and_values():
    n = np.array([12, 16])
    c = np.array([3, 0])
    curve = pass_at_k_curve(n, c)
    # powers of two up to min(n) = 12, then 12 itself
    assert list(curve) == [1, 2, 4, 8, 12]
    for k, v in curve.items():
        assert v == pytest.approx((_brute_force(12, 3, k) + 0.0) / 2)  # the 16-sample problem has none
    assert list(pass_at_k_curve(8, 2)) == [1, 2, 4, 8]  # 8 is a power of two: not repeated
    assert list(pass_at_k_curve(1, 1)) == [1]
    assert pass_at_k_curve(8, 2, ks=[3, 5]) == {
        3: pytest.approx(pass_at_k(8, 2, 3)),
        5: pytest.approx(pass_at_k(8, 2, 5)),
    }
    # pass@k is non-decreasing in k
    values = list(pass_at_k_curve(64, 5).values())
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(values))


def test_public_import_path():
    from rlvr.eval import coverage, crossover_k, pass_at_k, sampling_efficiency_gap  # noqa: F401

    assert pass_at_k(4, 1, 1) == 0.25


def test_all_ks_match_the_estimator_at_each_k():
    from rlvr.eval.passk import pass_at_k_all

    rng = np.random.default_rng(0)
    n = rng.integers(3, 20, 50)
    c = rng.binomial(n, rng.random(50))
    curve = pass_at_k_all(n, c)
    assert list(curve) == list(range(1, int(n.min()) + 1))  # every k up to the smallest n
    for k, v in curve.items():
        assert v == pytest.approx(
            np.mean([_brute_force(int(ni), int(ci), k) for ni, ci in zip(n, c, strict=True)]), abs=1e-12
        )
    big = pass_at_k_all(256, [0, 1, 5, 128, 255, 256])
    for k in (1, 2, 100, 255, 256):
        assert big[k] == pytest.approx(mean_pass_at_k(256, np.array([0, 1, 5, 128, 255, 256]), k), abs=1e-12)
    with pytest.raises(ValueError, match="c must satisfy"):
        pass_at_k_all(4, [5])
    with pytest.raises(ValueError, match="at least one"):
        pass_at_k_all(4, np.array([], dtype=int))
