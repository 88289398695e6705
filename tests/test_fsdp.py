"""FSDP2 on CPU with gloo, 2 processes, through the shipped recipes/accelerate/fsdp.yaml, and the guard
that a run never trains without the engine it asked for, nor as unsynced copies (rlvr/fsdp.py,
rlvr/sharding.py).

The runs (module-scoped, shared): GRPO on the embedded tiny model, 3 steps, a checkpoint at step 2,
under FSDP and under plain DDP (ACCELERATE_USE_CPU=1), and the FSDP run resumed from its step-2
checkpoint. FSDP is proved by what only FSDP does (the shard each process holds, one checkpoint file per
process), and its update by equality with DDP's: the same samples (generation sees whole parameters),
the same rewards and losses, final weights within TOLERANCE.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FSDP_YAML = ROOT / "recipes" / "accelerate" / "fsdp.yaml"
TOLERANCE = 5e-6  # |FSDP - DDP| per weight after 3 steps; measured 3.7e-7 (the 3 updates move weights up to 1.1e-3)
RUN = [  # the tiny GRPO recipe, small: 3 steps of 8 prompts x 4 samples, KL to the reference, a checkpoint at step 2
    "recipes/tiny/grpo.yaml",
    "train.steps=3",
    "train.prompts_per_step=8",
    "rollout.n=4",
    "algorithm.kl_coef=0.05",  # a frozen reference model, sharded like the policy
    "eval.full=false",
    "eval.before=false",
    "eval.after=false",
    "checkpoint.every=2",
    "tracking.progress=false",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, engine: str = "fsdp", env: dict | None = None, timeout: int = 300):
    """`rlvr launch` (accelerate launch) with 2 processes: engine fsdp (the shipped config, no
    ACCELERATE_USE_CPU) or ddp (ACCELERATE_USE_CPU=1, as the DDP tests run); returns the finished process
    with its wall time."""
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    e.pop("ACCELERATE_USE_CPU", None)
    opts = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if engine == "fsdp":
        opts = ["--config_file", str(FSDP_YAML), *opts]
    elif engine == "ddp":
        e["ACCELERATE_USE_CPU"] = "1"
        opts = ["--multi_gpu", *opts]
    else:
        opts = ["--config_file", str(engine), *opts]
    e.update(env or {})
    cmd = [sys.executable, "-m", "rlvr", "launch", *opts, "--main_process_port", str(free_port()), *args]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    r.wall = time.time() - t0
    return r


def ok(r) -> None:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "final" / "model.safetensors")


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, tiny_model_path):
    out = tmp_path_factory.mktemp("fsdp") / "run"
    r = launch("train", *RUN, f"output_dir={out}")
    ok(r)
    print(f"\nFSDP run (3 steps, 2 processes): {r.wall:.1f} s")
    return out, r


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, tiny_model_path):
    out = tmp_path_factory.mktemp("ddp") / "run"
    r = launch("train", *RUN, f"output_dir={out}", engine="ddp")
    ok(r)
    print(f"\nDDP run (3 steps, 2 processes): {r.wall:.1f} s")
    return out, r


@pytest.mark.distributed
def test_the_run_is_fsdp_sharded(fsdp_run):
    """Each process holds half the policy (DTensor shards; the line the run prints, from the prepared
    model), the checkpoint is FSDP's: one model and one optimizer file per process, each smaller than the
    full fp32 parameters, no full state dict; final/ is a normal (consolidated) HF model directory."""
    run, r = fsdp_run
    line = next(x for x in r.stdout.splitlines() if x.startswith("rlvr: FSDP2 over 2 processes"))
    held, total = (int(w.replace(",", "")) for w in line.split("at most ")[1].split(" elements")[0].split(" of its "))
    assert total > 100_000 and held <= 0.51 * total, line
    ckpt = run / "checkpoints" / "step-2"
    files = {str(p.relative_to(ckpt)): p.stat().st_size for p in ckpt.rglob("*") if p.is_file()}
    full_bytes = 4 * total
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        shards = {k: v for k, v in files.items() if k.startswith(part + "/") and k.endswith(".distcp")}
        assert sorted(shards) == [f"{part}/__0_0.distcp", f"{part}/__1_0.distcp"], files
    for rank in (0, 1):
        assert files[f"pytorch_model_fsdp_0/__{rank}_0.distcp"] < 0.75 * full_bytes, files  # ~half + headers
        assert files[f"optimizer_0/__{rank}_0.distcp"] < 1.5 * full_bytes, files  # Adam's 2 moments of half
    assert not any(k.endswith((".safetensors", ".bin")) for k in files), files
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2 and set(state["files"]) == set(files) - {"trainer_state.json"}
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    assert sum(p.numel() for p in model.parameters()) == total
    assert [x["step"] for x in rows(run)] == [1, 2, 3]


@pytest.mark.distributed
def test_fsdp_makes_the_ddp_update(fsdp_run, ddp_run, tiny_model_path):
    """Same samples and rewards at every step (rollouts see whole parameters), same losses, and final
    weights within TOLERANCE of plain DDP's after 3 steps, while training moved them far more."""
    from safetensors.torch import load_file

    (f, _), (d, _) = fsdp_run, ddp_run
    fr, dr = rows(f), rows(d)
    for a, b in zip(fr, dr, strict=True):
        assert a["reward/mean"] == b["reward/mean"] and a["response_len/mean"] == b["response_len/mean"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    fw, dw = weights(f), weights(d)
    base = load_file(Path(tiny_model_path) / "model.safetensors")
    assert fw.keys() == dw.keys()  # the tied lm_head is not written twice (fsdp.without_tied_copies)
    diff = max(float((fw[k] - dw[k]).abs().max()) for k in dw)
    moved = max(float((dw[k] - base[k]).abs().max()) for k in dw)
    print(f"\nmax |FSDP - DDP| = {diff:.3g}; max |DDP - base| = {moved:.3g}")
    assert diff <= TOLERANCE
    assert moved > 100 * TOLERANCE


@pytest.mark.slow
@pytest.mark.distributed
def test_ppo_critic_under_fsdp_makes_the_ddp_update(tmp_path, tiny_model_path):
    """PPO: the critic is a second trained model, prepared (sharded) and stepped with the policy; 2 steps
    under FSDP end within TOLERANCE of DDP's policy weights, with the same value losses (about 70 s)."""
    ppo = ["recipes/tiny/ppo.yaml", "train.steps=2", *(a for a in RUN[2:] if not a.startswith(("train.steps", "algo")))]
    runs = {}
    for engine in ("fsdp", "ddp"):
        runs[engine] = tmp_path / engine
        r = launch("train", *ppo, f"output_dir={runs[engine]}", engine=engine)
        ok(r)
        print(f"\nPPO {engine} (2 steps, 2 processes): {r.wall:.1f} s")
    f, d = rows(runs["fsdp"]), rows(runs["ddp"])
    for a, b in zip(f, d, strict=True):
        assert a["reward/mean"] == b["reward/mean"]
        assert a["value_loss"] == pytest.approx(b["value_loss"], rel=1e-4, abs=1e-6)
    fw, dw = weights(runs["fsdp"]), weights(runs["ddp"])
    assert fw.keys() == dw.keys()
    assert max(float((fw[k] - dw[k]).abs().max()) for k in dw) <= TOLERANCE


@pytest.mark.distributed
def test_fsdp_resumes_exactly(fsdp_run, tmp_path):
    """The run's directory as a kill after step 2 leaves it (no final/): the same command resumes from the
    sharded step-2 checkpoint and ends with bitwise the weights and metrics of the run never stopped."""
    run, _ = fsdp_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "final")
    (copy / "train_done.json").unlink()
    r = launch("train", *RUN, f"output_dir={copy}")
    ok(r)
    print(f"\nFSDP resume (1 step, 2 processes): {r.wall:.1f} s")
    assert f"rlvr: resuming from {copy / 'checkpoints' / 'step-2'} (step 2)" in r.stdout
    a, b = weights(run), weights(copy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    untimed = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]  # noqa: E731
    assert untimed(rows(copy)) == untimed(rows(run))


GEN = """
import json, os, sys, torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from rlvr import fsdp
from rlvr.config import load_config
from rlvr.models import load_model_and_tokenizer, resolve_model_path
from rlvr.rollout import HFEngine, Sampling
from rlvr.tasks import Problem
from rlvr.trainer import make_accelerator

gathers = [0]
all_gather = dist.all_gather_single  # what FSDP2 calls to gather a unit's parameters
def counted(*a, **k):
    gathers[0] += 1
    return all_gather(*a, **k)
dist.all_gather_single = counted

acc = make_accelerator(load_config(sys.argv[1]), int(os.environ["WORLD_SIZE"]))
model, tok = load_model_and_tokenizer(resolve_model_path("tiny"))
plain = load_model_and_tokenizer(resolve_model_path("tiny"))[0]
model, _ = acc.prepare(model, torch.optim.AdamW(model.parameters()))
rank = acc.process_index
problems = [Problem(prompt=f"{rank} + 2 =", answer="", id="a")] * (1 + 2 * rank)  # unequal work per rank
sampling = Sampling(max_new_tokens=12 if rank == 0 else 3, temperature=0)
out = {"rank": rank, "engine": str(acc.distributed_type)}
g0 = gathers[0]
with fsdp.full_params(model):
    g1 = gathers[0]
    batch = HFEngine(model, tok).generate(problems, 2, sampling)
    out["in_generate"] = gathers[0] - g1
out["on_entry"] = g1 - g0
out["tokens"] = batch.response_ids.shape[1]
unsharded = HFEngine(plain, tok).generate(problems, 2, sampling)
out["same_as_unsharded"] = torch.equal(batch.response_ids, unsharded.response_ids)
out["sharded_after"] = all(isinstance(p, DTensor) for p in model.parameters())
g2 = gathers[0]
with torch.no_grad():
    model(input_ids=torch.tensor([[3, 4, 5]]))
out["plain_forward"] = gathers[0] - g2
with open(sys.argv[2] + f".{rank}", "w") as f:
    json.dump(out, f)
"""


@pytest.mark.distributed
def test_generation_gathers_parameters_once_not_per_token(tmp_path, tiny_model_path):
    """Inside fsdp.full_params the units are gathered once on entry and `generate` makes no collective at all:
    ranks with different prompt counts and token budgets finish (no deadlock), with the tokens the
    unsharded model gives; after it the parameters are shards again and a forward gathers as before."""
    script, cfg = tmp_path / "gen.py", tmp_path / "c.yaml"
    script.write_text(GEN)
    cfg.write_text(f"base: {ROOT / 'recipes' / 'tiny' / 'grpo.yaml'}\noutput_dir: {tmp_path / 'run'}\n")
    e = {**os.environ, "HF_HUB_OFFLINE": "1"}
    e.pop("ACCELERATE_USE_CPU", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_YAML), "--num_processes", "2"]
    cmd += ["--mixed_precision", "no", "--main_process_port", str(free_port()), str(script), str(cfg)]
    t0 = time.time()
    r = subprocess.run(cmd + [str(tmp_path / "out")], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)
    print(f"\ngeneration script (2 processes): {time.time() - t0:.1f} s")
    ok(r)
    res = [json.loads((tmp_path / f"out.{k}").read_text()) for k in (0, 1)]
    for x in res:
        assert x["engine"] == "DistributedType.FSDP", x
        assert x["on_entry"] >= 2 and x["in_generate"] == 0, x
        assert x["same_as_unsharded"] and x["sharded_after"], x
        assert x["plain_forward"] == x["on_entry"], x  # reshard-after-forward restored: a forward gathers again
    assert res[0]["tokens"] != res[1]["tokens"]  # the ranks did generate unequal token counts


STEP = """
import os, sys, torch
from torch.distributed.tensor import DTensor
from rlvr.config import load_config
from rlvr.trainer import Trainer

cfg, batch_path, out, *overrides = sys.argv[1:]
trainer = Trainer(load_config(cfg, overrides))
if trainer.world == 1 and not os.path.exists(batch_path):  # the first (1-process) run makes the fixed batch
    from rlvr.rollout import Sampling

    torch.manual_seed(0)
    batch = trainer.rollout(trainer.train_problems[:4], 4, Sampling(max_new_tokens=8))
    batch.rewards = torch.tensor([len(set(c)) / 8.0 for c in batch.completions])  # spread inside every group
    assert batch.response_mask.sum(-1).unique().numel() > 1, "want ragged lengths"
    torch.save(batch, batch_path)
batch = torch.load(batch_path, weights_only=False)
groups = sorted(set(batch.group.tolist()))[trainer.rank :: trainer.world]  # this process's share, as the trainer
local = batch.select([i for i, g in enumerate(batch.group.tolist()) if g in groups])
model, grads = trainer.accelerator.unwrap_model(trainer.policy), {}

def hook(optimizer, args, kwargs):  # the gradients the optimizer steps with; FSDP's shards made whole
    for name, p in model.named_parameters():
        g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        grads[name] = g.detach().clone()

getattr(trainer.optimizer, "optimizer", trainer.optimizer).register_step_pre_hook(hook)
metrics = trainer.train_on(local)
if trainer.accelerator.is_main_process:
    torch.save({"grads": grads, "metrics": metrics, "engine": str(trainer.accelerator.distributed_type)}, out)
trainer.accelerator.wait_for_everyone()
"""


@pytest.mark.distributed
def test_one_fsdp_update_equals_the_one_process_update(tmp_path, tiny_model_path):
    """One optimizer step on a fixed rollout batch (4 prompts x 4 samples, ragged lengths): the gradients
    FSDP steps with on 2 processes (each its 2 prompts; shards gathered for the comparison) equal those of
    1 process on the whole batch, to 1e-6 (relative 1e-4; measured 1.5e-7), as tests/test_trainer.py checks DDP."""
    import helpers

    cfg = helpers.write_config(tmp_path / "c.yaml", tiny_model_path, {"data": {"train_size": 64, "eval_size": 8}})
    (tmp_path / "step.py").write_text(STEP)
    args = [str(tmp_path / "step.py"), str(cfg), str(tmp_path / "batch.pt")]
    e = {**os.environ, "HF_HUB_OFFLINE": "1"}
    e.pop("ACCELERATE_USE_CPU", None)
    t0 = time.time()
    one = subprocess.run(
        [sys.executable, *args, str(tmp_path / "one.pt")], env=e, capture_output=True, text=True, timeout=300
    )
    ok(one)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_YAML), "--num_processes", "2"]
    cmd += ["--mixed_precision", "no", "--main_process_port", str(free_port()), *args, str(tmp_path / "two.pt")]
    two = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)
    ok(two)
    print(f"\none step, 1 process then 2 FSDP processes: {time.time() - t0:.1f} s")
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a["engine"] == "DistributedType.NO" and b["engine"] == "DistributedType.FSDP"
    assert a["grads"].keys() == b["grads"].keys()
    diff = max(float((b["grads"][k] - g).abs().max()) for k, g in a["grads"].items())
    scale = max(float(g.abs().max()) for g in a["grads"].values())
    print(f"max |grad FSDP - grad 1 process| = {diff:.3g} (largest gradient {scale:.3g})")
    for name, g in a["grads"].items():
        torch.testing.assert_close(b["grads"][name], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert sum(int(g.abs().sum() > 0) for g in a["grads"].values()) > len(a["grads"]) // 2, "mostly zero gradients"
    assert a["metrics"]["loss"] == pytest.approx(b["metrics"]["loss"], rel=1e-5, abs=1e-7)


# ------------------------------------------------------------ the guard


def rlvr_lines(r) -> list[str]:
    """The distinct rlvr lines the processes wrote (two processes' writes may run together on one line)."""
    return sorted(
        {m.strip() for x in r.stderr.splitlines() for m in re.split(r"(?=rlvr: )", x) if m.startswith("rlvr")}
    )


@pytest.mark.distributed
def test_use_cpu_with_the_fsdp_config_is_refused(tmp_path, tiny_model_path):
    """ACCELERATE_USE_CPU=1 makes accelerate run an FSDP config as plain DDP: refused, one line (each process
    says the same), no traceback, nothing trained."""
    r = launch("train", *RUN, f"output_dir={tmp_path / 'run'}", env={"ACCELERATE_USE_CPU": "1"})
    print(f"\nrefusal (2 processes): {r.wall:.1f} s")
    assert r.returncode == 1, r.stderr[-3000:]
    assert rlvr_lines(r) == [
        "rlvr: error: the accelerate config asks for FSDP but accelerate runs MULTI_CPU (ACCELERATE_USE_CPU=1 "
        "makes accelerate drop it for plain DDP; unset it); rlvr does not train without the sharding it was asked for"
    ], r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.distributed
def test_two_processes_without_gradient_sync_are_refused(tmp_path, tiny_model_path):
    """A DDP (MULTI_GPU) config on a CPU-only machine without ACCELERATE_USE_CPU: accelerate forms a gloo
    group but runs engine NO, no gradient all-reduce, two copies training apart; refused in one line."""
    r = launch("train", *RUN, f"output_dir={tmp_path / 'run'}", engine=ROOT / "recipes" / "accelerate" / "ddp.yaml")
    print(f"\nrefusal (2 processes): {r.wall:.1f} s")
    assert r.returncode == 1, r.stderr[-3000:]
    assert rlvr_lines(r) == [
        "rlvr: error: accelerate runs 2 processes with distributed_type NO (no gradient sync: each would train "
        "its own copy); on a CPU-only machine launch DDP with ACCELERATE_USE_CPU=1, or use a DeepSpeed/FSDP config"
    ], r.stderr[-3000:]
    assert "Traceback" not in r.stderr


def test_world_size_without_a_launcher_is_refused(tmp_path, tiny_model_path):
    """WORLD_SIZE=2 in a process no launcher started: no process group; one line, not accelerate's traceback."""
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "WORLD_SIZE": "2"}
    for k in ("LOCAL_RANK", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        e.pop(k, None)
    cmd = [sys.executable, "-m", "rlvr", "train", *RUN, f"output_dir={tmp_path / 'run'}"]
    r = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-3000:]
    assert rlvr_lines(r) == [
        "rlvr: error: WORLD_SIZE=2 but this process was not started by a launcher (LOCAL_RANK is not set): it "
        "would join no process group and train its own copy; use `accelerate launch` (or `rlvr launch`), "
        "or unset WORLD_SIZE for one process"
    ], r.stderr[-3000:]


class FakeAcc:
    def __init__(self, engine: str, n: int):
        from accelerate.utils import DistributedType

        self.distributed_type, self.num_processes, self.device = DistributedType[engine], n, torch.device("cpu")


@pytest.mark.parametrize(
    "env,engine,n,needle",
    [
        ({"ACCELERATE_USE_FSDP": "true", "ACCELERATE_USE_CPU": "1"}, "MULTI_CPU", 2, "asks for FSDP but accelerate runs MULTI_CPU (ACCELERATE_USE_CPU=1"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_USE_CPU": "1"}, "MULTI_CPU", 2, "asks for DEEPSPEED but accelerate runs MULTI_CPU"),
        ({"ACCELERATE_USE_FSDP": "true"}, "NO", 1, "asks for FSDP but accelerate runs NO (accelerate could not place it on 1"),
        ({}, "NO", 2, "accelerate runs 2 processes with distributed_type NO"),
        ({"WORLD_SIZE": "2"}, "NO", 1, "WORLD_SIZE=2 but accelerate runs 1 process(es) here"),
    ],
)  # fmt: skip
def test_check_engine_names_what_happened(monkeypatch, env, engine, n, needle):
    from rlvr.errors import RunError
    from rlvr.sharding import check_engine

    for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_CPU", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RunError, match="^.*" + needle.replace("(", r"\(").replace(")", r"\)")):
        check_engine(FakeAcc(engine, n))


@pytest.mark.parametrize("engine,n", [("FSDP", 2), ("MULTI_CPU", 2), ("NO", 1), ("DEEPSPEED", 2)])
def test_check_engine_passes_what_was_asked(monkeypatch, engine, n):
    from rlvr.sharding import check_engine

    for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_CPU", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    if engine in ("FSDP", "DEEPSPEED"):
        monkeypatch.setenv(f"ACCELERATE_USE_{engine}", "true")
    monkeypatch.setenv("WORLD_SIZE", str(n))
    check_engine(FakeAcc(engine, n))


def _replicas(rank: int, world: int, init: str, differ: bool, out: str) -> None:
    import torch.distributed as dist

    from rlvr.errors import RunError
    from rlvr.sharding import ReplicaCheck

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    if differ and rank == 1:
        with torch.no_grad():  # one optimizer step's worth of difference in one weight (an unsynced copy)
            model.weight[3, 5] += 1e-4
    check = ReplicaCheck(FakeAcc("MULTI_CPU", world))
    try:
        check([model], step=1)
        result = "ok"
    except RunError as e:
        result = str(e)
    check([model], step=2)  # once only: a second call makes no collective (would hang if rank 1 skipped it)
    Path(f"{out}.{rank}").write_text(result)
    dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.parametrize("differ", [False, True])
def test_replica_check_catches_processes_that_are_not_synced(tmp_path, differ):
    """Over a real 2-process gloo group: equal replicas pass, a 1e-4 difference in one weight stops the run
    with the parameter sums of both ranks (one all-gather of two float64 per process, once)."""
    import torch.multiprocessing as mp

    t0 = time.time()
    mp.spawn(_replicas, args=(2, f"file://{tmp_path / 'store'}", differ, str(tmp_path / "r")), nprocs=2)
    print(f"\nreplica check, 2 processes: {time.time() - t0:.1f} s")
    res = [(tmp_path / f"r.{k}").read_text() for k in (0, 1)]
    if not differ:
        assert res == ["ok", "ok"]
    else:
        assert res[0] == res[1] and res[0].startswith(
            "step 1: the 2 processes hold different weights after the first optimizer step (parameter sums rank 0: "
        ), res
        assert "they are not synced" in res[0]
