"""Forward+backward time of the embedded tiny model with 1 vs 2 torch threads (CPU).

    python bench/cpu_threads.py [--batch 128] [--seq 30] [--repeats 5]

Why rlvr defaults `train.cpu_threads` to 1: on the 2-core machines this project runs on, two
OpenMP threads wait on each other at every small op whenever the other core is busy (another
process, a second accelerate rank): measured ~20x slower (2.2 s vs 0.11 s per step) while
other jobs ran. On an idle machine 2 threads are ~20% faster (58.7 vs 74.0 ms). One thread
bounds the worst case. Prints ms per step and the ratio; run it idle and under load.
"""

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    from rlvr.tiny import ensure_tiny_model

    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model())
    ids = torch.randint(5, model.config.vocab_size, (args.batch, args.seq))
    times = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model(input_ids=ids).logits.mean().backward()  # warm-up
        t = time.perf_counter()
        for _ in range(args.repeats):
            model(input_ids=ids).logits.mean().backward()
        times[threads] = (time.perf_counter() - t) / args.repeats * 1000
        print(f"threads={threads}: {times[threads]:8.1f} ms per forward+backward (batch {args.batch} x {args.seq})")
    print(f"2 threads / 1 thread: {times[2] / times[1]:.2f}x the time")


if __name__ == "__main__":
    main()
