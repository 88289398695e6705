"""DeepSpeed ZeRO-2 and ZeRO-3 through `accelerate launch` with the shipped configs
(recipes/accelerate/zero2.yaml, zero3.yaml), 2 CPU processes on gloo.

The launches override only `--num_processes 2` (the yamls say 8) and `--mixed_precision no` (the
yamls say bf16, for GPUs; bf16 also runs on CPU, but the comparison with DDP wants fp32).
ACCELERATE_USE_CPU is kept out of the environment: it would turn the DeepSpeed config into plain DDP.

Each run is GRPO on a random 2-layer model for 2 steps with a KL to the reference model (so the
reference is exercised: a replica under ZeRO-2, a ZeRO-3 inference engine under ZeRO-3), two
minibatches of two micro-batches per process (rlvr places the accumulation boundary) and clipping
that bites (train.grad_clip=0.3, norms ~0.5). The runs are launched once per module, on demand,
and shared by the tests:
- really DeepSpeed: the checkpoint holds ZeRO shard files per rank, and each rank's Adam state is
  half of DDP's (numel counted in the files); the DeepSpeed config saved in them holds the batch
  settings rlvr derived;
- the same training as plain 2-process DDP: final weights within 1e-5, per-step gradient norm within
  1e-5 relative (the scale check Adam's scale invariance would hide), loss and KL within 1e-3;
- a resume from the step-1 checkpoint ends with the uninterrupted run's weights (within 1e-6).

PPO runs (3 steps, a critic with its own lr) check the critic as a second DeepSpeed engine the same
way: sharded in the checkpoint, policy and critic weights, Adam moments and rows (value_loss) as DDP's,
and a resume that restores both engines exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import helpers

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "accelerate"
PORTS = {
    "ddp": 29631,
    "zero2": 29632,
    "zero3": 29633,
    "zero2-resumed": 29634,
    "zero3-resumed": 29635,
    "zero2-nan": 29636,
    "ddp-ppo": 29637,
    "zero2-ppo": 29638,
    "zero2-ppo-resumed": 29639,
    "zero3-ppo": 29640,
    "zero3-ppo-resumed": 29641,
}
WEIGHT_TOL = 1e-5  # final weights vs DDP, absolute (observed: 0 for ZeRO-2, 8e-7 for ZeRO-3 with clipping)
MOVED = 1e-3  # the runs move the weights far more than the tolerance, so the comparison means something


class Runs:
    """Launched runs by name, each launched once (on first use) and kept for the module."""

    def __init__(self, root: Path, model: Path):
        self.root, self.model, self.done, self.seconds = root, model, {}, {}

    def config(self, name: str) -> Path:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        algorithm, steps = {"name": "grpo", "kl_coef": 0.04}, 2
        if "-ppo" in name:  # a trained critic: a second DeepSpeed engine (its own lr, so a mix-up shows)
            algorithm, steps = {"name": "ppo", "kl_coef": 0.04, "critic_lr": 3e-3}, 3  # step-2: the critic saved
        if name.endswith("-nan"):  # a non-finite loss at step 2 (tests/test_faults_training.py's NanGRPO)
            algorithm, steps = {**algorithm, "name": "test_faults_training:NanGRPO", "nan_steps": [2]}, 3
        # ZeRO-3: a final eval whose 3 generate calls (8 problems, 3 a call) split 2:1 over the processes,
        # which deadlocks unless the parameters are gathered once for the whole eval
        # and the full eval, which loads the base by path inside that context
        ev = {"after": True, "full": True, "batch_size": 12, "n": 4} if name == "zero3" else {}
        return helpers.write_config(
            self.root / name / "c.yaml",
            self.model,
            {"data": {"train_size": 64, "eval_size": 8}},
            algorithm=algorithm,
            train={"steps": steps, "micro_batch_size": 2, "minibatches": 2, "grad_clip": 0.3, "warmup_steps": 2},
            checkpoint={"every": 1, "keep": 3},
            eval=ev,
        )

    def __call__(self, *names: str) -> Path:
        """The run directory of names[-1]; every name not launched yet is launched now, all at once
        (a resumed run after the run it resumes)."""
        todo = [n for n in dict.fromkeys(names) if n not in self.done]
        for base in {n.removesuffix("-resumed") for n in todo if n.endswith("-resumed")}:
            self(base)
        procs = {n: self.launch(n) for n in todo}
        for name, (proc, t0, log) in procs.items():
            rc = proc.wait(timeout=600)
            self.seconds[name] = time.time() - t0
            out = log.read_text()
            assert rc == 0, f"{name}: " + out[-6000:]
            if name.endswith("-resumed"):
                assert f"resuming from {self.root / name / 'run' / 'checkpoints' / 'step-1'} (step 1)" in out
            self.done[name] = self.root / name / "run"
        return self.done[names[-1]]

    def launch(self, name: str) -> tuple[subprocess.Popen, float, Path]:
        kind, whole = name.partition("-")[0], self.done.get(name.removesuffix("-resumed"))
        cfg = self.config(name)
        run = self.root / name / "run"
        if name.endswith("-resumed"):  # the uninterrupted run's directory as a kill after step 1 leaves it
            shutil.copytree(whole / "checkpoints", run / "checkpoints")
            shutil.rmtree(run / "checkpoints" / "step-2", ignore_errors=True)
            (run / "metrics.jsonl").write_text((whole / "metrics.jsonl").read_text().splitlines()[0] + "\n")
        env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
        env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "tests"))
        cmd = [sys.executable, "-m", "accelerate.commands.launch"]
        if kind == "ddp":
            env["ACCELERATE_USE_CPU"] = "1"
            cmd += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
        else:
            cmd += ["--config_file", str(RECIPES / f"{kind}.yaml")]
        cmd += ["--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(PORTS[name])]
        log = self.root / name / "launch.log"
        with open(log, "w") as f:
            proc = subprocess.Popen([*cmd, "-m", "rlvr", "train", str(cfg)], cwd=ROOT, env=env, stdout=f, stderr=f)
        return proc, time.time(), log


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepspeed")
    return Runs(root, helpers.make_random_model(root / "model"))


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def adam_numel(path: Path) -> int:
    """Elements of Adam's first moment in a checkpoint file (DDP's optimizer.bin or a ZeRO shard)."""
    sd = torch.load(path, weights_only=False)
    if "optimizer_state_dict" in sd:  # a ZeRO shard: the torch optimizer's state inside DeepSpeed's
        sd = sd["optimizer_state_dict"]
        sd = sd.get("base_optimizer_state") or sd["optimizer_state_dict"]
    return sum(s["exp_avg"].numel() for s in sd["state"].values())


def check_is_deepspeed(runs: Runs, kind: str, stage: int) -> None:
    runs(kind, "ddp")  # launched side by side
    ddp = runs("ddp") / "checkpoints" / "step-1"
    ckpt = runs(kind) / "checkpoints" / "step-1"
    assert (ddp / "optimizer.bin").is_file() and not list(ddp.rglob("*optim_states.pt"))
    shards = sorted(ckpt.glob("pytorch_model/zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    assert [s.name[:15] for s in shards] == ["zero_pp_rank_0_", "zero_pp_rank_1_"]
    assert not (ckpt / "optimizer.bin").exists()
    if stage == 3:  # the parameters too are saved in partitions, one file per rank
        assert len(list(ckpt.glob("pytorch_model/zero_pp_rank_*_model_states.pt"))) == 2
    full = adam_numel(ddp / "optimizer.bin")
    per_rank = [adam_numel(s) for s in shards]
    assert all(n <= full // 2 + 64 for n in per_rank) and sum(per_rank) >= full, (per_rank, full)
    ds = torch.load(shards[0], weights_only=False)["ds_config"]
    assert ds["zero_optimization"]["stage"] == stage
    # rlvr's settings: 2 prompts x 4 samples per process, 2 minibatches of 4, micro-batches of 2
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (
        2,
        2,
        8,
    )
    assert ds["gradient_clipping"] == 0.3


def check_same_as_ddp(runs: Runs, kind: str) -> None:
    ddp, ds = runs("ddp"), runs("ddp", kind)
    assert max_diff(weights(ddp / "final"), weights(runs.model)) > MOVED
    assert max_diff(weights(ds / "final"), weights(ddp / "final")) < WEIGHT_TOL
    if kind == "zero3":
        assert [json.loads(r)["tag"] for r in (ds / "evals.jsonl").read_text().splitlines()] == ["final"]
        assert (ds / "eval" / "metrics.json").is_file()
    a, b = metrics(ddp), metrics(ds)
    assert len(a) == len(b) == 2
    for row_ddp, row_ds in zip(a, b, strict=True):
        assert row_ddp["grad_norm"] > 0.3  # clipping bit
        assert row_ds["grad_norm"] == pytest.approx(row_ddp["grad_norm"], rel=1e-5)  # the gradient's scale
        assert (row_ds["lr"], row_ds["reward/mean"]) == (row_ddp["lr"], row_ddp["reward/mean"])
        for key in ("loss", "kl"):  # small sums of terms of both signs: relative noise is larger
            assert row_ds[key] == pytest.approx(row_ddp[key], rel=1e-3), key


def check_resume(runs: Runs, kind: str) -> None:
    whole, resumed = runs(kind), runs(f"{kind}-resumed")
    assert max_diff(weights(resumed / "final"), weights(whole / "final")) < 1e-6
    assert [r["grad_norm"] for r in metrics(resumed)] == pytest.approx([r["grad_norm"] for r in metrics(whole)])


@pytest.mark.distributed
def test_zero2_is_deepspeed_and_trains_as_ddp(runs):
    check_is_deepspeed(runs, "zero2", 2)
    check_same_as_ddp(runs, "zero2")


@pytest.mark.distributed
def test_zero3_is_deepspeed_and_trains_as_ddp(runs):
    check_is_deepspeed(runs, "zero3", 3)
    check_same_as_ddp(runs, "zero3")


@pytest.mark.distributed
@pytest.mark.parametrize("kind", [pytest.param("zero2", marks=pytest.mark.slow), "zero3"])
def test_resume_equals_uninterrupted(runs, kind):
    check_resume(runs, kind)


@pytest.mark.distributed
@pytest.mark.slow
def test_zero2_skips_a_nonfinite_step(runs):
    """DeepSpeed skips a step whose gradient is non-finite (its overflow check); the trainer reads the
    engine's gradient norm (inf), counts the step as skipped and does not advance the schedule."""
    run = runs("zero2-nan")
    assert [r["train/skipped_steps"] for r in metrics(run)] == [0, 2, 2]  # 2 minibatches at step 2
    module = [
        torch.load(
            run / "checkpoints" / f"step-{s}" / "pytorch_model" / "mp_rank_00_model_states.pt", weights_only=False
        )["module"]
        for s in (1, 2)
    ]
    assert all(torch.equal(module[0][k], module[1][k]) for k in module[0])  # step 2 left the weights
    final = weights(run / "final")
    assert all(bool(torch.isfinite(v).all()) for v in final.values())
    assert max_diff(final, {k: v for k, v in module[1].items() if k in final}) > 0  # step 3 trained


def critic_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    """PPO's critic (the second prepared model) in a checkpoint: DDP's model_1.safetensors, or the
    second DeepSpeed engine's (whole parameters under ZeRO-2; ZeRO-3's partitions consolidated)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    if (ckpt / "model_1.safetensors").is_file():
        return load_file(ckpt / "model_1.safetensors")
    if (ckpt / "pytorch_model_1" / "mp_rank_00_model_states.pt").is_file():
        return torch.load(ckpt / "pytorch_model_1" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    sd = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag="pytorch_model_1")
    return {k: v.detach() for k, v in sd.items()}


def adam_norms(ckpt: Path, index: int) -> tuple[float, float]:
    """The norms of Adam's two moments of model `index` over all its optimizer state in a checkpoint
    (DDP's optimizer{_i}.bin, or every rank's ZeRO shard; the shards' padding is zero)."""
    suffix = f"_{index}" if index else ""
    files = [ckpt / f"optimizer{suffix}.bin"]
    if not files[0].is_file():
        files = sorted((ckpt / f"pytorch_model{suffix}").glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    assert files, ckpt
    sums = [0.0, 0.0]
    for f in files:
        sd = torch.load(f, weights_only=False)
        if "optimizer_state_dict" in sd:
            sd = sd["optimizer_state_dict"]
            sd = sd.get("base_optimizer_state") or sd["optimizer_state_dict"]
        for st in sd["state"].values():
            sums[0] += float(st["exp_avg"].double().pow(2).sum())
            sums[1] += float(st["exp_avg_sq"].double().pow(2).sum())
    return sums[0] ** 0.5, sums[1] ** 0.5


# ZeRO-3's policy after 3 PPO steps: 1.4e-5 from DDP's in one element of the embedding, whose
# gradient is ~1e-9 (DDP's Adam exp_avg_sq 2.7e-19), so Adam's normalisation turns float noise into
# ~1% of a step; every other element within 1.2e-7, the critic within 2e-7. Not stepping the critic,
# or a gradient scale off by 2, moves them by ~4e-3.
PPO_POLICY_TOL = {"zero2": WEIGHT_TOL, "zero3": 5e-5}


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["zero2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_ppo_trains_policy_and_critic_as_ddp(runs, kind):
    """PPO's critic is a second DeepSpeed engine: one backward of the combined loss, each engine
    reduces, clips and steps its own gradients (rlvr/zero.backward). Both engines are sharded in the
    checkpoint, and 3 steps train both models as plain DDP does: weights, Adam's moments (the
    gradients' scale, which Adam's scale invariance would hide from the weights; the critic's norm,
    ~0.25, stays under the clip) and the logged rows, value_loss included."""
    ds = runs("ddp-ppo", f"{kind}-ppo")  # launched side by side
    ddp = runs("ddp-ppo")
    ckpt_ddp, ckpt_ds = ddp / "checkpoints" / "step-2", ds / "checkpoints" / "step-2"
    for suffix in ("", "_1"):
        shards = sorted(ckpt_ds.glob(f"pytorch_model{suffix}/zero_pp_rank_*_mp_rank_00_optim_states.pt"))
        assert [s.name[:15] for s in shards] == ["zero_pp_rank_0_", "zero_pp_rank_1_"]
        full, per_rank = adam_numel(ckpt_ddp / f"optimizer{suffix}.bin"), [adam_numel(s) for s in shards]
        assert all(n <= full // 2 + 64 for n in per_rank) and sum(per_rank) >= full, (suffix, per_rank, full)
    assert max_diff(weights(ddp / "final"), weights(runs.model)) > MOVED
    assert max_diff(weights(ds / "final"), weights(ddp / "final")) < PPO_POLICY_TOL[kind]
    critic = critic_weights(ckpt_ddp)
    assert max_diff(critic, critic_weights(ddp / "checkpoints" / "step-1")) > MOVED  # step 2's updates moved it
    assert max_diff(critic_weights(ckpt_ds), critic) < WEIGHT_TOL
    for index in (0, 1):
        assert adam_norms(ckpt_ds, index) == pytest.approx(adam_norms(ckpt_ddp, index), rel=1e-4), index
    a, b = metrics(ddp), metrics(ds)
    assert len(a) == len(b) == 3
    for row_ddp, row_ds in zip(a, b, strict=True):
        assert row_ds["grad_norm"] == pytest.approx(row_ddp["grad_norm"], rel=1e-5)
        assert (row_ds["lr"], row_ds["reward/mean"]) == (row_ddp["lr"], row_ddp["reward/mean"])
        for key in ("loss", "kl", "value_loss", "value_mean"):
            assert row_ds[key] == pytest.approx(row_ddp[key], rel=1e-3, abs=1e-7), key


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero2", "zero3"])
def test_ppo_resume_restores_both_engines(runs, kind):
    """A resume from step 1 restores the policy's and the critic's engines (pytorch_model/ and
    pytorch_model_1/): step-2's critic and Adam state and the final policy equal the uninterrupted run's."""
    whole, resumed = runs(f"{kind}-ppo"), runs(f"{kind}-ppo-resumed")
    check_resume(runs, f"{kind}-ppo")
    step2 = [r / "checkpoints" / "step-2" for r in (whole, resumed)]
    assert max_diff(critic_weights(step2[0]), critic_weights(step2[1])) < 1e-6
    for index in (0, 1):
        assert adam_norms(step2[1], index) == pytest.approx(adam_norms(step2[0], index), rel=1e-6)
    assert [r["value_loss"] for r in metrics(resumed)] == pytest.approx([r["value_loss"] for r in metrics(whole)])


# ------------------------------------------------------------ settings, without a launch


def fake_accelerator(stage: int = 2, **ds_config):
    from accelerate.utils import DistributedType

    plugin = SimpleNamespace(zero_stage=stage, deepspeed_config={"zero_optimization": {"stage": stage}, **ds_config})
    return SimpleNamespace(
        distributed_type=DistributedType.DEEPSPEED,
        num_processes=2,
        state=SimpleNamespace(deepspeed_plugin=plugin),
        gradient_accumulation_steps=1,
    )


def test_batch_settings_come_from_rlvr_config():
    from rlvr import zero

    # the tiny recipe on 2 processes: 32 prompts x 8 samples / 2 = 128 per process, 2 minibatches of 64
    acc = fake_accelerator(3, train_micro_batch_size_per_gpu="auto", gradient_clipping="auto")
    zero.configure(acc, 128, minibatches=2, micro_batch_size=128, grad_clip=1.0)
    ds = acc.state.deepspeed_plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (
        64,
        1,
        128,
    )
    assert ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    acc = fake_accelerator()
    zero.configure(acc, 10, minibatches=2, micro_batch_size=2, grad_clip=None)
    ds = acc.state.deepspeed_plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (
        2,
        3,
        0.0,
    )


@pytest.mark.parametrize(
    "key,value,says",
    [
        ("gradient_clipping", 1.0, "gradient_clipping=1.0 contradicts rlvr's 0.5 from train.grad_clip"),
        ("train_micro_batch_size_per_gpu", 16, "train_micro_batch_size_per_gpu=16 contradicts rlvr's 4"),
        ("gradient_accumulation_steps", 8, "gradient_accumulation_steps=8 contradicts rlvr's 2"),
        ("scheduler", {"type": "WarmupLR"}, "remove its 'scheduler' section"),
    ],
)
def test_a_contradicting_deepspeed_config_is_one_clear_error(key, value, says):
    from rlvr import zero
    from rlvr.errors import ConfigError

    with pytest.raises(ConfigError, match="DeepSpeed config: ") as e:
        zero.configure(fake_accelerator(**{key: value}), 16, minibatches=2, micro_batch_size=4, grad_clip=0.5)
    assert says in str(e.value)


def test_agreeing_values_and_other_engines_pass():
    from rlvr import zero

    zero.configure(fake_accelerator(gradient_clipping=0.5), 16, minibatches=2, micro_batch_size=4, grad_clip=0.5)
    ddp = SimpleNamespace(distributed_type="MULTI_CPU")
    zero.configure(ddp, 16, minibatches=2, micro_batch_size=4, grad_clip=0.5)  # no DeepSpeed: nothing to do
    zero.check_trained(ddp, 1, "ppo")


def test_a_second_trained_model_needs_zero2_or_zero3():
    from rlvr import zero
    from rlvr.errors import ConfigError

    zero.check_trained(fake_accelerator(1), 0, "ppo")  # the policy
    for stage in (2, 3):  # a second engine (test_ppo_trains_policy_and_critic_as_ddp)
        zero.check_trained(fake_accelerator(stage), 1, "ppo")
    with pytest.raises(ConfigError, match=r"algorithm.name=ppo: .*second model .*ZeRO-2 or ZeRO-3 only, not stage 1"):
        zero.check_trained(fake_accelerator(1), 1, "ppo")
