"""The rollout/training mismatch: how far the rollout engine's log-probs of the sampled tokens
(`RolloutBatch.rollout_logprobs`, vLLM's) are from the trainer's recomputation (`old_logprobs`),
and the truncated importance-sampling correction for it.

Both should be log pi(token) under the same weights; kernels, precision and batching make them
differ (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training").
With `top_p` < 1 or `top_k` > 0 the engine reports the log-probs of the distribution it sampled
from (truncated and renormalised) while the trainer's are of the full softmax at the temperature:
the gap then also holds that renormalisation, which is part of the off-policyness being measured.

`rollout_mismatch` gives the per-token gap, mean and max over every process's response tokens;
the trainer logs it every step when the batch has rollout log-probs (`Trainer.logprob_pass`).

`apply_is_correction` is the truncated importance-sampling correction (TIS; verl's "rollout
correction", `algorithm.rollout_correction.rollout_is: token` with `rollout_is_threshold: 2.0`,
decoupled mode). Per response token

    w_t = min(exp(old_logprob_t - rollout_logprob_t), C)        C = rollout.is_cap (default 2.0)

with the log-ratio first bounded to +-20 (verl's safety bound, so exp cannot overflow), no gradient
(both log-probs are no-grad tensors of the step), 0 on padding. The policy-gradient loss of every
token is to be multiplied by w_t; KL and entropy terms, and PPO's value loss, are not.

How: the trainer calls it once after the algorithm's `compute_advantages` and multiplies the
per-token advantages [B, R] by w. That is algorithm-independent and exact for every loss whose
policy-gradient term is positively homogeneous in the token's advantage, f(w A) = w f(A) for w > 0,
which the shared PPO-clipped loss (`clipped_pg_loss`, used by every built-in algorithm) is:

    max(-wA r, -wA clip(r)) = w max(-A r, -A clip(r))        (w > 0)
    dual clip: wA < 0 exactly when A < 0, and min(w L, -wA c) = w min(L, -A c)

and w >= exp(-20) > 0 on every response token, so the equality holds token by token; the clip
fractions keep their values too (a positive factor preserves the comparisons). The KL-in-loss and
entropy terms never read the advantages, so they stay unweighted; PPO's value loss regresses on
`batch.returns` (GAE + old values, computed before the scaling), so the critic's targets are not
scaled. A KL in the reward (`kl_in: reward`) is inside the advantage and is weighted with it, as
it is in verl. An algorithm of one's own whose loss is not positively homogeneous in the advantage
(e.g. one that reads sign-only or thresholds |A|) would not get an exact per-token weighting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from rlvr.batch import RolloutBatch
from rlvr.errors import RunError
from rlvr.losses import all_reduce_sum

if TYPE_CHECKING:
    from rlvr.config import RolloutConfig

_LOG_RATIO_BOUND = 20.0  # verl's safety bound on the log importance ratio


def _global_max(x: torch.Tensor) -> float:
    mx = x.max().double().cpu() if x.numel() else torch.tensor(0.0, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        mx = mx.clone()
        dist.all_reduce(mx, op=dist.ReduceOp.MAX)
    return float(mx)


def rollout_mismatch(batch: RolloutBatch) -> dict[str, float]:
    """{'rollout/logprob_gap_mean', 'rollout/logprob_gap_max'} over response tokens, all processes;
    {} when the engine keeps no log-probs (hf) or they are not computed yet."""
    if batch.rollout_logprobs is None or batch.old_logprobs is None:
        return {}
    mask = batch.response_mask.bool()
    gap = (batch.rollout_logprobs.float() - batch.old_logprobs.float()).abs()[mask].double()
    s = all_reduce_sum(torch.stack([gap.sum(), torch.tensor(float(gap.numel()), dtype=torch.float64)]).cpu())
    return {"rollout/logprob_gap_mean": float(s[0] / s[1].clamp_min(1)), "rollout/logprob_gap_max": _global_max(gap)}


def token_tis_weights(
    old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """w = min(exp(clamp(old - rollout, +-20)), cap) per token [B, R], 0 where mask is 0, no grad."""
    with torch.no_grad():
        log_ratio = (old_logprobs.float() - rollout_logprobs.float()).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
        w = log_ratio.exp().clamp(max=cap)
        return torch.where(mask.bool(), w, torch.zeros((), dtype=w.dtype, device=w.device))


def apply_is_correction(batch: RolloutBatch, rollout: "RolloutConfig") -> None:
    """`rollout.is_correction`: none leaves the batch alone; token_tis multiplies
    `batch.advantages` [B, R] by the TIS weights (module docstring: why this equals weighting each
    token's policy-gradient loss) and adds the weights' statistics over all processes to
    `batch.metrics`: rollout/is_weight_mean and rollout/is_weight_max (after the cap) and
    rollout/is_capped_frac (the fraction of response tokens whose ratio exceeded the cap).
    Call after `compute_advantages`, every process together (a collective)."""
    if rollout.is_correction == "none":
        return
    if batch.rollout_logprobs is None:
        raise RunError(
            f"rollout.is_correction={rollout.is_correction} needs the rollout engine's log-probs of the sampled "
            f"tokens, and engine {rollout.engine!r} gave none; use rollout.engine=vllm or rollout.is_correction=none"
        )
    if batch.old_logprobs is None or batch.advantages is None:
        raise ValueError("apply_is_correction: call it after the log-prob pass and compute_advantages")
    mask = batch.response_mask
    w = token_tis_weights(batch.old_logprobs, batch.rollout_logprobs, mask, rollout.is_cap)
    batch.advantages = batch.advantages * w.to(batch.advantages.dtype)
    with torch.no_grad():
        m = mask.bool()
        raw = (batch.old_logprobs.float() - batch.rollout_logprobs.float())[m]
        capped = (raw.clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND).exp() > rollout.is_cap).double()
        ws = w[m].double()
        s = all_reduce_sum(torch.stack([ws.sum(), capped.sum(), torch.tensor(float(ws.numel()), dtype=torch.float64)]))
    n = s[2].clamp_min(1)
    batch.metrics.update(
        {
            "rollout/is_weight_mean": float(s[0] / n),
            "rollout/is_weight_max": _global_max(ws),
            "rollout/is_capped_frac": float(s[1] / n),
        }
    )
