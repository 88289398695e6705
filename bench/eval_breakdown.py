"""Where the time of one whole `rlvr eval` goes: the CLI run in this process, its phases timed by wrapping
the functions that do them (nothing else changed). Run it on a fresh RLVR_CACHE (the base is sampled, not
read from the cache) that links the built tiny model, e.g.:

    mkdir -p /tmp/c && ln -sfn ~/.cache/rlvr/tiny-* /tmp/c/
    RLVR_CACHE=/tmp/c HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_breakdown.py --model RUN/final \\
        --n 256 --problems 256 --out /tmp/e

Every argument is `rlvr eval`'s. Phases (seconds of wall time; nested phases are reported apart, their
parent's time without them): imports (this script's imports of rlvr's CLI, eval, data and reward modules,
torch and transformers, before the run), problem generation (load_problems: the run's train and held-out
problems), model load, sampling (the sampler's generate calls, and the rest of sample_rows: the rows,
answer extraction, token-id lists), grading (the reward runner), pass@k with
its bootstrap, maj@k, the other per-model metrics, comparison metrics, perplexity cross-terms, writing the
samples, report and plots, and the rest (config, CLI, what no phase covers).
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import torch  # noqa: E402, F401
import transformers  # noqa: E402, F401

import rlvr.cli  # noqa: E402
import rlvr.data  # noqa: E402
import rlvr.eval.plots  # noqa: E402
import rlvr.eval.report  # noqa: E402
import rlvr.eval.runner as runner  # noqa: E402
import rlvr.models  # noqa: E402
import rlvr.rewards.runner  # noqa: E402
import rlvr.rollout  # noqa: E402
import rlvr.sampler  # noqa: E402

IMPORTS = time.perf_counter() - T0
spent: dict[str, float] = defaultdict(float)
stack: list[str] = []


@contextmanager
def phase(name: str):
    """Time `name`, its time not counted in the enclosing phase's (exclusive times)."""
    t = time.perf_counter()
    stack.append(name)
    child_before = spent.get(("child", name), 0.0)
    try:
        yield
    finally:
        stack.pop()
        dt = time.perf_counter() - t
        inner = spent.pop(("child", name), 0.0) - child_before
        spent[name] += dt - inner
        if stack:
            spent[("child", stack[-1])] += dt


def wrap(owner, attr: str, name: str) -> None:
    real = getattr(owner, attr)

    def timed(*args, **kwargs):
        with phase(name):
            return real(*args, **kwargs)

    setattr(owner, attr, timed)


wrap(rlvr.data, "load_problems", "problem generation")
wrap(rlvr.models, "load_model_and_tokenizer", "model load")
wrap(runner, "sample_rows", "sampling: rows, answers, token ids")
wrap(rlvr.rollout.HFEngine, "generate", "sampling: generate")
wrap(rlvr.sampler.SharedPrefillEngine, "generate", "sampling: generate")  # and LeanEngine's
wrap(rlvr.rewards.runner.RewardRunner, "__call__", "grading")
wrap(runner, "bootstrap_pass_at_k", "pass@k + bootstrap")
wrap(runner, "maj_at_k", "maj@k")
wrap(runner, "model_metrics", "other per-model metrics")
wrap(runner, "comparison_metrics", "comparison metrics")
wrap(runner, "perplexity_terms", "perplexity cross-terms")
wrap(runner._EvalRun, "write_rows", "writing samples")
wrap(rlvr.eval.report, "write_eval_report", "report + plots")


def main() -> None:
    with phase("rest (config, CLI, uncovered)"):
        rlvr.cli.main(["eval", *sys.argv[1:]])
    total = time.perf_counter() - T0
    rows = [("imports", IMPORTS)] + [(k, v) for k, v in spent.items() if isinstance(k, str)]
    order = [
        "imports",
        "problem generation",
        "model load",
        "sampling: generate",
        "sampling: rows, answers, token ids",
        "grading",
        "pass@k + bootstrap",
        "maj@k",
        "other per-model metrics",
        "comparison metrics",
        "perplexity cross-terms",
        "writing samples",
        "report + plots",
        "rest (config, CLI, uncovered)",
    ]
    rows.sort(key=lambda r: order.index(r[0]))
    print(f"\n`rlvr eval {' '.join(sys.argv[1:])}`: {total:.1f} s from this script's start\n")
    print("| phase | s | share |\n|---|--:|--:|")
    for name, s in rows:
        print(f"| {name} | {s:.2f} | {100 * s / total:.0f}% |")
    print(f"| total | {total:.2f} | 100% |")


if __name__ == "__main__":
    main()
