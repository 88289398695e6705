"""Old log-probs from the update's own forward where the minibatch is on-policy (`train.fused_old_logprobs`).

Before the step's first optimizer step the policy is the one that produced the batch, so the first minibatch's
old log-probs are the policy's current log-probs: the update's forward on that minibatch computes them anyway,
and its detached output serves as `old_logprobs` (the ratio is exactly 1 there, as in verl and TRL when a
minibatch is on-policy). Only the later minibatches, trained after an optimizer step, need the separate no-grad
pass, which then covers B - B/M rows instead of B. The update writes the filled rows back into the batch, so
later epochs (train.epochs > 1) see the same old log-probs as with the full pass.

The two differ only in float rounding: the old pass runs in eval mode over `train.micro_batch_size` chunks of
the batch in its order, the update in train mode over chunks of the shuffled minibatch; with dropout off both
modes compute the same function (tests/test_fused.py: equal loss and gradients to float tolerance).

The full pass is kept wherever something reads old log-probs before the update or the two modes differ:
`train.fused_old_logprobs: false`; the algorithm's `old_logprobs_before_update` (the KL in the reward, as PPO's
default; a plugin reading them in after_logprobs/compute_advantages/prepare must say so); the vLLM engine's
rollout log-probs (mismatch metrics, rollout.is_correction); `model.dropout: keep` (train-mode forward is not
the eval-mode one). Until the update fills them, the skipped rows hold NaN, so a reader that should have
asked for the full pass gets non-finite numbers (the trainer's guard stops such steps), never plausible ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rlvr.batch import RolloutBatch

if TYPE_CHECKING:
    from rlvr.trainer import Trainer


def can_fuse(trainer: "Trainer", batch: RolloutBatch) -> bool:
    """Whether the first minibatch's old log-probs may come from the update's own forward this step."""
    cfg = trainer.cfg
    return (
        cfg.train.fused_old_logprobs
        and cfg.model.dropout == "off"
        and cfg.rollout.is_correction == "none"
        and batch.rollout_logprobs is None
        and not trainer.algorithm.old_logprobs_before_update
    )


def old_logprobs(trainer: "Trainer", batch: RolloutBatch, skip: torch.Tensor | None) -> torch.Tensor:
    """Old log-probs [B, R] of the policy; rows `skip` (the first minibatch, filled by the update) left NaN."""
    if skip is None:
        return trainer.logprobs(trainer.policy, batch)
    keep = torch.ones(len(batch), dtype=torch.bool)
    keep[skip] = False
    rest = keep.nonzero().squeeze(1)
    out = torch.full(batch.response_mask.shape, float("nan"), device=batch.response_mask.device)
    if len(rest):
        lp = trainer.logprobs(trainer.policy, batch.select(rest))
        out = out.to(lp.dtype)
        out[rest.to(out.device)] = lp
    return out
