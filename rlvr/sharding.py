"""The engine a run asked for is the engine it runs, and its processes train one model, not copies.

Two ways a multi-process run goes wrong without a word from accelerate:
- it drops the engine the config asked for: with ACCELERATE_USE_CPU=1 an FSDP or DeepSpeed config
  becomes plain DDP (MULTI_CPU); a config run where accelerate cannot place it becomes NO;
- its processes never sync: several processes (WORLD_SIZE > 1) where accelerate runs one each (no
  process group), or a group with engine NO (no gradient all-reduce): each trains its own copy.

`check_engine` (when the accelerator is made) refuses both with one line naming what happened.
`ReplicaCheck` (after the first optimizer step) compares a checksum of the trained weights across
processes for the engines that keep a full replica on each (DDP and NO): different weights mean the
processes are not synced, whatever the cause; one all-gather of two float64 per process, once.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from rlvr import fsdp, zero
from rlvr.errors import RunError

REQUESTED = {"DEEPSPEED": "ACCELERATE_USE_DEEPSPEED", "FSDP": "ACCELERATE_USE_FSDP"}  # what accelerate launch sets
REPLICATED = ("NO", "MULTI_CPU", "MULTI_GPU", "MULTI_XPU", "MULTI_NPU", "MULTI_MLU", "MULTI_MUSA", "MULTI_HPU")
TOLERANCE = 1e-10  # relative; replicas of DDP are bitwise equal, unsynced copies differ after one step by ~lr


_UNWRAPPED: "weakref.WeakKeyDictionary[torch.nn.Module, weakref.ref]" = weakref.WeakKeyDictionary()


def unwrap(acc: Any, model: torch.nn.Module) -> torch.nn.Module:
    """`acc.unwrap_model(model)`, remembered per model: accelerate reads package metadata on every call
    (is_deepspeed_available: ~4 ms, three times a training step before this)."""
    ref = _UNWRAPPED.get(model)
    inner = ref() if ref is not None else None
    if inner is None:
        inner = acc.unwrap_model(model)
        _UNWRAPPED[model] = weakref.ref(inner)
    return inner


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("true", "1", "yes")


def requested_engine() -> str | None:
    """The sharding engine the launcher was asked for (its config's distributed_type), or None."""
    for engine, var in REQUESTED.items():
        if _flag(var):
            return engine
    return None


def engine_name(acc: Any) -> str:
    return str(acc.distributed_type).rsplit(".", 1)[-1]


def check_launch(world_env: int) -> None:
    """Before accelerate starts: WORLD_SIZE > 1 in a process no launcher started (no LOCAL_RANK) joins no
    process group; it would train alone, or fail inside accelerate with a traceback."""
    if world_env > 1 and "LOCAL_RANK" not in os.environ:
        raise RunError(
            f"WORLD_SIZE={world_env} but this process was not started by a launcher (LOCAL_RANK is not set): it "
            "would join no process group and train its own copy; use `accelerate launch` (or `rlvr launch`), "
            "or unset WORLD_SIZE for one process"
        )


def check_engine(acc: Any, world_env: int | None = None) -> None:
    """Refuse a run whose processes would not train one model the way the launcher asked (module docstring)."""
    world_env = int(os.environ.get("WORLD_SIZE", "1")) if world_env is None else world_env
    got, n = engine_name(acc), acc.num_processes
    if world_env > 1 and n != world_env:
        raise RunError(
            f"WORLD_SIZE={world_env} but accelerate runs {n} process(es) here (no process group among them): "
            "each would train its own copy; start the processes with `accelerate launch` (or `rlvr launch`)"
        )
    want = requested_engine()
    if want is not None and got != want:
        why = (
            "ACCELERATE_USE_CPU=1 makes accelerate drop it for plain DDP; unset it"
            if _flag("ACCELERATE_USE_CPU")
            else f"accelerate could not place it on {n} process(es)"
        )
        raise RunError(
            f"the accelerate config asks for {want} but accelerate runs {got} ({why}); "
            f"rlvr does not train without the sharding it was asked for"
        )
    if n > 1 and got == "NO":
        raise RunError(
            f"accelerate runs {n} processes with distributed_type NO (no gradient sync: each would train its own "
            "copy); on a CPU-only machine launch DDP with ACCELERATE_USE_CPU=1, or use a DeepSpeed/FSDP config"
        )


def checksum(models: list[torch.nn.Module], device: Any = "cpu") -> torch.Tensor:
    """[sum, sum of squares] of every parameter of `models` in float64, on `device` (the collective's: nccl
    takes CUDA tensors only): equal on replicas that are in sync."""
    s = torch.zeros(2, dtype=torch.float64, device=device)
    for m in models:
        for p in m.parameters():
            t = p.detach().double()
            s += torch.stack([t.sum(), t.square().sum()]).to(device)
    return s


def replicas_agree(local: torch.Tensor, world: int) -> tuple[bool, list[list[float]]]:
    """Gather each process's checksum; whether all agree within TOLERANCE, and the values (one row per rank)."""
    out = torch.empty(world * local.numel(), dtype=torch.float64, device=local.device)
    gather = getattr(torch.distributed, "all_gather_single", None) or torch.distributed.all_gather_into_tensor
    gather(out, local.contiguous())  # older torch: all_gather_into_tensor
    rows = out.view(world, -1).cpu()
    scale = rows.abs().max(0).values.clamp_min(1.0)
    ok = bool(((rows - rows[0]).abs() <= TOLERANCE * scale).all())
    return ok, rows.tolist()


class ReplicaCheck:
    """After the first optimizer step (of the run, or of a resumed run): the trained weights agree on every
    process, for engines that replicate them; RunError naming the checksums if not."""

    def __init__(self, acc: Any):
        self.done = acc.num_processes < 2 or engine_name(acc) not in REPLICATED
        self.world, self.device = acc.num_processes, acc.device

    def __call__(self, models: list[torch.nn.Module], step: int) -> None:
        if self.done:
            return
        self.done = True
        ok, rows = replicas_agree(checksum(models, self.device), self.world)
        if not ok:
            sums = ", ".join(f"rank {r}: {v[0]:.10g}" for r, v in enumerate(rows))
            raise RunError(
                f"step {step}: the {self.world} processes hold different weights after the first optimizer step "
                f"(parameter sums {sums}): they are not synced (two independent runs?); the run stops here"
            )


@contextlib.contextmanager
def full_params(acc: Any, model: torch.nn.Module) -> Iterator[None]:
    """Inside: `model`'s parameters whole on this process, gathered once (generation, eval), whatever the
    engine; every process enters together. FSDP2: rlvr.fsdp.full_params; ZeRO-3: rlvr.zero.generation;
    others hold them whole already."""
    if fsdp.is_fsdp(acc):
        with fsdp.full_params(acc.unwrap_model(model)):
            yield
    else:
        with zero.generation(model, acc):
            yield
