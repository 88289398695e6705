"""DeepSpeed ZeRO-2/3 under `accelerate launch`: what the trainer needs to do differently.

accelerate selects DeepSpeed from the launch config (recipes/accelerate/zero2.yaml, zero3.yaml);
everything here is a no-op for DDP and one process. Choices:

- The DeepSpeed batch settings come from rlvr's config, filled in before the first prepare:
  `train_micro_batch_size_per_gpu` = train.micro_batch_size (capped by the minibatch one process
  holds), `gradient_accumulation_steps` = micro-batches per minibatch, `gradient_clipping` =
  train.grad_clip (0 when null). A launch config that sets one of them to another value is an
  error naming the key; "auto" or absent is filled.
- rlvr places the accumulation boundary itself (Trainer.sync_if; accelerate hands it to the engine)
  and normalises the loss by global token and sequence counts, so DeepSpeed's own division by
  gradient_accumulation_steps is turned off (`scale_wrt_gas=False`).
- The engine steps inside the boundary's backward (accelerate's DeepSpeed wrapper): DeepSpeed
  clips, and skips a step whose gradient is non-finite (its overflow check, agreed over processes;
  on by default in fp32, fp16 and bf16: bf16.check_grad_overflow);
  the trainer reads the engine's global gradient norm, which is inf for a skipped step, so
  `Trainer.skip_nonfinite` counts it and the schedule does not advance.
- The warm-up schedule is a LambdaLR on the torch AdamW inside DeepSpeed's ZeRO optimizer (they
  share param_groups), so its state_dict and skip counters are those of the DDP runs.
- ZeRO-3 partitions every parameter: rollouts and evals run with the policy's parameters
  gathered once per collect or eval (TRL's `unwrap_model_for_generation`: GatheredParameters with
  the ZeRO hooks removed; HFEngine passes synced_gpus=False), so processes that generate a
  different number of times cannot deadlock; a model an eval loads by path there (the base) is
  loaded whole. So the policy's parameters (not its gradients or optimizer state) must fit one
  device while it generates, as in TRL. The frozen reference model is a ZeRO-3 inference engine (TRL's `prepare_deepspeed`,
  no optimizer); under ZeRO-2 it stays a full replica per process (ZeRO-2 keeps full parameters
  anyway).
- A second trained model (PPO's critic) is a second DeepSpeed engine (accelerate's save_state and
  load_state keep both: pytorch_model/ and pytorch_model_1/). accelerate's `backward` drives one
  engine only, so `backward` here runs the shared loss's backward through the first engine and
  DeepSpeed's torch-style backward hooks make the others reduce their gradients; each then steps on
  its own. Proven for ZeRO-2 and ZeRO-3 (same weights, Adam moments and rows as DDP; resume exact:
  tests/test_deepspeed.py), refused for other stages. Each engine skips a non-finite step on its
  own (DDP skips both models together); PPO's combined loss makes both non-finite together.
- Non-finite checks read each process's partition under ZeRO-3 (`ds_tensor`) and agree by an
  all-reduce; final/ is consolidated by accelerate's get_state_dict (ZeRO-3 needs
  `stage3_gather_16bit_weights_on_model_save`, set here).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from rlvr.errors import ConfigError, RunError
from rlvr.losses import all_reduce_sum


def enabled(acc: Any) -> bool:
    """Whether accelerate runs DeepSpeed."""
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.DEEPSPEED


def stage(acc: Any) -> int:
    """The ZeRO stage, 0 without DeepSpeed."""
    return int(acc.state.deepspeed_plugin.zero_stage) if enabled(acc) else 0


def batch_settings(samples_per_process: int, minibatches: int, micro_batch_size: int) -> tuple[int, int]:
    """(micro-batch size, micro-batches per minibatch) one process runs, as Trainer.update splits
    its share of the step's samples: minibatches by tensor_split (the first ones one larger), then
    micro-batches of train.micro_batch_size."""
    per_minibatch = math.ceil(samples_per_process / minibatches)
    micro = min(micro_batch_size, per_minibatch)
    return micro, math.ceil(per_minibatch / micro)


def configure(acc: Any, samples_per_process: int, *, minibatches: int, micro_batch_size: int, grad_clip: float | None):
    """Fill the DeepSpeed config's batch and clipping settings from rlvr's (before any prepare);
    a launch config that contradicts them stops the run naming the key."""
    if not enabled(acc):
        return
    plugin = acc.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    micro, accum = batch_settings(samples_per_process, minibatches, micro_batch_size)
    want = {
        "train_micro_batch_size_per_gpu": (micro, "train.micro_batch_size (capped by the minibatch per process)"),
        "gradient_accumulation_steps": (
            accum,
            "the micro-batches per minibatch (train.micro_batch_size, "
            "train.minibatches, train.prompts_per_step x rollout.n / processes)",
        ),
        "train_batch_size": (micro * accum * acc.num_processes, "the samples per optimizer step over all processes"),
        "gradient_clipping": (float(grad_clip or 0.0), "train.grad_clip (0 = none)"),
    }
    for key, (value, source) in want.items():
        have = ds.get(key, "auto")
        if have not in ("auto", None) and float(have) != float(value):
            raise ConfigError(
                f"DeepSpeed config: {key}={have} contradicts rlvr's {value} from {source}; "
                f"remove {key} from the accelerate/DeepSpeed config (rlvr sets it)"
            )
        ds[key] = value
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"DeepSpeed config: remove its {key!r} section: rlvr builds its own AdamW and warm-up (train.lr, train.*)"
            )
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("compute_grad_norm") is False:
        raise ConfigError("DeepSpeed config: zero_optimization.compute_grad_norm=false: rlvr needs the gradient norm")
    if stage(acc) == 3:  # final/ is written from the gathered parameters (accelerate's get_state_dict)
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        plugin.zero3_save_16bit_model = True
    acc.gradient_accumulation_steps = accum


def backward_kwargs(acc: Any) -> dict[str, Any]:
    """accelerate.backward's extra arguments: rlvr's loss is already normalised over the minibatch."""
    return {"scale_wrt_gas": False} if enabled(acc) else {}


def check_trained(acc: Any, count: int, algorithm: str) -> None:
    """Refuse a second trained model under a DeepSpeed stage other than ZeRO-2/3 (the proven ones)."""
    if enabled(acc) and count >= 1 and stage(acc) not in (2, 3):
        raise ConfigError(
            f"algorithm.name={algorithm}: it trains a second model (PPO's critic), which rlvr runs under "
            f"DeepSpeed ZeRO-2 or ZeRO-3 only, not stage {stage(acc)}; use zero2.yaml, zero3.yaml, ddp.yaml or FSDP"
        )


def backward(acc: Any, models: list[Any], loss: torch.Tensor) -> None:
    """The backward of the minibatch's loss (already normalised: no division by the accumulation
    steps); under DeepSpeed, at the accumulation boundary (acc.sync_gradients, set by
    Trainer.sync_if) every engine clips and steps (or skips a non-finite step).

    One trained engine: accelerate's backward. Several (PPO's critic): accelerate drives only its
    first engine, so here one engine runs the backward of the shared loss and the others take
    part through DeepSpeed's torch-style backward hooks (registered on their forward outputs:
    prologue, ZeRO gradient reduction and epilogue, no second division since the graph is the
    engine's); then each engine steps on its own."""
    if not enabled(acc) or len(models) == 1:
        acc.backward(loss, **backward_kwargs(acc))
        return
    for m in models[1:]:
        if not m._support_torch_style_backward:  # torch lacks the internals DeepSpeed's hooks need
            raise RunError(
                "DeepSpeed cannot reduce a second engine's gradients with this torch (no torch-style backward); "
                "launch PPO with ddp.yaml or FSDP"
            )
    boundary = acc.sync_gradients
    for m in models:
        m.set_gradient_accumulation_boundary(boundary)
    models[0].backward(loss, scale_wrt_gas=False)
    if boundary:
        for m in models:
            m.step()


def torch_optimizer(opt: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper (and DeepSpeed's ZeRO optimizer): the one
    whose param_groups carry the lr a schedule sets."""
    while not isinstance(opt, torch.optim.Optimizer):
        opt = opt.optimizer
    return opt


def grad_norms(models: list[Any]) -> list[float]:
    """Each DeepSpeed engine's global gradient norm of its last step (inf: it skipped the step)."""
    return [float(m.get_global_grad_norm()) for m in models]


def frozen(model: torch.nn.Module, acc: Any) -> torch.nn.Module | None:
    """A frozen model (the reference) as a ZeRO-3 inference engine, partitioned like the policy;
    None outside ZeRO-3 (the caller keeps a replica)."""
    if stage(acc) != 3:
        return None
    from trl.models.utils import prepare_deepspeed

    return prepare_deepspeed(model.requires_grad_(False), acc)


@contextlib.contextmanager
def generation(model: torch.nn.Module, acc: Any) -> Iterator[None]:
    """Inside, a ZeRO-3 model's parameters are whole on every process (gathered once, hooks off),
    so `generate` runs locally (HFEngine passes synced_gpus=False); elsewhere nothing happens."""
    if stage(acc) != 3:
        yield
        return
    from transformers.integrations import deepspeed as hf_deepspeed
    from trl.models.utils import unwrap_model_for_generation

    # a model an eval loads by path in here (the base) is loaded whole, as under DDP, not ZeRO-3-partitioned
    # by from_pretrained with no engine to gather it
    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_config = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        with unwrap_model_for_generation(model, acc):
            yield
    finally:
        if hf_config is not None:
            hf_deepspeed.set_hf_deepspeed_config(hf_config)


def full_shape(t: torch.Tensor) -> torch.Size:
    """A parameter's shape, also when ZeRO-3 holds only a partition of it here."""
    return getattr(t, "ds_shape", t.shape)


def first_nonfinite(models: list[torch.nn.Module]) -> tuple[int, str] | None:
    """(model index, name) of the first parameter or floating buffer holding a nan or inf, or None.
    Under ZeRO-3 each process checks its own partitions and the processes agree by an all-reduce."""
    names, flags, partitioned, device = [], [], False, "cpu"
    for i, model in enumerate(models):
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if hasattr(t, "ds_tensor"):
                partitioned, t = True, t.ds_tensor
            if t.is_floating_point():
                names.append((i, name))
                flags.append(torch.isfinite(t.detach()).all().logical_not().float())
                device = t.device
    bad = torch.stack(flags) if flags else torch.zeros(0)
    if partitioned:  # each process saw its own partitions only
        bad = all_reduce_sum(bad.to(device)).cpu()
    hit = bad.nonzero()
    return names[int(hit[0])] if len(hit) else None
