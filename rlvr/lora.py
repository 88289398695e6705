"""LoRA adapters on the policy, through peft (`model.lora:` in the config; absent = full fine-tuning).

- `wrap(model, settings, accelerator)`: the loaded policy wrapped by peft's `get_peft_model`; only the
  adapter matrices require grad, so the trainer's optimizer (over trainable parameters) holds only them.
  The target modules are checked against the model first: an unknown name is one line naming the key
  and the modules that exist.
- `adapters_off(policy)`: the reference policy of a KL term, as the same model run under peft's
  `disable_adapter()`: exactly the base model's outputs, with no second copy of the weights. The
  trainer hands it to the algorithm (`Trainer.reference_model`), which never knows LoRA is on.
- Rollouts: the hf engine holds the peft model itself, so generation samples the adapted weights
  and `sync_weights` has nothing to copy.
- Checkpoints: accelerate's save_state writes only the adapter tensors of a peft model (a pre-save
  hook), and load_state loads them strictly against that set (a pre-load hook); the frozen base is
  the checkpoint at model.path, loaded again on resume. The optimizer, schedule and RNG states are
  saved as for any run, so a resume continues exactly.
- `save_final`: final/ holds the merged model (W + alpha/r * B A) as an ordinary transformers
  checkpoint, so `rlvr eval --model final` loads it like any model, and final/adapter/ the adapter
  alone (peft's save_pretrained; `PeftModel.from_pretrained(base, final/adapter)` loads it).

What combines: DDP and DeepSpeed ZeRO-2 (tested on 2 CPU processes: the same update as 1 process; under
ZeRO-2 the engine's checkpoint leaves the frozen base out, `save_state_kwargs`). Not combined: DeepSpeed
ZeRO-3 and FSDP, refused at start (`check_distributed`); their sharded parameters need a gathered merge
and adapter-only sharded checkpoints that are not built or tested. The PPO critic stays a full model
(its value head and body are trained in full, as without LoRA): LoRA applies to the policy only.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlvr.errors import ConfigError

ADAPTER_DIR = "adapter"  # final/adapter: the adapter alone, beside the merged model in final/


class LoraSettings(BaseModel):
    """The `model.lora:` section."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha: the update is (alpha / r) * B A")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on the adapters' input; needs model.dropout=keep when > 0"
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="module names to adapt (e.g. [q_proj, v_proj]; a name matches the last part of a module's "
        "path), or all-linear: every linear layer but the output head",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _some(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "all-linear":
            return [v]  # one module name
        if isinstance(v, list) and not v:
            raise ValueError("name at least one module, or all-linear")
        return v


def adaptable_modules(model: torch.nn.Module) -> list[str]:
    """The last names of the model's modules LoRA can adapt (linear, embedding, conv layers), sorted."""
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and isinstance(m, kinds)})


def check_targets(model: torch.nn.Module, settings: LoraSettings) -> None:
    """Every name in model.lora.target_modules names a module LoRA can adapt, or one line saying which not."""
    if settings.target_modules == "all-linear":
        return
    known = adaptable_modules(model)
    for name in settings.target_modules:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(
                f"model.lora.target_modules: the model has no module named {name!r}{hint}; "
                f"the modules LoRA can adapt: {', '.join(known)} (or all-linear)"
            )


def check_distributed(accelerator: Any) -> None:
    """Refuse the engines LoRA is not built for: ZeRO-3 and FSDP shard the parameters the adapters,
    the merge and the adapter-only checkpoint need whole."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        raise ConfigError(
            "model.lora: LoRA with FSDP is not supported (not built or tested); use DDP or DeepSpeed ZeRO-2, "
            "or remove model.lora"
        )
    if kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise ConfigError(
            "model.lora: LoRA with DeepSpeed ZeRO-3 is not supported (not built or tested); use ZeRO-2 or DDP, "
            "or remove model.lora"
        )


def wrap(model: torch.nn.Module, settings: LoraSettings, accelerator: Any, *, dropout: str = "off") -> torch.nn.Module:
    """`model` with LoRA adapters (peft), only they trainable; the accelerator's checkpoints then save
    and load the adapters alone (`register_checkpoint_hooks`)."""
    from peft import LoraConfig, get_peft_model

    if settings.dropout > 0 and dropout == "off":
        raise ConfigError(
            f"model.lora.dropout={settings.dropout:g} is zeroed by model.dropout=off (RL keeps the trained models "
            "deterministic); set model.dropout=keep to use it, or model.lora.dropout=0"
        )
    check_distributed(accelerator)
    check_targets(model, settings)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers 5 (is_gradient_... before)
    if checkpointing if checkpointing is not None else getattr(model, "is_gradient_checkpointing", False):
        # frozen embeddings: the checkpointed blocks' input needs a grad for the adapters' to flow
        peft_model.enable_input_require_grads()
    register_checkpoint_hooks(accelerator)
    return peft_model


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


# ------------------------------------------------------------ the reference policy


class AdaptersOff(torch.nn.Module):
    """The policy with its adapters disabled: the base model's outputs, computed with the policy's own
    (frozen) base weights, no copy. The policy is held outside the module tree, so what a caller does
    to this module (requires_grad_, eval, to) never reaches the trained policy."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        if not is_peft(policy):
            raise TypeError("AdaptersOff needs a peft model (the policy wrapped by rlvr.lora.wrap)")
        self.__dict__["policy"] = policy  # not a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.policy.disable_adapter():
            return self.policy(*args, **kwargs)


def adapters_off(policy: torch.nn.Module) -> AdaptersOff:
    return AdaptersOff(policy)


# ------------------------------------------------------------ checkpoints


def trainable_keys(model: torch.nn.Module) -> set[str]:
    """The state_dict keys of the parameters that train (the adapters), as `model` (wrapped or not) names them."""
    return {n for n, p in model.named_parameters() if p.requires_grad}


class AdapterState(torch.nn.Module):
    """What accelerate loads into in place of a peft model: its state_dict is the adapters' tensors, and
    load_state_dict takes those, strictly (a missing adapter or a key the model lacks is reported as torch
    does), with the model's buffers; frozen base tensors in the file are skipped (DeepSpeed's module
    file keeps a tied copy such as lm_head), the base being model.path's."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.__dict__["model"] = model
        self.__dict__["keys"] = trainable_keys(model)
        self.__dict__["buffers_"] = {n for n, _ in model.named_buffers()}
        self.__dict__["all_"] = set(model.state_dict())

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if k in self.keys}

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        from torch.nn.modules.module import _IncompatibleKeys

        missing = sorted(self.keys - set(state_dict))
        unexpected = sorted(set(state_dict) - self.all_)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"the checkpoint's adapters do not match model.lora: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        known = self.keys | self.buffers_
        self.model.load_state_dict({k: v for k, v in state_dict.items() if k in known}, strict=False)
        return _IncompatibleKeys(missing, unexpected)


def register_checkpoint_hooks(accelerator: Any) -> None:
    """Make accelerate's save_state write only the adapters of a peft model (not its frozen base), and
    load_state load them strictly. Other models (the PPO critic) are saved whole as before. Under
    DeepSpeed the engine saves its own files and the hooks leave them alone."""
    if getattr(accelerator, "_rlvr_lora_hooks", False):
        return
    accelerator._rlvr_lora_hooks = True

    def on_save(models: list[Any], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
        if len(weights) != len(models):  # DeepSpeed and FSDP save through their own engines
            return
        for i, m in enumerate(models):
            if is_peft(accelerator.unwrap_model(m)):
                keys = trainable_keys(m)
                weights[i] = {k: v for k, v in weights[i].items() if k in keys}

    def on_load(models: list[Any], input_dir: str) -> None:
        for i, m in enumerate(models):
            if is_peft(accelerator.unwrap_model(m)):
                models[i] = AdapterState(m)

    accelerator.register_save_state_pre_hook(on_save)
    accelerator.register_load_state_pre_hook(on_load)


def _deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def save_state_kwargs(accelerator: Any, settings: LoraSettings | None) -> dict[str, Any]:
    """accelerate.save_state's extra arguments for a LoRA run: under DeepSpeed (ZeRO-2) the engine writes
    its own module file, from which the frozen base is then left out (the hooks above serve DDP)."""
    return {"exclude_frozen_parameters": True} if settings is not None and _deepspeed(accelerator) else {}


def load_state_kwargs(accelerator: Any, settings: LoraSettings | None) -> dict[str, Any]:
    """accelerate.load_state's extra arguments for a LoRA run: under DeepSpeed the engine's module file holds
    the adapters alone, loaded strictly against them (`AdapterState`)."""
    if settings is None or not _deepspeed(accelerator):
        return {}
    return {"custom_load_fn": lambda src, dst: AdapterState(dst).load_state_dict(src)}


# ------------------------------------------------------------ final/


def merged_state_dict(peft_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state_dict with every adapter merged in (W + delta, peft's `get_delta_weight`),
    under the base model's own key names; the live model is not changed."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, m in base.named_modules():
        if isinstance(m, LoraLayer) and not m.disable_adapters:
            for a in m.active_adapters:
                if a in m.lora_A or a in getattr(m, "lora_embedding_A", {}):
                    d = m.get_delta_weight(a).detach()
                    deltas[f"{name}.weight"] = deltas[f"{name}.weight"] + d if f"{name}.weight" in deltas else d
    out: dict[str, torch.Tensor] = {}
    for k, v in base.state_dict().items():
        if any(part.startswith("lora_") for part in k.split(".")):
            continue
        key = k.replace(".base_layer.", ".")
        out[key] = (v + deltas[key].to(v.dtype)) if key in deltas else v.detach()
    missing = set(deltas) - set(out)
    if missing:
        raise RuntimeError(f"merging the adapters: no base weight for {sorted(missing)[:3]}")
    return out


def save_final(acc: Any, model: torch.nn.Module, tokenizer: Any, out: Path, step: int) -> None:
    """final/: the merged model and tokenizer (an ordinary transformers checkpoint) and final/adapter/
    (the adapter alone), written aside and renamed as rlvr.checkpoint.save_final does; never non-finite."""
    from rlvr import checkpoint as ckpt

    peft_model = acc.unwrap_model(model)
    final, tmp = Path(out) / "final", Path(out) / f"{ckpt.TMP}final"
    ckpt.check_finite([peft_model], step, final)
    merged = merged_state_dict(peft_model)
    for name, t in merged.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ckpt.RunError(f"step {step}: merged weight {name} is not finite (nan or inf); not writing {final}")
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        base = peft_model.get_base_model()
        with ckpt.write_errors(final, " (final weights not written)", cleanup=tmp):
            own = base.generation_config  # the engine leaves a blank one on the base after generate
            base.generation_config = peft_model.generation_config
            try:
                base.save_pretrained(tmp, state_dict=merged)
            finally:
                base.generation_config = own
            peft_model.save_pretrained(tmp / ADAPTER_DIR)
            tokenizer.save_pretrained(tmp)
        ckpt.publish(tmp, final)
    acc.wait_for_everyone()
