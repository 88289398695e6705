"""Eval sampling speed: a naive `generate(num_return_sequences=n)` loop vs rlvr's samplers (eval.sampler:
hf = HFEngine, shared_prefill and lean = rlvr/sampler.py), n samples of each of 64 held-out problems of the
embedded tiny model's task, max_new_tokens 8, top_k 0; fp32, 1 thread, the engines' batch size 256 (the
eval's default: at n = 256 one problem a generate call, as the naive loop). Ratios are from this one run
(time of the naive loop / time of the sampler: higher is faster), each the best of --repeats rounds that
interleave the four. The naive loop returns token ids only; the samplers also decode the texts and build the
RolloutBatch (make_batch), which the eval needs.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_sampling.py [--problems 64] [--n 16 256] [--repeats 3]
        [--temperature 1.0] [--top-p 1.0]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from rlvr import tiny
from rlvr.rollout import HFEngine, Sampling
from rlvr.sampler import LeanEngine, SharedPrefillEngine
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
            top_p=sampling.top_p,
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
    ap.add_argument("--repeats", type=int, default=3, help="best of this many interleaved rounds per measurement")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=1.0, help="1.0: the tiny recipes' eval; the paper's: 0.6")
    ap.add_argument("--top-p", type=float, default=1.0, help="1.0: the tiny recipes' eval; the paper's: 0.95")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = tiny.ensure_tiny_model()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    model.generation_config = GenerationConfig()  # as HFEngine samples: no checkpoint defaults
    tok = AutoTokenizer.from_pretrained(path)
    problems = reasoning_gym_problems(tiny.TINY_TASK["name"], tiny.TINY_TASK["config"], "eval", args.problems, seed=1)
    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, top_k=0, max_new_tokens=8)
    samplers = {
        "hf": HFEngine(model, tok),
        "shared_prefill": SharedPrefillEngine(model, tok),
        "lean": LeanEngine(model, tok),
    }
    print(
        f"{args.problems} problems, max_new_tokens 8, temperature {args.temperature}, top_p {args.top_p}, "
        f"fp32, {args.threads} thread(s), best of {args.repeats} interleaved rounds"
    )
    cols = ["n", "naive s", *(f"{name} s" for name in samplers), *(f"{name}/naive" for name in samplers)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("-" * (len(c) + 1) + ":" for c in cols) + "|")
    for n in args.n:
        fns = {"naive": partial(naive, model, tok, problems, n, sampling)}
        fns |= {name: partial(e.generate, problems, n, sampling) for name, e in samplers.items()}
        t = timed(fns, args.repeats)
        cells = [str(n), *(f"{t[name]:.2f}" for name in fns), *(f"{t['naive'] / t[name]:.2f}x" for name in samplers)]
        print("| " + " | ".join(f"{c:>{len(h)}}" for c, h in zip(cells, cols, strict=True)) + " |", flush=True)


if __name__ == "__main__":
    main()
