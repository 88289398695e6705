"""Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning
Language Models", arXiv 2505.22617).

A policy loss (`algorithm.policy_loss: clip_cov`), composable with any advantage. The paper finds
that entropy falls where the covariance between a token's log-prob and its advantage is large,
and protects entropy by removing the gradient of a few such tokens:

    cov_it  = (A_it - mean(A)) * (l_it - mean(l))          means over the micro-batch's tokens
    L_it    = max(-A_it r_it, -A_it clip(r_it, 1 - eps_low, 1 + eps_high))   (PPO, no dual clip)
    among the tokens the PPO clip left alone with lb < cov_it < ub, pick
    max(int(ratio * n_tokens), 1) uniformly at random and multiply their L_it by 0 (no gradient).

aggregated by `algorithm.loss_agg`. Follows verl `compute_policy_loss_clip_cov` (core_algos.py,
from the authors' code): defaults ratio 2e-4, lb 1, ub 5; it reads the algorithm's clip_low /
clip_high but no dual clip (algorithm.clip_c set away from its default is refused). As in verl,
the covariance statistics and the random draw are over one micro-batch (so they depend on
train.micro_batch_size; the global torch RNG, seeded by the run, draws). Choice: the log-ratio
is clamped to +-20 before exp as everywhere else here (verl does not clamp this one); equal for
any ratio short of exp(20). Metric clip_cov_frac: the fraction of tokens whose gradient was cut.
`rollout.is_correction: token_tis` (which weights the advantages) is refused: it would move the covariances.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from rlvr.losses import agg_loss, masked_mean

from .policy_losses import PolicyLoss, register_policy_loss

_LOG_RATIO_CLAMP = 20.0


class ClipCovOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ratio: float = Field(2e-4, gt=0, le=1, description="fraction of tokens whose gradient is cut (at least 1)")
    lb: float = Field(1.0, description="candidates have covariance above lb")
    ub: float = Field(5.0, description="candidates have covariance below ub")


def token_covariance(advantages: torch.Tensor, logprob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(A - mean A) * (l - mean l) per token, means over the masked tokens, no gradient. [B, T]"""
    a, lp = advantages.detach(), logprob.detach()
    return (a - masked_mean(a, mask)) * (lp - masked_mean(lp, mask))


@register_policy_loss("clip_cov")
class ClipCovLoss(PolicyLoss):
    Options = ClipCovOptions
    reads = frozenset({"clip_low", "clip_high", "loss_agg"})

    def __call__(self, logprob, old_logprob, advantages, mask, agg_kw):
        o, c = self.options, self.algo
        valid = mask.bool()
        log_ratio = torch.where(valid, logprob - old_logprob, 0.0).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # [B, T]
        ratio = log_ratio.exp()
        loss1 = -advantages * ratio
        loss2 = -advantages * ratio.clamp(1.0 - c.clip_low, 1.0 + c.clip_high)
        clipped_by_ppo = (loss2 > loss1) & valid
        cov = token_covariance(advantages, logprob, mask)  # [B, T]
        candidates = valid & ~clipped_by_ppo & (cov > o.lb) & (cov < o.ub)
        idx = candidates.nonzero()  # [n, 2]
        n_cut = max(int(o.ratio * float(mask.sum())), 1)
        if len(idx) > n_cut:
            idx = idx[torch.randperm(len(idx), device=idx.device)[:n_cut]]
        keep = torch.ones_like(loss1)
        keep[idx[:, 0], idx[:, 1]] = 0.0
        loss = torch.maximum(loss1, loss2) * keep  # [B, T]
        with torch.no_grad():
            metrics = {
                "clip_frac": masked_mean(clipped_by_ppo.float(), mask),
                "clip_cov_frac": masked_mean((keep == 0).float(), mask),
                "approx_kl": masked_mean(-log_ratio.detach(), mask),
            }
        return agg_loss(loss, mask, c.loss_agg, **agg_kw), metrics
