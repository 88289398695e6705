"""Eval sampling speed: a naive `generate(num_return_sequences=n)` loop vs rlvr's HFEngine vs the
shared-prefill sampler (rlvr/sampler.py), n = 16 and 256 samples of 64 held-out problems of the embedded
tiny model's task, max_new_tokens 8, temperature 1, top_k 0, top_p 1; fp32, 1 thread. Ratios are from
this one run (time of the naive loop / time of the engine: higher is faster), each the best of --repeats\nrounds that interleave the three. The naive loop returns token ids only; the engines also decode the\ntexts and build the RolloutBatch (make_batch), which the eval needs.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_sampling.py [--problems 64] [--n 16 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from rlvr import tiny
from rlvr.rollout import HFEngine, Sampling
from rlvr.sampler import SharedPrefillEngine
from rlvr.tasks import reasoning_gym_problems
from rlvr.templates import encode_prompts


def naive(model, tok, problems, n, sampling):
    """One generate(num_return_sequences=n) per problem."""
    for p in problems:
        enc = encode_prompts(tok, [p], return_tensors="pt")
        model.generate(
            **enc,
            do_sample=True,
            num_return_sequences=n,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_k=0,
            top_p=1.0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )


def timed(fns: dict, repeats: int) -> dict:
    """Best wall time of each function over `repeats` rounds, the functions interleaved in each round
    (this machine is shared: interleaving spreads the noise over all of them alike)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            torch.manual_seed(0)
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--repeats", type=int, default=1, help="best of this many runs per measurement")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = tiny.ensure_tiny_model()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    model.generation_config = GenerationConfig()  # as HFEngine samples: no checkpoint defaults
    tok = AutoTokenizer.from_pretrained(path)
    problems = reasoning_gym_problems(tiny.TINY_TASK["name"], tiny.TINY_TASK["config"], "eval", args.problems, seed=1)
    sampling = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8)
    print(f"{args.problems} problems, max_new_tokens 8, temperature 1, fp32, {args.threads} thread(s)")
    print(f"{'n':>5} {'naive s':>9} {'HFEngine s':>11} {'shared s':>9} {'HF/naive':>9} {'shared/naive':>13}")
    hf, shared = HFEngine(model, tok), SharedPrefillEngine(model, tok)
    for n in args.n:
        t = timed(
            {
                "naive": partial(naive, model, tok, problems, n, sampling),
                "hf": partial(hf.generate, problems, n, sampling),
                "shared": partial(shared.generate, problems, n, sampling),
            },
            args.repeats,
        )
        print(
            f"{n:>5} {t['naive']:>9.2f} {t['hf']:>11.2f} {t['shared']:>9.2f} "
            f"{t['naive'] / t['hf']:>8.2f}x {t['naive'] / t['shared']:>12.2f}x"
        )


if __name__ == "__main__":
    main()
