"""GMPO: Geometric-Mean Policy Optimization (Zhao et al. 2025, arXiv 2507.20673).

A policy loss (`algorithm.policy_loss: geo_mean`, verl's name), composable with any advantage
that is constant over a sequence (GRPO's, RLOO's, ...). GRPO maximises the arithmetic mean of
token ratios; GMPO the geometric mean, which an outlier token ratio moves far less. Clipping is
per token, in log space, on the side that limits the update for the advantage's sign:

    d_it   = l_it - l_old_it
    d'_it  = sgn(A) * min( sgn(A) d_it, sgn(A) clip(d_it, -eps_low, eps_high) )
    rho_i  = exp( (1/|y_i|) sum_t d'_it )          (geometric mean of the clipped token ratios)
    A_i    = (1/|y_i|) sum_t A_it
    L      = (1/N) sum_i  -A_i rho_i                 N = sequences of the minibatch

Follows verl `compute_policy_loss_geo_mean` (core_algos.py, from the authors' code): no clamp of
d before exp, the loss a mean over sequences (`algorithm.loss_agg` is not read). Defaults
eps_low = eps_high = 0.4 in log space, the paper's (e^-0.4, e^0.4) and verl's GMPO example;
they are this loss's own options, since the algorithm's 0.2 is a ratio range, not a log range.
Choices: the mean over sequences uses the minibatch's global sequence count (verl takes the
micro-batch mean, which equals it with one micro-batch and one process), and |y_i| is clamped
to >= 1 where verl adds 1e-8 (a relative 1e-8 difference, below float32 precision). Metrics:
clip_frac_high / clip_frac_low, tokens whose log-ratio left the range with A > 0 / A < 0.
`rollout.is_correction: token_tis` (which weights the advantages) is refused: A_i is a sequence mean here
(verl weights the sequence loss by the geometric mean of the token weights).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from rlvr.losses import masked_mean, masked_sum

from .policy_losses import PolicyLoss, register_policy_loss


class GMPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_low: float = Field(0.4, ge=0, description="log-ratio clipped below at -clip_low (paper: 0.4)")
    clip_high: float = Field(0.4, ge=0, description="log-ratio clipped above at clip_high (paper: 0.4)")


@register_policy_loss("geo_mean")
class GMPOLoss(PolicyLoss):
    Options = GMPOOptions

    def __call__(self, logprob, old_logprob, advantages, mask, agg_kw):
        o = self.options
        delta = torch.where(
            mask.bool(), logprob - old_logprob, 0.0
        )  # [B, T], padding: 0 (garbage never reaches a gradient)
        sgn = torch.sign(advantages)
        clamped = delta.clamp(-o.clip_low, o.clip_high)
        d = sgn * torch.minimum(sgn * delta, sgn * clamped)  # [B, T]
        lengths = mask.sum(-1).clamp(min=1)  # [B]
        rho = (masked_sum(d, mask, dim=-1) / lengths).exp()  # [B]
        adv = masked_sum(advantages, mask, dim=-1) / lengths  # [B]
        seqs = agg_kw.get("global_seqs")
        n = float(len(rho)) if seqs is None else float(seqs)
        loss = (-adv * rho).sum() / n if n else rho.sum() * 0.0
        with torch.no_grad():
            out = delta.detach() != clamped.detach()
            metrics = {
                "clip_frac_high": masked_mean((out & (advantages > 0)).float(), mask),
                "clip_frac_low": masked_mean((out & (advantages < 0)).float(), mask),
                "approx_kl": masked_mean(-delta.detach(), mask),
            }
        return loss, metrics
