"""The training forward with each prompt run once (`train.shared_prompt_forward`).

A step's batch holds rollout.n responses to each prompt, so the plain forward (`models.response_logprobs`)
runs every prompt n times. Here the distinct prompts of a (micro-)batch run once, with the KV cache kept
(and with grad when the caller differentiates: the cache is an ordinary tensor of the graph), the cache's rows
are gathered to the batch's rows (`DynamicCache.batch_select_indices`, a differentiable index), and the
responses run on it. The last prompt position's logits (prompts are left-padded: it is a real token) give the
first response token's log-prob, the response positions the rest. Mathematically it is the plain forward:
the prompt positions never attend to the response, and the response's queries see the same keys and values;
the numbers differ in float rounding only (tests/test_fused.py: equal log-probs and gradients to float
tolerance, GRPO and PPO). On the tiny recipe (prompts of 18 tokens, responses of ~5) a 128-row micro-batch
is 32 x 18 + 128 x 5 positions instead of 128 x 23 (bench/trl_step.py).

The plain forward is used where this one does not apply or cannot help: no prompt repeated in the batch,
gradient checkpointing (which turns the cache off in training), and DeepSpeed ZeRO-3 or FSDP (they gather
sharded parameters per forward call; not tested with two calls per backward). Under DDP and ZeRO-1/2 the
prompt pass goes through the unwrapped module (one wrapper forward per backward; the gradients of both
passes meet in the same parameters' accumulators, which the wrapper's hooks see once), so DDP and ZeRO-2
make the same update (tests/test_deepspeed.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rlvr import fsdp, sharding, zero
from rlvr.batch import RolloutBatch
from rlvr.losses import entropy_from_logits, logprobs_from_logits
from rlvr.models import position_ids, response_logprobs

if TYPE_CHECKING:
    from rlvr.trainer import Trainer


def shared_prompt_logprobs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    prefill_model: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """`response_logprobs(model, batch)` with each distinct prompt run once ([B, R] log-probs, entropy if
    asked); None when no prompt repeats (nothing to share). `prefill_model` runs the prompts (default
    `model`: the same module unwrapped from DDP)."""
    P, R = batch.prompt_len, batch.response_mask.shape[1]
    ids, att = batch.input_ids, batch.attention_mask
    if P == 0 or R == 0:
        return None
    prompts, inverse = torch.unique(torch.cat([ids[:, :P], att[:, :P]], 1), dim=0, return_inverse=True)
    if prompts.shape[0] == len(batch):
        return None
    p_ids, p_att = prompts[:, :P], prompts[:, P:]
    pre = (prefill_model or model)(
        input_ids=p_ids, attention_mask=p_att, position_ids=position_ids(p_att), use_cache=True, logits_to_keep=1
    )
    cache = pre.past_key_values
    if not hasattr(cache, "batch_select_indices"):  # a cache type that cannot be gathered by row: the plain forward
        return None
    cache.batch_select_indices(inverse)  # [U, ...] -> [B, ...]
    out = model(
        input_ids=ids[:, P:],
        attention_mask=att,
        position_ids=position_ids(att)[:, P:],
        past_key_values=cache,
        use_cache=True,
    )
    logits = torch.cat([pre.logits[:, -1:][inverse], out.logits[:, : R - 1]], 1).float()  # [B, R, V]
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logprobs = logprobs_from_logits(logits, batch.response_ids)
    return logprobs, (entropy_from_logits(logits) if with_entropy else None)


def applies(trainer: "Trainer") -> bool:
    """Whether this run's training forward may share prompts (module docstring)."""
    acc = trainer.accelerator
    return (
        trainer.cfg.train.shared_prompt_forward
        and not trainer.cfg.model.gradient_checkpointing
        and zero.stage(acc) < 3
        and not fsdp.is_fsdp(acc)
    )


def logprobs(
    trainer: "Trainer", model: torch.nn.Module, batch: RolloutBatch, *, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The trainer's response log-probs (and entropy) of `model` at the sampling temperature: shared prompts
    where that applies, else the plain forward."""
    T = trainer.cfg.rollout.temperature
    if applies(trainer):
        got = shared_prompt_logprobs(
            model,
            batch,
            temperature=T,
            with_entropy=with_entropy,
            prefill_model=sharding.unwrap(trainer.accelerator, model),
        )
        if got is not None:
            return got
    return response_logprobs(model, batch, temperature=T, with_entropy=with_entropy)
