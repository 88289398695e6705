"""rlvr's GRPO training step against TRL's GRPOTrainer at equal work, interleaved step by step in one process.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/trl_step.py [--steps 12] [--warmup 2] [--memory-steps 3]

Both train the embedded tiny base (`rlvr build-base`; TRL loads the same cached HF directory) on the tiny
recipe's chain_sum prompts (recipes/tiny/grpo.yaml, `plain` template: the question as is, tokenized with the
tokenizer's default, as TRL tokenizes non-conversational prompts), rewarded by the same object, rlvr's
RewardRunner around the reasoning-gym verifier with `binary: true` (TRL calls it through a reward function).
One step is, on both sides: 32 prompts x 8 samples (max 8 new tokens, temperature 1, top_p 1, top_k 0), one
no-grad pass for the old log-probs, then two minibatches of 128 with one AdamW step each (lr 2e-4, 2 warm-up
steps then constant, grad clip 1.0), beta 0 (no reference model), fp32, torch.set_num_threads(1), no eval,
logging or checkpoints. TRL: per_device_train_batch_size=128, gradient_accumulation_steps=1,
steps_per_generation=2, num_iterations=1 (one generation of 256 feeds two optimizer steps; as
steps_per_generation > gradient_accumulation_steps TRL computes old log-probs for the whole batch), one TRL
"step" here being two of its optimizer steps, gradient_checkpointing off (TRL's default is on).
rlvr: `collect`, `train_on`, the guards and the weight sync: what `Trainer.fit` runs per step less its eval,
logging and checkpoint.

What still differs (none of it changes the work): TRL's loss_type "grpo" and rlvr's GRPO default
(seq-mean-token-mean) are the same aggregation; TRL divides by std + 1e-4, rlvr by std + 1e-6; rlvr's PPO
loss has the dual clip (clip_c 3) that TRL's lacks (the ratio is ~1 here, so neither clips); TRL shuffles the
256 samples before splitting, rlvr draws a random permutation: the same shape.

rlvr's rows: its defaults, then each of its two step savings off, then both off (the step as it was before
them but for a fix every row has: accelerate's unwrap_model, which reads package metadata, ~4 ms a call,
remembered per model, `sharding.unwrap`). `train.fused_old_logprobs` (rlvr/fused.py) takes the first minibatch's old log-probs from the update's
own forward (on-policy: they are the policy's), so the separate pass covers only the second minibatch;
`train.shared_prompt_forward` (rlvr/prefix.py) runs each distinct prompt of a micro-batch once in the
log-prob and update forwards, its responses on the prompt's KV cache. TRL runs every prompt 8 times and the
old-log-prob pass over all 256 samples, as `rlvr, both off` does.

Timing: a TRL callback times each pair of TRL optimizer steps (from the end of the previous pair, so TRL's
dataloader and loop overhead count) and then runs one step of each rlvr row, so all alternate step by step
after --warmup steps of each (--sampler adds a row with that rollout.sampler). Printed: median and IQR per
step, the ratios of medians, rlvr's time/* breakdown (rlvr/timing.py; `other` = step - the phases), and the
peak memory of each side, measured in a separate process per side (--memory-steps steps after one warm-up):
the peak RSS over those steps (VmHWM, reset after the warm-up through /proc/self/clear_refs) minus the RSS
before them, i.e. the working memory the steps add over the loaded model, libraries and data, and that peak
RSS itself. The table is also written to bench/results/trl_step.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "tiny" / "grpo.yaml"
PHASES = ("generate", "logprobs", "update", "reward")
PLAIN = "rlvr, both off"
VARIANTS = {  # rlvr's rows: the defaults, and each of the two step savings turned off (the last: the step before them)
    "rlvr": (),
    "rlvr, fused_old_logprobs off": ("train.fused_old_logprobs=false",),
    "rlvr, shared_prompt_forward off": ("train.shared_prompt_forward=false",),
    PLAIN: ("train.fused_old_logprobs=false", "train.shared_prompt_forward=false"),
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Linux: the process's peak RSS (VmHWM) back to its current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


class RlvrSide:
    """An rlvr Trainer stepped by hand: Trainer.fit's step body without eval, logging, checkpoint."""

    def __init__(self, out: Path, overrides: tuple[str, ...] = ()):
        from rlvr.config import load_config
        from rlvr.trainer import Trainer

        over = [
            f"output_dir={out}",
            "train.steps=1000",
            "train.cpu_threads=1",
            "eval.before=false",
            "eval.after=false",
            "eval.full=false",
            "checkpoint.every=0",
            "tracking.progress=false",
        ]
        self.trainer = Trainer(load_config(RECIPE, over + list(overrides)))
        self.trainer.write_run_files = lambda: None
        self.k = 0
        self.times: list[float] = []
        self.breakdown: list[dict[str, float]] = []

    def step(self, record: bool = True) -> None:
        from rlvr import sharding

        tr = self.trainer
        tr.step = self.k + 1
        t = time.perf_counter()
        tr.timer.start()
        batch, metrics = tr.collect(self.k)
        metrics.update(tr.batch_metrics(batch))
        metrics.update(tr.train_on(batch))
        tr.check_uniform(metrics)
        tr.engine.sync_weights(sharding.unwrap(tr.accelerator, tr.policy))
        m = tr.timer.metrics()
        dt = time.perf_counter() - t
        self.k += 1
        if record:
            self.times.append(dt)
            self.breakdown.append({p: m[f"time/{p}"] for p in PHASES} | {"step": m["time/step"]})


class TrlSide:
    """TRL's GRPOTrainer on the same checkpoint, prompts and reward; `run(callback)` trains to the end."""

    def __init__(self, out: Path, steps: int):
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        from rlvr.config import load_config
        from rlvr.data import load_problems
        from rlvr.models import resolve_model_path
        from rlvr.rewards import RewardRunner, build_reward

        cfg = load_config(RECIPE)
        self.problems, _ = load_problems(cfg.data)
        runner = RewardRunner(build_reward(cfg.reward, cfg.data))
        problems = self.problems

        def reward(prompts, completions, idx, **_):
            r, _ = runner([problems[i] for i in idx], list(completions))
            return r.tolist()

        reward.__name__ = "reasoning_gym"
        data = Dataset.from_list([{"prompt": p.prompt, "idx": i} for i, p in enumerate(self.problems)])
        args = GRPOConfig(
            output_dir=str(out),
            use_cpu=True,
            bf16=False,
            fp16=False,
            per_device_train_batch_size=128,
            gradient_accumulation_steps=1,
            steps_per_generation=2,
            num_iterations=1,
            num_generations=8,
            max_completion_length=8,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=0.0,
            loss_type="grpo",
            learning_rate=2e-4,
            lr_scheduler_type="constant_with_warmup",
            warmup_steps=2,
            max_grad_norm=1.0,
            max_steps=2 * steps,
            gradient_checkpointing=False,
            logging_steps=10**9,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            log_completions=False,
            dataloader_num_workers=0,
            seed=0,
            model_init_kwargs={"dtype": torch.float32},
        )
        self.trainer = GRPOTrainer(
            model=str(resolve_model_path(cfg.model.path)), reward_funcs=reward, args=args, train_dataset=data
        )

    def run(self, callback) -> None:
        self.trainer.add_callback(callback)
        self.trainer.train()


def make_pair_callback(on_pair):
    """A TrainerCallback calling on_pair(seconds) after every second optimizer step (one generation's two
    steps), timed from the end of the previous call (the callback's own work is outside the time)."""
    from transformers import TrainerCallback

    class PairTimer(TrainerCallback):
        def __init__(self):
            self.t0 = None

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % 2 == 0:
                on_pair(time.perf_counter() - self.t0)
                self.t0 = time.perf_counter()

    return PairTimer()


def median_iqr(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return statistics.median(xs), q[0], q[2]


def memory_child(side: str, steps: int) -> None:
    """One side alone: one warm-up step, then RSS before and the peak over `steps` steps (JSON on stdout)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="trl_step_mem_") as tmp:
        if side.startswith("rlvr"):
            r = RlvrSide(Path(tmp) / "rlvr", VARIANTS[side])
            r.step(record=False)
            reset_peak()
            before = rss_mb()
            for _ in range(steps):
                r.step()
        else:
            t = TrlSide(Path(tmp) / "trl", steps + 1)
            state = {"n": 0, "before": None}

            def on_pair(_):
                state["n"] += 1
                if state["n"] == 1:
                    reset_peak()
                    state["before"] = rss_mb()

            t.run(make_pair_callback(on_pair))
            before = state["before"]
    print(json.dumps({"before": before, "peak": peak_rss_mb()}))


def memory(side: str, steps: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", side, "--memory-steps", str(steps)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12, help="measured steps of each side")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured steps of each side first")
    ap.add_argument("--memory-steps", type=int, default=3, help="steps per side in the memory processes; 0 = skip")
    ap.add_argument("--sampler", default=None, help="also time rlvr with this rollout.sampler (a second row)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trl_step.md"))
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_steps)
        return
    torch.set_num_threads(1)
    import transformers
    import trl

    with tempfile.TemporaryDirectory(prefix="trl_step_") as tmp:
        root = Path(tmp)
        variants = dict(VARIANTS)
        if args.sampler:
            variants[f"rlvr rollout.sampler={args.sampler}"] = (f"rollout.sampler={args.sampler}",)
        sides = {name: RlvrSide(root / f"rlvr{i}", over) for i, (name, over) in enumerate(variants.items())}
        ours = list(sides.values())
        trl_times: list[float] = []
        total = args.warmup + args.steps

        def on_pair(seconds: float) -> None:
            k = len(trl_times)
            trl_times.append(seconds)
            for s in ours:  # the rlvr steps run between TRL's pairs, alternating with them
                s.step(record=k >= args.warmup)

        trl_side = TrlSide(root / "trl", total)
        trl_side.run(make_pair_callback(on_pair))
        trl_med, trl_q1, trl_q3 = median_iqr(trl_times[args.warmup :])

    mem = {}
    if args.memory_steps:
        mem = {name: memory(name, args.memory_steps) for name in ("rlvr", PLAIN, "TRL")}

    lines = [
        f"# rlvr vs TRL {trl.__version__} GRPOTrainer: one step at equal work "
        f"(`python bench/trl_step.py{''.join(' ' + a for a in sys.argv[1:])}`)",
        "",
        f"Tiny base, 32 prompts x 8 samples, 8 new tokens, 2 minibatches, fp32, 1 thread, torch "
        f"{torch.__version__}, transformers {transformers.__version__}; {args.steps} steps each after "
        f"{args.warmup} warm-up, interleaved step by step in one process.",
        "",
        "| trainer | median s/step | IQR | vs TRL |",
        "|---|---:|---:|---:|",
        f"| TRL GRPOTrainer | {trl_med:.3f} | {trl_q1:.3f}-{trl_q3:.3f} | 1.00x |",
    ]
    for name, s in sides.items():
        med, q1, q3 = median_iqr(s.times)
        lines.append(f"| {name} | {med:.3f} | {q1:.3f}-{q3:.3f} | {med / trl_med:.2f}x |")
    lines += ["", "rlvr's time/* breakdown (median seconds per step, share of its median time/step):", ""]
    lines += ["| trainer | " + " | ".join(PHASES) + " | other | time/step |", "|---|" + "---:|" * (len(PHASES) + 2)]
    for name, s in sides.items():
        med = {k: statistics.median(b[k] for b in s.breakdown) for k in (*PHASES, "step")}
        other = statistics.median(b["step"] - sum(b[p] for p in PHASES) for b in s.breakdown)
        cells = [f"{med[p]:.3f} ({100 * med[p] / med['step']:.0f}%)" for p in PHASES]
        cells.append(f"{other:.3f} ({100 * other / med['step']:.0f}%)")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {med['step']:.3f} |")
    if mem:
        lines += [
            "",
            f"Peak memory, each side alone in its own process ({args.memory_steps} steps after 1 warm-up): "
            "peak RSS over the measured steps (VmHWM, reset after the warm-up) minus the RSS before them, "
            "and that peak.",
            "",
            "| trainer | step working memory MiB | peak RSS MiB |",
            "|---|---:|---:|",
        ]
        for name, m in mem.items():
            lines.append(f"| {name} | {m['peak'] - m['before']:.1f} | {m['peak']:.0f} |")
        t = mem["TRL"]
        for name in ("rlvr", PLAIN):
            r = mem[name]
            lines.append(
                f"\n{name} / TRL: working memory {(r['peak'] - r['before']) / max(t['peak'] - t['before'], 1e-9):.2f}x,"
                f" peak RSS {r['peak'] / t['peak']:.2f}x"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
