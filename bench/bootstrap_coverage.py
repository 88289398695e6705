"""How often the 95% bootstrap interval of mean pass@k covers the truth: one level vs two levels.

Each trial draws P problems with solve rates p ~ Beta(a, b), n samples each (c ~ Binomial(n, p)),
and asks whether the interval of `bootstrap_pass_at_k` holds the truth: with `--target population`
the mean pass@k of the problems' population, E[1 - (1 - p)^k] = 1 - B(a, b + k) / B(a, b); with
`--target eval-set` that of the P problems drawn, mean_i 1 - (1 - p_i)^k. A 95% interval should
cover it in ~95% of trials.

    .venv/bin/python bench/bootstrap_coverage.py --trials 300      # a few minutes on 2 CPU cores

Not a test (it is slow and its figures are statistical); the default suite checks the two-level
interval's properties on hand-built cases (tests/test_eval_metrics.py).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from rlvr.eval.metrics import bootstrap_pass_at_k


def true_pass_at_k(a: float, b: float, k: int) -> float:
    log_beta = math.lgamma(a) + math.lgamma(b + k) - math.lgamma(a + b + k)
    log_beta0 = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return 1.0 - math.exp(log_beta - log_beta0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--a", type=float, default=0.4, help="Beta(a, b) of the problems' solve rates")
    ap.add_argument("--b", type=float, default=1.5)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", choices=["population", "eval-set"], default="population")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    truth = {k: true_pass_at_k(args.a, args.b, k) for k in args.ks}
    hits = {lvl: dict.fromkeys(args.ks, 0) for lvl in (False, True)}
    width = {lvl: dict.fromkeys(args.ks, 0.0) for lvl in (False, True)}
    for t in range(args.trials):
        p = rng.beta(args.a, args.b, args.problems)
        c = rng.binomial(args.n, p)
        if args.target == "eval-set":
            truth = {k: float(np.mean(1.0 - (1.0 - p) ** k)) for k in args.ks}
        for lvl in (False, True):
            got = bootstrap_pass_at_k(args.n, c, args.ks, resamples=args.resamples, seed=t, two_level=lvl)
            for k, (_, lo, hi) in got.items():
                hits[lvl][k] += lo <= truth[k] <= hi
                width[lvl][k] += (hi - lo) / args.trials
    print(
        f"{args.trials} trials, {args.problems} problems x n = {args.n}, p ~ Beta({args.a}, {args.b}), "
        f"{args.resamples} resamples, 95% intervals, truth: the {args.target}'s mean pass@k"
    )
    print("bootstrap  " + "  ".join(f"k={k}: cover / width (points)" for k in args.ks))
    for lvl, name in ((False, "one-level"), (True, "two-level")):
        print(
            f"{name:<10} "
            + "  ".join(
                f"k={k}: {100 * hits[lvl][k] / args.trials:5.1f}% / {100 * width[lvl][k]:4.1f}" for k in args.ks
            )
        )


if __name__ == "__main__":
    main()
