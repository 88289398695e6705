"""How cost grows: a training step against samples per prompt and response tokens, eval sampling against n.

    python bench/cost_growth.py [--steps 4] [--threads 1]

Issue 14 asks that cost stay linear in samples per prompt, in tokens and in eval n. Every point is a real
run on a random Qwen2 of the tiny model's shape (tests/helpers.py: hidden 64, 2 layers, a character
tokenizer; its eos is rare, so responses run to max_new_tokens and the token count is the one asked for):

- training: `Trainer.fit` of GRPO for --steps steps, 8 prompts a step; the mean `time/step` of every step
  after the first (its warm-up) over samples trained (n x 8) and over tokens trained (n x 8 x length);
- eval sampling: the hf engine's `generate` of 16 problems x n, 8 new tokens, best of 2 after a warm-up.

A column of seconds per unit that stays flat (within the machine's noise) as the unit count grows is
linear cost; one that falls is a fixed cost being amortised; one that rises is super-linear.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def train_step_seconds(model: Path, out: Path, n: int, tokens: int, steps: int) -> float:
    import helpers
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    out.mkdir(parents=True, exist_ok=True)
    cfg = helpers.write_config(
        out / "c.yaml",
        model,
        output_dir=str(out / "run"),
        data={"train_size": 64},
        rollout={"n": n, "max_new_tokens": tokens},
        train={"steps": steps, "prompts_per_step": 8, "micro_batch_size": 64, "lr": 1e-4},
        checkpoint={"every": 0},
        reward={"functions": [{"name": "helpers:graded"}]},
    )
    Trainer(load_config(cfg)).fit()
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    times = [r["time/step"] for r in rows if "time/step" in r][1:]
    return sum(times) / len(times)


def eval_seconds(model, tok, n: int) -> float:
    from rlvr.rollout import HFEngine, Sampling
    from rlvr.tasks import Problem

    problems = [Problem(prompt=f"{i} + {i} =", answer="", id=str(i)) for i in range(16)]
    engine, sampling = HFEngine(model, tok), Sampling(temperature=1.0, max_new_tokens=8)
    engine.generate(problems, n, sampling)  # warm-up
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        engine.generate(problems, n, sampling)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import helpers
    from rlvr.models import load_model_and_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = helpers.make_random_model(root / "m", hidden=64, heads=2, kv_heads=2)
        print("training step vs samples per prompt (8 prompts a step, 16 tokens a response)")
        print(f"{'n':>5} {'samples':>8} {'s/step':>8} {'ms/sample':>10}")
        for n in (2, 4, 8, 16):
            s = train_step_seconds(model, root / f"n{n}", n, 16, args.steps)
            print(f"{n:>5} {8 * n:>8} {s:>8.3f} {1000 * s / (8 * n):>10.2f}")
        print("\ntraining step vs response tokens (8 prompts x n = 8)")
        print(f"{'tokens':>6} {'trained':>8} {'s/step':>8} {'us/token':>9}")
        for length in (8, 16, 32, 48):
            s = train_step_seconds(model, root / f"t{length}", 8, length, args.steps)
            print(f"{length:>6} {64 * length:>8} {s:>8.3f} {1e6 * s / (64 * length):>9.1f}")
        print("\neval sampling vs n (16 problems, 8 new tokens, hf engine)")
        print(f"{'n':>5} {'samples':>8} {'s':>8} {'ms/sample':>10}")
        policy, tok = load_model_and_tokenizer(str(model))
        for n in (16, 64, 256):
            s = eval_seconds(policy, tok, n)
            print(f"{n:>5} {16 * n:>8} {s:>8.3f} {1000 * s / (16 * n):>10.3f}")


if __name__ == "__main__":
    main()
