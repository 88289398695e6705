"""CISPO: Clipped IS-weight Policy Optimization (MiniMax-M1, MiniMax 2025, arXiv 2506.13585).

A policy loss (`algorithm.policy_loss: cispo`), composable with any advantage. Instead of
clipping the update (PPO drops the gradient of a token whose ratio left the trust region), CISPO
clips the importance-sampling weight and detaches it, so every token keeps a REINFORCE-style
gradient:

    r_it = exp(l_it - l_old_it)          (log-ratio clamped to +-20, as verl)
    L    = agg_t( -sg[ clip(r_it, 1 - eps_low, 1 + eps_high) ] * A_it * l_it )

gradient -sg[clip(r)] A grad l. Follows verl `compute_policy_loss_cispo` (core_algos.py),
aggregated by `algorithm.loss_agg` (the paper normalises over all tokens of the batch, DAPO's
`token-mean`: recipes/tiny/cispo.yaml sets it). Choices: the clip is this loss's own option;
the paper puts no lower bound on the weight, so `clip_low: null` (the default) clamps only above
(verl's example sets clip_ratio_low=10, the same thing for positive ratios); clip_high 0.2 as
verl's example (the paper tunes it and does not state it). Metric clip_frac: tokens whose weight
was clipped.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from rlvr.losses import agg_loss, masked_mean

from .policy_losses import PolicyLoss, register_policy_loss

_LOG_RATIO_CLAMP = 20.0


class CISPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_low: float | None = Field(None, ge=0, description="weight clipped below at 1 - clip_low; null = no bound")
    clip_high: float = Field(0.2, ge=0, description="weight clipped above at 1 + clip_high")


@register_policy_loss("cispo")
class CISPOLoss(PolicyLoss):
    Options = CISPOOptions
    reads = frozenset({"loss_agg"})
    token_weights_exact = True  # linear in A_it

    def __call__(self, logprob, old_logprob, advantages, mask, agg_kw):
        o = self.options
        log_ratio = torch.where(mask.bool(), logprob - old_logprob, 0.0).clamp(
            -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP
        )  # [B, T]
        ratio = log_ratio.exp()
        low = None if o.clip_low is None else 1.0 - o.clip_low
        weight = ratio.clamp(min=low, max=1.0 + o.clip_high).detach()  # [B, T], no gradient
        loss = -weight * advantages * logprob  # [B, T]
        with torch.no_grad():
            metrics = {
                "clip_frac": masked_mean((ratio != weight).float(), mask),
                "approx_kl": masked_mean(-log_ratio.detach(), mask),
            }
        return agg_loss(loss, mask, self.algo.loss_agg, **agg_kw), metrics
