"""LoRA through peft (rlvr/lora.py, `model.lora:`), on the embedded tiny model.

Each check compares against something computed independently of the code under test: the base
model loaded again from disk (reference log-probs, frozen weights), a trainable count from the
model config by hand, the merged final/ checkpoint loaded as a plain transformers model, a run
that was not interrupted (resume), one process (two-process DDP).

Run as a script, this file is the step of the two-process test:
    python tests/test_lora.py CONFIG BATCH.pt OUT.pt [dotted.overrides ...]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import helpers

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 4, "alpha": 8.0}


def varied_reward(problems, completions):
    return [len(set(c)) / 8.0 for c in completions]  # spread inside every group: non-zero advantages


def write_config(path: Path, **sections) -> Path:
    defaults = {"model": {"lora": LORA}, "data": {"train_size": 32, "eval_size": 4}}
    path.parent.mkdir(parents=True, exist_ok=True)
    return helpers.write_config(path, "tiny", defaults, **sections)


def make_trainer(path: Path, overrides: list[str] | None = None, **sections):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    return Trainer(load_config(write_config(path, **sections), overrides), reward_fn=varied_reward)


def perturb_adapters(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Random lora_B (peft starts it at 0, where the adapted model equals the base): the test can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def a_batch(tokenizer, model, n: int = 4):
    """Responses sampled from `model` to 4 training prompts."""
    from rlvr.rollout import HFEngine, Sampling
    from rlvr.tasks import reasoning_gym_problems

    problems = reasoning_gym_problems(helpers.TASK["task"], helpers.TASK["task_config"], "train", 4, 0)
    torch.manual_seed(0)
    return HFEngine(model, tokenizer).generate(problems, n, Sampling(max_new_tokens=6))


def logprobs(model, batch) -> torch.Tensor:
    from rlvr.models import response_logprobs

    with torch.no_grad():
        return response_logprobs(model.eval(), batch)[0] * batch.response_mask


def load_base():
    from rlvr.models import load_model_and_tokenizer, resolve_model_path

    return load_model_and_tokenizer(resolve_model_path("tiny"))


# ------------------------------------------------------------ config and refusals


def test_an_unknown_target_module_is_one_line_naming_the_key_and_the_modules(tmp_path):
    from rlvr.config import ConfigError

    with pytest.raises(ConfigError) as e:
        make_trainer(tmp_path / "c.yaml", ["model.lora.target_modules=[q_proj, vproj]"])
    msg = str(e.value)
    assert "\n" not in msg
    assert "model.lora.target_modules" in msg and "'vproj'" in msg and "did you mean 'v_proj'" in msg
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in msg


def test_lora_dropout_under_model_dropout_off_is_refused(tmp_path):
    from rlvr.config import ConfigError

    with pytest.raises(ConfigError, match=r"model.lora.dropout=0.1 .*model.dropout=keep"):
        make_trainer(tmp_path / "c.yaml", ["model.lora.dropout=0.1"])


def test_unknown_lora_key_names_the_allowed_ones(tmp_path):
    from rlvr.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"unknown key 'model.lora.rank' \(allowed here: r, alpha, dropout"):
        load_config(write_config(tmp_path / "c.yaml"), ["model.lora.rank=4"])


def test_zero3_and_fsdp_are_refused():
    from accelerate.utils import DistributedType

    from rlvr.config import ConfigError
    from rlvr.lora import check_distributed

    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP)
    z3 = SimpleNamespace(
        distributed_type=DistributedType.DEEPSPEED,
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3)),
    )
    z2 = SimpleNamespace(
        distributed_type=DistributedType.DEEPSPEED,
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2)),
    )
    with pytest.raises(ConfigError, match="LoRA with FSDP is not supported"):
        check_distributed(fsdp)
    with pytest.raises(ConfigError, match="LoRA with DeepSpeed ZeRO-3 is not supported"):
        check_distributed(z3)
    check_distributed(z2)
    check_distributed(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))


# ------------------------------------------------------------ the wrapped policy


def test_trainable_parameters_are_r_times_in_plus_out_and_the_optimizer_holds_only_them(tmp_path):
    trainer = make_trainer(tmp_path / "c.yaml")
    c = load_base()[0].config
    h, i, r = c.hidden_size, c.intermediate_size, LORA["r"]
    head = getattr(c, "head_dim", None) or h // c.num_attention_heads
    q, kv = c.num_attention_heads * head, c.num_key_value_heads * head
    # all-linear: q, k, v, o, gate, up, down in every layer (not the output head); A is r x in, B is out x r
    per_layer = r * ((h + q) + (h + kv) + (h + kv) + (q + h) + (h + i) + (h + i) + (i + h))
    want = per_layer * c.num_hidden_layers
    policy = trainer.accelerator.unwrap_model(trainer.policy)
    trainable = [p for n, p in policy.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == want
    assert all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)
    in_optimizer = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert sum(p.numel() for p in in_optimizer) == want
    assert {id(p) for p in in_optimizer} == {id(p) for p in trainable}


def test_reference_logprobs_equal_the_base_models_with_no_second_copy(tmp_path):
    trainer = make_trainer(tmp_path / "c.yaml", algorithm={"name": "grpo", "kl_coef": 0.04})
    ref, policy = trainer.algorithm.ref, trainer.accelerator.unwrap_model(trainer.policy)
    assert ref is not None and not list(ref.parameters()), "the reference holds weights of its own"
    perturb_adapters(policy)
    base, tok = load_base()
    batch = a_batch(tok, base)
    want = logprobs(base, batch)
    got = trainer.logprobs(ref, batch) * batch.response_mask  # the service the algorithm uses
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # float rounding: it shares prompts (rlvr/prefix.py)
    adapted = trainer.logprobs(trainer.policy, batch) * batch.response_mask
    assert (adapted - want).abs().max() > 1e-2, "the adapters change nothing: the comparison proves nothing"
    # the policy is untouched by the reference pass: adapters on again, still trainable
    assert all(p.requires_grad for n, p in policy.named_parameters() if "lora_" in n)
    torch.testing.assert_close(trainer.logprobs(trainer.policy, batch) * batch.response_mask, adapted)


def test_the_engine_samples_the_adapted_policy_and_sees_updates(tmp_path):
    from rlvr.lora import merged_state_dict
    from rlvr.rollout import HFEngine, Sampling

    trainer = make_trainer(tmp_path / "c.yaml")
    policy = trainer.accelerator.unwrap_model(trainer.policy)
    base, tok = load_base()
    problems = trainer.train_problems[:4]
    s = Sampling(max_new_tokens=6)

    def samples(engine):
        torch.manual_seed(1)
        return engine.generate(problems, 4, s).input_ids

    for seed in (0, 1):  # a second perturbation in place, as an optimizer step changes the weights
        perturb_adapters(policy, seed=seed, scale=2.0)
        trainer.engine.sync_weights(policy)
        merged, _ = load_base()
        merged.load_state_dict(merged_state_dict(policy))
        got, want, plain = samples(trainer.engine), samples(HFEngine(merged, tok)), samples(HFEngine(base, tok))
        assert torch.equal(got, want), f"perturbation {seed}: the engine does not sample the adapted weights"
        assert not torch.equal(got, plain), "the adapters do not change the samples: the test proves nothing"


# ------------------------------------------------------------ training, final/, resume


def run_dir_adapters(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "final" / "adapter" / "adapter_model.safetensors")


def test_training_changes_only_adapters_final_is_the_merged_model_and_resume_is_exact(tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    trainer = make_trainer(
        tmp_path / "a" / "c.yaml",
        algorithm={"name": "grpo", "kl_coef": 0.04},
        train={"steps": 4},
        checkpoint={"every": 2},
    )
    trainer.fit()
    run = tmp_path / "a" / "run"
    policy = trainer.accelerator.unwrap_model(trainer.policy)
    base, tok = load_base()

    # only the adapters changed: the base weights inside the policy are bitwise those on disk
    want = dict(base.named_parameters())
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in policy.named_parameters()}
    frozen = {n: p for n, p in frozen.items() if "lora_" not in n}
    assert frozen.keys() == want.keys()
    assert all(torch.equal(p, want[n]) for n, p in frozen.items())
    adapters = {n: p for n, p in policy.named_parameters() if "lora_" in n}
    assert adapters and all(p.requires_grad for p in adapters.values())
    unchanged = [n for n, p in adapters.items() if (p == 0).all() and "lora_B" in n]
    assert not unchanged, f"adapters that did not train: {unchanged}"

    # the checkpoint holds the adapters alone (small); final/ is the merged model, final/adapter the adapter
    with safe_open(run / "checkpoints" / "step-2" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys) and len(keys) == len(adapters)
    batch = a_batch(tok, base)
    adapted = logprobs(policy, batch)
    merged = AutoModelForCausalLM.from_pretrained(run / "final")
    torch.testing.assert_close(logprobs(merged, batch), adapted, rtol=0, atol=1e-5)
    assert (adapted - logprobs(base, batch)).abs().max() > 1e-3, "training moved nothing"
    reloaded = PeftModel.from_pretrained(load_base()[0], run / "final" / "adapter")
    torch.testing.assert_close(logprobs(reloaded, batch), adapted, rtol=0, atol=1e-6)

    # resume: a copy of the run as it stood after step 2 (its checkpoint and rows), run again to step 4
    resumed = tmp_path / "b" / "run"
    resumed.mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "step-2", resumed / "checkpoints" / "step-2")
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text("\n".join(rows[:2]) + "\n")
    again = make_trainer(
        tmp_path / "b" / "c.yaml",
        algorithm={"name": "grpo", "kl_coef": 0.04},
        train={"steps": 4},
        checkpoint={"every": 2},
    )
    again.fit()
    assert again.start_step == 2
    a, b = run_dir_adapters(run), run_dir_adapters(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs"
    untimed = lambda lines: [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines]
    assert untimed((resumed / "metrics.jsonl").read_text().splitlines()) == untimed(rows)


def test_non_finite_adapters_are_never_saved(tmp_path):
    from rlvr.errors import RunError

    trainer = make_trainer(tmp_path / "c.yaml")
    policy = trainer.accelerator.unwrap_model(trainer.policy)
    with torch.no_grad():
        next(p for n, p in policy.named_parameters() if "lora_A" in n)[0, 0] = float("nan")
    with pytest.raises(RunError, match=r"lora_A.* is not finite"):
        trainer.save_final()
    with pytest.raises(RunError, match=r"lora_A.* is not finite"):
        trainer.save_checkpoint(1)
    assert not (tmp_path / "run" / "final").exists()
    assert not (tmp_path / "run" / "checkpoints" / "step-1").exists()


# ------------------------------------------------------------ two processes


def two_process_step(tmp_path: Path, cfg: Path, batch: Path, engine: str = "ddp") -> dict:
    """The step below in 2 CPU processes: plain DDP, or DeepSpeed with the shipped recipes/accelerate/zero2.yaml
    (without ACCELERATE_USE_CPU, which would turn it into DDP)."""
    out = tmp_path / f"{engine}.pt"
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "tests"))
    launch = ["-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no"]
    if engine == "ddp":
        env["ACCELERATE_USE_CPU"] = "1"
        launch += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", "29531"]
    else:
        launch += [
            "--config_file",
            str(ROOT / "recipes" / "accelerate" / f"{engine}.yaml"),
            "--main_process_port",
            "29532",
        ]
    script = [str(Path(__file__).resolve()), str(cfg), str(batch), str(out), *STEP_OVERRIDES]
    r = subprocess.run([sys.executable, *launch, *script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def step_inputs(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A fixed batch, the config, and the one-process result (in this process) the launches are compared to."""
    tmp = tmp_path_factory.mktemp("lora_step")
    base, tok = load_base()
    batch = a_batch(tok, base)
    batch.rewards = torch.tensor(varied_reward(None, batch.completions))
    torch.save(batch, tmp / "batch.pt")
    cfg = write_config(tmp / "c.yaml", algorithm={"name": "grpo", "kl_coef": 0.04})
    one = one_step(str(cfg), str(tmp / "batch.pt"), *STEP_OVERRIDES)
    assert one["world"] == 1 and all("lora_" in k for k in one["adapters"])
    assert all(g.abs().sum() > 0 for g in one["grads"].values()), "a zero gradient: the comparison proves less"
    init = adapters_at_init(cfg)
    moved = min(float((w - init[k]).abs().max()) for k, w in one["adapters"].items())
    assert moved > 1e-4, "an adapter did not move: the comparison proves less than it says"
    return cfg, tmp / "batch.pt", one


def adapters_at_init(cfg: Path) -> dict[str, torch.Tensor]:
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    policy = Trainer(load_config(cfg)).policy
    return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}


@pytest.mark.distributed
def test_two_ddp_processes_make_the_same_adapter_update_as_one(tmp_path, step_inputs):
    cfg, batch, one = step_inputs
    two = two_process_step(tmp_path, cfg, batch)
    assert two["world"] == 2 and two["engine"] == "MULTI_CPU"
    assert one["grads"].keys() == two["grads"].keys()
    for k, g in one["grads"].items():
        torch.testing.assert_close(two["grads"][k], g, rtol=1e-4, atol=1e-7, msg=lambda m, k=k: f"{k}: {m}")
    for k, w in one["adapters"].items():
        torch.testing.assert_close(two["adapters"][k], w, rtol=0, atol=1e-5)


@pytest.mark.distributed
def test_zero2_makes_the_same_adapter_update_as_one_process(tmp_path, step_inputs):
    cfg, batch, one = step_inputs
    two = two_process_step(tmp_path, cfg, batch, engine="zero2")
    assert two["world"] == 2 and two["engine"] == "DEEPSPEED"  # really DeepSpeed, not DDP
    assert one["adapters"].keys() == two["adapters"].keys()
    for k, w in one["adapters"].items():
        torch.testing.assert_close(two["adapters"][k], w, rtol=0, atol=1e-5)


STEP_OVERRIDES = ["train.micro_batch_size=4", "train.epochs=2"]  # 2 steps on the whole batch: lora_A moves in the 2nd


def launch_train(cfg: Path, engine: str, port: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "tests"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--mixed_precision", "no"]
    if engine == "ddp":
        env["ACCELERATE_USE_CPU"] = "1"
        cmd += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    else:
        cmd += ["--config_file", str(ROOT / "recipes" / "accelerate" / f"{engine}.yaml")]
    cmd += ["--main_process_port", str(port), "-m", "rlvr", "train", str(cfg)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("engine,port", [("ddp", 29541), ("zero2", 29542)])
def test_two_process_resume_is_exact_and_checkpoints_hold_the_adapters(tmp_path, engine, port):
    """3 steps with a checkpoint at step 2, against the same run resumed from that checkpoint."""
    from safetensors.torch import load_file

    sections = dict(algorithm={"name": "grpo", "kl_coef": 0.04}, train={"steps": 3}, checkpoint={"every": 2})
    whole = tmp_path / "whole" / "run"
    launch_train(write_config(tmp_path / "whole" / "c.yaml", **sections), engine, port)
    step2 = whole / "checkpoints" / "step-2"
    if engine == "ddp":
        tensors = load_file(step2 / "model.safetensors")
    else:  # really DeepSpeed: ZeRO shards per rank; its module file without the frozen base
        assert len(list(step2.glob("pytorch_model/zero_pp_rank_*_optim_states.pt"))) == 2
        tensors = torch.load(step2 / "pytorch_model" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    adapters = [k for k in tensors if "lora_" in k]
    assert adapters and not [k for k in tensors if ".base_layer." in k], "the frozen base is in the checkpoint"
    resumed = tmp_path / "resumed" / "run"
    shutil.copytree(step2, resumed / "checkpoints" / "step-2")
    out = launch_train(write_config(tmp_path / "resumed" / "c.yaml", **sections), engine, port)
    assert f"resuming from {resumed / 'checkpoints' / 'step-2'} (step 2)" in out
    a, b = run_dir_adapters(whole), run_dir_adapters(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs"


def one_step(cfg_path: str, batch_path: str, *overrides: str) -> dict:
    """One optimizer step on a fixed batch (each process its share of the groups), as in tests/one_step.py:
    the adapters' gradients at the last optimizer step (after DDP's all-reduce) and their values after it.
    peft starts lora_B at 0, so lora_A has no gradient in the first step: hence two epochs (two steps)."""
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    trainer = Trainer(load_config(cfg_path, list(overrides)))
    batch = torch.load(batch_path, weights_only=False)
    groups = sorted(set(batch.group.tolist()))[trainer.rank :: trainer.world]
    local = batch.select([i for i, g in enumerate(batch.group.tolist()) if g in groups])
    model = trainer.accelerator.unwrap_model(trainer.policy)
    grads: dict[str, torch.Tensor] = {}

    def hook(optimizer, args, kwargs):
        grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    opt = trainer.optimizer.optimizer
    if isinstance(opt, torch.optim.Optimizer):  # DeepSpeed steps flat partitions inside its own optimizer
        opt.register_step_pre_hook(hook)
    trainer.train_on(local.to(trainer.accelerator.device))
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    acc = trainer.accelerator
    return {
        "grads": grads,
        "adapters": adapters,
        "world": trainer.world,
        "main": acc.is_main_process,
        "engine": str(acc.distributed_type.value),
    }


# ------------------------------------------------------------ slow: learning


@pytest.mark.slow
def test_lora_grpo_improves_held_out_pass_at_1(tmp_path):
    """recipes/tiny/grpo_lora.yaml: held-out pass@1 before and after, from the run's own evals."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlvr", "train", str(ROOT / "recipes/tiny/grpo_lora.yaml"), f"output_dir={out}"]
    cmd += ["eval.full=false", "checkpoint.every=0", "tracking.progress=false"]
    r = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    evals = {e["tag"]: e for e in map(json.loads, (out / "evals.jsonl").read_text().splitlines())}
    gain = evals["final"]["pass@1"] - evals["base"]["pass@1"]
    print(f"pass@1 {evals['base']['pass@1']:.3f} -> {evals['final']['pass@1']:.3f} ({gain * 100:+.1f} points)")
    assert gain >= 0.10


if __name__ == "__main__":
    cfg_arg, batch_arg, out_arg, *rest = sys.argv[1:]
    result = one_step(cfg_arg, batch_arg, *rest)
    if result["main"]:
        torch.save(result, out_arg)
    torch.distributed.barrier()
