"""Per-process training memory of each engine, measured: `python bench/memory.py`.

Builds (once, cached) a random-weight fp32 Qwen2 of ~98M parameters with a character tokenizer
(tests/helpers.py's make_random_model: the parameters sit in 20 layers of hidden size 768), then for
1 process, DDP x2, DeepSpeed ZeRO-2 x2, ZeRO-3 x2, FSDP2 x2 and LoRA (r=8, all-linear) under DDP x2
runs ONE rlvr GRPO step (2 prompts x 2 samples, 4 new tokens, eval and checkpoints off) on CPU with
gloo, launched as tests/test_deepspeed.py, test_fsdp.py and test_lora.py launch their runs.

Each process measures itself at the optimizer step, from hooks on the torch optimizer rlvr steps
(the AdamW inside accelerate's wrapper, and under DeepSpeed inside its ZeRO optimizer), installed
by this file run as the launched script (`--worker`: a wrapper around `rlvr train` that patches
Trainer.prepare_model; rlvr itself is unchanged). Bytes are those of the tensors' storages, each
storage counted once (by `untyped_storage().data_ptr()`) in the first column that reaches it:

- params: the local storage of the policy's parameters (ZeRO-3: `ds_tensor`, the partition, plus
  any parameter DeepSpeed keeps whole; FSDP2: the DTensor's local shard; ZeRO-2: the flat buffer the
  module's parameters are views of); taken by the step pre-hook.
- grads: the gradients the optimizer steps with, every live `.grad` of the module, and DeepSpeed's
  own gradient buffers (`grad_partitions_flat_buffer`, `averaged_gradients`, `grads_in_partition`);
  taken by the step pre-hook. Not reachable from Python: DDP's reducer buckets (accelerate's DDP
  does not use gradient_as_bucket_view, so they are one more gradient-sized buffer): the RSS
  columns include them.
- reduce buckets: DeepSpeed's gradient reduce buckets (`ipg_buckets`), communication buffers sized
  by its reduce_bucket_size (default 5e8 elements), not by the model: their own column, outside the
  total (allocated with torch.empty: only the pages written show in RSS).
- optimizer: Adam's state (exp_avg, exp_avg_sq, step) and the tensors the torch optimizer steps
  when they are not the module's parameters (DeepSpeed's fp32 master partitions:
  `single_partition_of_fp32_groups` under ZeRO-2, `fp32_partitioned_groups_flat` under ZeRO-3);
  taken by the step post-hook (Adam creates its state in its first step).
- peak RSS: the process's ru_maxrss when the step ends (OS-measured, everything: Python, torch,
  the model load, activations, communication buffers); RSS at step: VmRSS then.

The table (the largest value over the processes, per column) goes to stdout and bench/results/memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory.md"
MODEL = {"hidden": 768, "layers": 20, "heads": 12, "kv_heads": 2}  # ~98M parameters, fp32
LORA = {"r": 8, "alpha": 16, "target_modules": "all-linear"}
# (row label, launch kind, config sections)
ENGINES = [
    ("1 process", "single", {}),
    ("DDP x2", "ddp", {}),
    ("ZeRO-2 x2", "zero2", {}),
    ("ZeRO-3 x2", "zero3", {}),
    ("FSDP2 x2", "fsdp", {}),
    ("LoRA r=8 + DDP x2", "ddp", {"model": {"lora": LORA}}),
]
MiB = 2**20


# ------------------------------------------------------------------ worker (one launched process)


def _storage(t) -> tuple[int, int] | None:
    if t is None or not hasattr(t, "untyped_storage"):
        return None
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.to_local()
    s = t.untyped_storage()
    return (s.data_ptr(), s.nbytes()) if s.nbytes() else None


def _tensors(x):
    """Tensors in x (a tensor, or lists / dicts / objects with .buffer of them)."""
    import torch

    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif x is not None and hasattr(x, "buffer"):  # DeepSpeed's IPGBucket
        yield from _tensors(x.buffer)


class Meter:
    """Bytes per column (and per source within it), each storage counted once over all columns."""

    def __init__(self):
        self.seen: set[int] = set()
        self.bytes: dict[str, int] = {}
        self.detail: dict[str, int] = {}

    def add(self, column: str, tensors, source: str) -> None:
        self.bytes.setdefault(column, 0)
        for t in tensors:
            s = _storage(t)
            if s and s[0] not in self.seen:
                self.seen.add(s[0])
                self.bytes[column] += s[1]
                self.detail[f"{column}:{source}"] = self.detail.get(f"{column}:{source}", 0) + s[1]

    def copy(self) -> "Meter":
        m = Meter()
        m.seen, m.bytes, m.detail = set(self.seen), dict(self.bytes), dict(self.detail)
        return m


def _vmrss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def install_hooks(out: Path) -> None:
    """Patch Trainer.prepare_model: the first trained model's torch optimizer gets step hooks
    that write this process's measurements to out/rank{R}.json."""
    import rlvr.trainer

    original = rlvr.trainer.Trainer.prepare_model

    def prepare_model(self, model, lr=None, **kwargs):
        first = lr is not None and not self.trained
        prepared = original(self, model, lr=lr, **kwargs)
        if not first:
            return prepared
        # accelerate's wrapper -> (DeepSpeed's ZeRO optimizer ->) the torch AdamW that steps
        chain = [self.optimizers[-1]]
        while hasattr(chain[-1], "optimizer"):
            chain.append(chain[-1].optimizer)
        topt, engine_opt = chain[-1], chain[-2] if len(chain) > 2 else None
        record: dict = {"rank": self.rank, "world": self.world, "pre_calls": 0, "post_calls": 0}
        meter = Meter()

        def opt_params():
            return [p for g in topt.param_groups for p in g["params"]]

        def pre(_opt, _args, _kwargs):
            record["pre_calls"] += 1
            if record["pre_calls"] > 1:  # DeepSpeed steps once per param group / sub-group: the first call sees all
                return
            mparams = list(prepared.parameters())
            meter.add("params", [p.data for p in mparams], "module")
            meter.add("params", [getattr(p, "ds_tensor", None) for p in mparams], "ds_tensor")
            meter.add("grads", [p.grad for p in opt_params()], "stepped")
            meter.add("grads", [p.grad for p in mparams], "module")
            for name in ("grad_partitions_flat_buffer", "averaged_gradients", "grads_in_partition"):
                meter.add("grads", _tensors(getattr(engine_opt, name, None)), name)
            # DeepSpeed's gradient reduce buckets: communication buffers sized by reduce_bucket_size
            # (not by the model), reported in their own column, outside the total
            meter.add("buckets", _tensors(getattr(engine_opt, "ipg_buckets", None)), "ipg_buckets")
            record["numel"] = sum(getattr(p, "ds_numel", p.numel()) for p in mparams)
            record["trained_numel"] = sum(getattr(p, "ds_numel", p.numel()) for p in mparams if p.requires_grad)

        def post(_opt, _args, _kwargs):
            record["post_calls"] += 1
            m = meter.copy()
            m.add("optimizer", _tensors(list(topt.state.values())), "state")
            m.add("optimizer", opt_params(), "stepped_params")
            for name in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
                m.add("optimizer", _tensors(getattr(engine_opt, name, None)), name)
            record.update(m.bytes, detail=m.detail)
            record["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            record["rss_at_step"] = _vmrss()
            record["engine_optimizer"] = type(engine_opt).__name__
            (out / f"rank{self.rank}.json").write_text(json.dumps(record))

        topt.register_step_pre_hook(pre)
        topt.register_step_post_hook(post)
        return prepared

    rlvr.trainer.Trainer.prepare_model = prepare_model


def worker(out: str, config: str) -> int:
    install_hooks(Path(out))
    from rlvr.cli import main

    return main(["train", config])


# ------------------------------------------------------------------ driver


def build_model(cache: Path) -> Path:
    key = "qwen2-" + "-".join(f"{k}{v}" for k, v in MODEL.items())
    path = cache / key
    if not (path / "config.json").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        import helpers

        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".build-"))
        helpers.make_random_model(tmp, **MODEL)
        tmp.rename(path)
    return path


def write_config(path: Path, model: Path, sections: dict) -> Path:
    import yaml

    cfg = {
        "output_dir": str(path.parent / "run"),
        "model": {"path": str(model), **sections.get("model", {})},
        "data": {
            "task": "chain_sum",
            "task_config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
            "train_size": 16,
            "eval_size": 4,
        },
        "algorithm": {"name": "grpo"},
        "rollout": {"n": 2, "max_new_tokens": 4},
        "train": {"steps": 1, "prompts_per_step": 2, "micro_batch_size": 2, "lr": 1e-4, "grad_clip": None},
        "eval": {"before": False, "after": False, "full": False},
        "checkpoint": {"every": 0},
        "tracking": {"progress": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(kind: str, config: Path, out: Path, port: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env["HF_HUB_OFFLINE"] = "1"
    me = [str(Path(__file__).resolve()), "--worker", str(out), str(config)]
    if kind == "single":
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no"]
        if kind == "ddp":  # plain DDP on CPU (ACCELERATE_USE_CPU); DeepSpeed / FSDP must not see it
            env["ACCELERATE_USE_CPU"] = "1"
            cmd += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
        else:
            cmd += ["--config_file", str(ROOT / "recipes" / "accelerate" / f"{kind}.yaml")]
        cmd += ["--main_process_port", str(port), *me]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


def reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
    return (errors or lines or ["no output"])[-1][:200].replace("|", "/")


def table(rows: list[dict], head: str) -> str:
    out = [
        head,
        "",
        "| engine | params MiB | grads MiB | optimizer MiB | total MiB | total vs DDP "
        "| reduce buckets MiB (not in total) | peak RSS MiB | RSS at step MiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    ddp = next((r["total"] for r in rows if r["label"] == "DDP x2" and "total" in r), None)
    for r in rows:
        if "failed" in r:
            out.append(f"| {r['label']} | failed: {r['failed']} | | | | | | | |")
            continue
        ratio = f"{r['total'] / ddp:.2f}" if ddp else "-"
        cells = [r[k] / MiB for k in ("params", "grads", "optimizer", "total")]
        rss = [r[k] / MiB for k in ("buckets", "peak_rss", "rss_at_step")]
        out.append(
            f"| {r['label']} | "
            + " | ".join(f"{c:.0f}" for c in cells)
            + f" | {ratio} | "
            + " | ".join(f"{c:.0f}" for c in rss)
            + " |"
        )
    out += ["", "Where the bytes are (rank 0, MiB, column:source):", ""]
    for r in rows:
        if "ranks" in r:
            d = r["ranks"][0]["detail"]
            out.append(f"- {r['label']}: " + ", ".join(f"{k} {v / MiB:.0f}" for k, v in d.items() if v >= MiB / 2))
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/rlvr/bench"), help="where the model is built once")
    p.add_argument("--only", nargs="*", help="row labels to run (default: all)")
    p.add_argument("--worker", nargs=2, metavar=("OUT", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(*args.worker)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = build_model(cache)
    print(f"model {model} ({time.time() - t0:.0f} s)", flush=True)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="rlvr-bench-memory-"))
    try:
        for i, (label, kind, sections) in enumerate(ENGINES):
            if args.only and label not in args.only:
                continue
            d = work / f"run{i}"
            d.mkdir()
            t1 = time.time()
            r = launch(kind, write_config(d / "c.yaml", model, sections), d, 29700 + i)
            ranks = [json.loads(f.read_text()) for f in sorted(d.glob("rank*.json"))]
            want = 1 if kind == "single" else 2
            if r.returncode != 0 or len(ranks) != want:
                row = {"label": label, "failed": reason(r.stderr + r.stdout) if r.returncode else "no measurement"}
            else:
                row = {"label": label}
                for k in ("params", "grads", "optimizer", "buckets", "peak_rss", "rss_at_step"):
                    row[k] = max(x.get(k, 0) for x in ranks)
                row["total"] = max(x.get("params", 0) + x.get("grads", 0) + x.get("optimizer", 0) for x in ranks)
                row["ranks"] = ranks
            rows.append(row)
            print(f"{label}: {time.time() - t1:.0f} s {json.dumps(row)}", flush=True)
            shutil.rmtree(d / "run", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    numel = next((r["ranks"][0]["numel"] for r in rows if "ranks" in r), 0)
    head = (
        f"Per-process memory at the optimizer step of one GRPO step, random Qwen2 of {numel / 1e6:.1f}M parameters, "
        f"fp32, CPU (gloo), measured by `python bench/memory.py` (largest value over the processes; "
        f"{os.cpu_count()} CPU cores, torch {version('torch')}, deepspeed {version('deepspeed')}, "
        f"accelerate {version('accelerate')})."
    )
    text = table(rows, head)
    print(text)
    if not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
