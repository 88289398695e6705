"""KL-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning
Language Models", arXiv 2505.22617).

A policy loss (`algorithm.policy_loss: kl_cov`), composable with any advantage. Where Clip-Cov
cuts the gradient of high-covariance tokens, KL-Cov puts a KL penalty on them; no token is
ratio-clipped:

    cov_it = (A_it - mean(A)) * (l_it - mean(l))          means over the micro-batch's tokens
    L_it   = -A_it r_it + coef * |l_it - l_old_it|   for the top max(int(ratio * n_tokens), 1)
                                                     tokens by cov_it
    L_it   = -A_it r_it                              for every other token

aggregated by `algorithm.loss_agg`. Follows verl `compute_policy_loss_kl_cov` (core_algos.py,
from the authors' code): defaults ratio 2e-4, coef 1 (verl `ppo_kl_coef`); the ratio is not
clipped, so the algorithm's clip_low / clip_high / clip_c are not read (set away from their
defaults they are refused). As in verl the covariance is over one micro-batch (so the top-k depends
on train.micro_batch_size). Choice: log-ratio clamped to +-20 before exp (verl does not clamp
here); equal short of exp(20). Metric kl_cov_abs_kl: mean |l - l_old| over all tokens.
`rollout.is_correction: token_tis` (which weights the advantages) is refused: it would move the covariances
and leave the penalty unweighted (verl weights the whole token loss).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from rlvr.losses import agg_loss, masked_mean

from .clip_cov import token_covariance
from .policy_losses import PolicyLoss, register_policy_loss

_LOG_RATIO_CLAMP = 20.0


class KLCovOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ratio: float = Field(2e-4, gt=0, le=1, description="fraction of tokens (top covariance) given the KL penalty")
    coef: float = Field(1.0, ge=0, description="weight of |log-ratio| on those tokens (verl ppo_kl_coef)")


@register_policy_loss("kl_cov")
class KLCovLoss(PolicyLoss):
    Options = KLCovOptions
    reads = frozenset({"loss_agg"})

    def __call__(self, logprob, old_logprob, advantages, mask, agg_kw):
        o = self.options
        delta = torch.where(
            mask.bool(), logprob - old_logprob, 0.0
        )  # [B, T], padding: 0 (garbage never reaches a gradient)
        ratio = delta.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP).exp()
        loss = -advantages * ratio  # [B, T]
        valid = mask.bool()
        n_valid = int(valid.sum())
        penalised = torch.zeros_like(valid)
        if n_valid:
            cov = token_covariance(advantages, logprob, mask)[valid]  # [n_valid], row-major order
            top = torch.topk(cov, max(1, int(n_valid * o.ratio))).indices
            flat = valid.flatten().nonzero().squeeze(-1)[top]  # positions in the flattened [B*T]
            penalised = penalised.flatten().index_fill(0, flat, True).view_as(valid)
            loss = torch.where(penalised, loss + o.coef * delta.abs(), loss)
        with torch.no_grad():
            metrics = {
                "kl_cov_frac": masked_mean(penalised.float(), mask),
                "kl_cov_abs_kl": masked_mean(delta.detach().abs(), mask),
                "approx_kl": masked_mean(-delta.detach(), mask),
            }
        return agg_loss(loss, mask, self.algo.loss_agg, **agg_kw), metrics
