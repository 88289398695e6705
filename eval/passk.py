"""pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language
Models Trained on Code", HumanEval).

With n samples per problem of which c are correct, the probability that at least one
of k samples drawn without replacement from those n is correct is

    pass@k = 1 - C(n - c, k) / C(n, k)
           = 1 - prod_{i = n-c+1}^{n} (1 - k / i)        (when n - c >= k)
           = 1                                           (when n - c < k: every
                                                          k-subset holds a correct one)

The product form never builds the huge binomials (n = 256, k = 128 overflows floats
in the ratio form), so it is the one used here.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["mean_pass_at_k", "pass_at_k", "pass_at_k_all", "pass_at_k_curve"]


def _as_int_array(value: int | np.ndarray, name: str) -> np.ndarray:
    """`value` as an int64 array; integral floats are accepted, fractions are not."""
    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integers, got {value!r}")
    return arr.astype(np.int64)


def check_int(value: int, name: str = "k", minimum: int = 1) -> int:
    """`value` as an int, or a ValueError naming it: the one check of every k, K and count here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def pass_at_k(n: int | np.ndarray, c: int | np.ndarray, k: int) -> float | np.ndarray:
    """Unbiased pass@k per problem, from n samples with c correct.

    `n` and `c` broadcast against each other (a different n per problem is fine). The
    result is a float when both are scalars, else a float64 array of the broadcast
    shape. Raises ValueError if k > n for any problem (naming k and the smallest n),
    or if c < 0 or c > n.
    """
    k = check_int(k)
    n_arr = _as_int_array(n, "n")
    c_arr = _as_int_array(c, "c")
    n_b, c_b = np.broadcast_arrays(n_arr, c_arr)
    if n_b.size == 0:
        out = np.zeros(n_b.shape, dtype=np.float64)
        return out if (np.ndim(n) > 0 or np.ndim(c) > 0) else float(out)
    n_min = int(n_b.min())
    if k > n_min:
        raise ValueError(f"k={k} exceeds the number of samples n={n_min} of some problem (pass@k needs k <= n)")
    bad = (c_b < 0) | (c_b > n_b)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise ValueError(f"c must satisfy 0 <= c <= n, got c={int(c_b[i])} with n={int(n_b[i])}")

    out = np.ones(n_b.shape, dtype=np.float64)
    for idx in np.ndindex(n_b.shape):
        ni, ci = int(n_b[idx]), int(c_b[idx])
        if ni - ci >= k:
            # One factor (1 - k/i) per correct sample: C(n-c, k) / C(n, k) as a product.
            out[idx] = 1.0 - float(np.prod(1.0 - k / np.arange(ni - ci + 1, ni + 1, dtype=np.float64)))
    if np.ndim(n) > 0 or np.ndim(c) > 0:
        return out
    return float(out)


def mean_pass_at_k(n: int | np.ndarray, c: int | np.ndarray, k: int) -> float:
    """pass@k averaged over problems (the number reported in tables)."""
    per_problem = np.asarray(pass_at_k(n, c, k))
    if per_problem.size == 0:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return float(per_problem.mean())


def pass_at_k_curve(n: int | np.ndarray, c: int | np.ndarray, ks: list[int] | None = None) -> dict[int, float]:
    """{k: mean pass@k} for each k in `ks`.

    Default ks: powers of two 1, 2, 4, ... up to the smallest n, plus the smallest n
    itself when it is not a power of two (the largest k every problem supports).
    """
    if ks is None:
        n_arr = _as_int_array(n, "n")
        if n_arr.size == 0:
            raise ValueError("pass_at_k_curve needs at least one problem")
        n_min = int(n_arr.min())
        if n_min < 1:
            raise ValueError(f"pass_at_k_curve needs n >= 1 samples per problem, got n={n_min}")
        ks = [1 << p for p in range(n_min.bit_length()) if (1 << p) <= n_min]
        if ks[-1] != n_min:
            ks.append(n_min)
    return {int(k): mean_pass_at_k(n, c, k) for k in ks}


def pass_at_k_all(n: int | np.ndarray, c: int | np.ndarray) -> dict[int, float]:
    """{k: mean pass@k} at every k = 1 .. the smallest n: the dense curve that k* is read from.

    Problems that share (n, c) are computed once, each as a running product over k:
    C(n-c, k) / C(n, k) = prod_{j<k} (n-c-j) / (n-j), every factor in [0, 1]; the same
    numbers as `pass_at_k` at each k, in O(distinct (n, c) x n) instead of a loop per k.
    """
    n_arr = _as_int_array(n, "n")
    c_arr = _as_int_array(c, "c")
    n_b, c_b = (a.ravel() for a in np.broadcast_arrays(n_arr, c_arr))
    if n_b.size == 0:
        raise ValueError("pass_at_k_all needs at least one problem")
    if int(n_b.min()) < 1:
        raise ValueError(f"pass_at_k_all needs n >= 1 samples per problem, got n={int(n_b.min())}")
    bad = (c_b < 0) | (c_b > n_b)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"c must satisfy 0 <= c <= n, got c={int(c_b[i])} with n={int(n_b[i])}")
    k_max = int(n_b.min())
    pairs, weight = np.unique(np.stack([n_b, c_b], axis=1), axis=0, return_counts=True)
    j = np.arange(k_max, dtype=np.float64)
    total = np.zeros(k_max, dtype=np.float64)
    for (ni, ci), w in zip(pairs, weight, strict=True):
        miss = np.cumprod(np.clip((ni - ci - j) / (ni - j), 0.0, None))  # [k_max]: P(no correct in k draws)
        total += w * (1.0 - miss)
    return {k: float(v) for k, v in zip(range(1, k_max + 1), total / n_b.size, strict=True)}
