"""FSDP2 (`torch.distributed.fsdp.fully_shard`) through accelerate, on GPUs and on CPU (gloo).

rlvr runs FSDP only as FSDP2 (`fsdp_version: 2` in the accelerate config, recipes/accelerate/fsdp.yaml):
accelerate's `prepare` applies `fully_shard` per transformer block, `save_state` writes sharded
checkpoints (`pytorch_model_fsdp_0/`, `optimizer_0/`: torch.distributed.checkpoint files, one part
per process) and `get_state_dict` gathers a full one for `final/`.

CPU. accelerate 1.15 turns an FSDP config into `DistributedType.FSDP` only on an accelerator
(`AcceleratorState.__init__` switches to FSDP from MULTI_GPU/MULTI_XPU/...; on a machine without
one, `PartialState` sees `DistributedType.NO`, or MULTI_CPU with ACCELERATE_USE_CPU=1, and the
FSDP plugin is dropped). torch's FSDP2 itself works on CPU: gloo has the two collectives it needs
(`all_gather_into_tensor`, `reduce_scatter_tensor`, both checked in torch 2.13). So on a CPU-only
machine, when the launcher asked for FSDP (ACCELERATE_USE_FSDP=true) and accelerate set up a gloo
group of several processes but left the engine at NO, `enable_on_cpu` sets accelerate's state to
FSDP with the plugin accelerate built from the same environment: from there on the run takes
accelerate's own FSDP2 code (prepare, clip_grad_norm_, save_state/load_state, get_state_dict),
the one a GPU run takes. Nothing changes on a machine with a GPU: accelerate chooses FSDP itself.

Generation. Under FSDP2 every forward all-gathers each block's parameters, so `generate` (one
forward per token, ranks stopping at different lengths) would gather per token and deadlock
when the ranks' token counts differ. `full_params(model)` gathers every unit once and keeps the
parameters whole until the block ends (no collective inside it), then reshards: the rollout and
the eval run inside it. It holds the full model on each process for that time, as ZeRO-3's
gathered generation does.

The frozen reference model is sharded the same way (`shard_frozen`: accelerate's fsdp2 wrapping,
without an optimizer, outside `accelerator._models`, so it is not written into checkpoints); a trained
second model (PPO's critic) goes through `accelerator.prepare` like the policy. The finite-weights check
reads each process's shard (`first_nonfinite`), and final/ drops the second name of a tied weight that
the gathered state dict holds apart (`without_tied_copies`). FSDP1 (fsdp_version 1) is refused: its
generation would need summon_full_params, not built. LoRA with FSDP is refused by rlvr/lora.py.

Proved on 2 CPU processes by tests/test_fsdp.py: one update equals 1 process's, 3 GRPO steps (KL to
the sharded reference) end within 5e-6 of DDP's weights, resume is bitwise, generation gathers once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from rlvr.errors import RunError


def requested() -> bool:
    """Whether the launcher asked for FSDP (accelerate launch sets ACCELERATE_USE_FSDP from the config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def has_accelerator() -> bool:
    """A device accelerate would run FSDP on by itself (CUDA, XPU, ...)."""
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()


def accelerator_kwargs() -> dict[str, Any]:
    """Extra Accelerator arguments: the FSDP plugin built from the launcher's environment when FSDP is
    asked for on a CPU-only machine (accelerate builds the same plugin itself, but drops it there)."""
    if not requested() or has_accelerator():
        return {}
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise RunError(
            f"FSDP: fsdp_version {plugin.fsdp_version} in the accelerate config; rlvr runs FSDP2 only "
            "(set fsdp_config.fsdp_version: 2, as recipes/accelerate/fsdp.yaml does)"
        )
    return {"fsdp_plugin": plugin}


def enable_on_cpu(acc: Any, plugin: Any) -> None:
    """On a CPU-only machine, make accelerate run `plugin` (FSDP2) over its gloo group: accelerate left the
    engine at NO (module docstring). Does nothing when accelerate chose its engine itself, or with one
    process; anything else (MULTI_CPU from ACCELERATE_USE_CPU=1) is left for rlvr.sharding's check."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if plugin is None or acc.distributed_type != DistributedType.NO or acc.num_processes < 2:
        return
    if not torch.distributed.is_initialized() or torch.distributed.get_backend() != "gloo":
        return
    for shared in (PartialState._shared_state, AcceleratorState._shared_state):
        shared["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin
    if acc.state.mixed_precision != "no":
        plugin.set_mixed_precision(acc.state.mixed_precision)


def is_fsdp(acc: Any) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP


def check_version(acc: Any) -> None:
    """rlvr's FSDP path is FSDP2 (module docstring): an FSDP1 run stops here with the key to change."""
    if is_fsdp(acc) and not acc.is_fsdp2:
        raise RunError(
            f"FSDP: fsdp_version {acc.state.fsdp_plugin.fsdp_version} in the accelerate config; rlvr runs "
            "FSDP2 only (set fsdp_config.fsdp_version: 2, as recipes/accelerate/fsdp.yaml does)"
        )


def shard_frozen(acc: Any, model: torch.nn.Module) -> torch.nn.Module:
    """A frozen model (the reference) sharded like the policy: accelerate's FSDP2 wrapping without an
    optimizer, kept out of `accelerator._models` (not checkpointed: it cannot change)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    model.requires_grad_(False).eval()
    return fsdp2_prepare_model(acc, model).eval()


def _units(model: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def full_params(model: torch.nn.Module) -> Iterator[None]:
    """Inside: every parameter of the FSDP2 `model` whole on every process, gathered once on entry, no
    collective in any forward pass (so processes may run different numbers of them: `generate`);
    resharded on exit, each unit's reshard-after-forward setting restored. Every process must enter
    together. A model that is not FSDP2, or a nested entry, passes through."""
    units = _units(model)
    if not units or getattr(model, "_rlvr_full_params", False):
        yield
        return
    root = units[0]
    root._get_fsdp_state()._lazy_init()  # settles the root's own setting first, so the restore is exact
    saved = [
        [(g, g.post_forward_mesh_info) for g in u._get_fsdp_state()._fsdp_param_groups]
        for u in units  # what set_reshard_after_forward sets; restored as it was
    ]
    model._rlvr_full_params = True
    try:
        root.set_reshard_after_forward(False)  # a forward leaves the gathered parameters in place
        for u in units:
            u.unshard()
        yield
    finally:
        for u in units:
            u.reshard()
        for groups in saved:
            for g, info in groups:
                g.post_forward_mesh_info = info
        model._rlvr_full_params = False


def local_numel(model: torch.nn.Module) -> int:
    """Parameter elements stored on this process (a shard's under FSDP)."""
    from torch.distributed.tensor import DTensor

    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())


def first_nonfinite(models: list[torch.nn.Module]) -> tuple[int, str] | None:
    """(model index, name) of the first parameter or floating buffer holding a nan or inf, or None. FSDP2's
    parameters (DTensor shards) are checked on each process's shard and agreed by one all-reduce; any other
    model goes to rlvr.zero.first_nonfinite (which handles ZeRO-3's partitions)."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for m in models for p in m.parameters()):
        from rlvr.zero import first_nonfinite as replicated_or_zero

        return replicated_or_zero(models)
    from rlvr.losses import all_reduce_sum

    names, flags, device = [], [], "cpu"
    for i, model in enumerate(models):
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            t = t.to_local() if isinstance(t, DTensor) else t
            if t.is_floating_point():
                names.append((i, name))
                flags.append(torch.isfinite(t.detach()).all().logical_not().float())
                device = t.device  # the collective's device (nccl takes CUDA tensors only)
    bad = all_reduce_sum(torch.stack([f.to(device) for f in flags])).cpu() if flags else torch.zeros(0)
    hit = bad.nonzero()
    return names[int(hit[0])] if len(hit) else None


def announce(acc: Any, model: torch.nn.Module) -> None:
    """Under FSDP, one line from the main process: the engine and how much of the policy one process holds
    (the most any process holds: one all-reduce), so a run shows it is sharded, not replicated."""
    if not is_fsdp(acc):
        return
    local = torch.tensor([float(local_numel(model))], device=acc.device)
    torch.distributed.all_reduce(local, op=torch.distributed.ReduceOp.MAX)
    total = sum(p.numel() for p in model.parameters())
    if acc.is_main_process:
        print(
            f"rlvr: FSDP2 over {acc.num_processes} processes: the policy's parameters (with their gradients and "
            f"optimizer state) are sharded, at most {int(local.item()):,} of its {total:,} elements on one process",
            flush=True,
        )


def without_tied_copies(model: torch.nn.Module, state_dict: dict[str, Any]) -> dict[str, Any]:
    """`state_dict` without the later names of a parameter registered under several (tied embeddings:
    lm_head.weight). A gathered FSDP state dict holds each name as its own tensor, which save_pretrained's
    shared-storage test does not see as tied; it would write the tied weight twice."""
    seen: set[int] = set()
    drop = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            drop.append(name)
        seen.add(id(p))
    return {k: v for k, v in state_dict.items() if k not in drop}
