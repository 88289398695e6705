"""GSPO: Group Sequence Policy Optimization (Zheng et al. 2025, Qwen, arXiv 2507.18071).

A policy loss (`algorithm.policy_loss: gspo`), composable with any advantage. The importance
ratio is the length-normalised sequence ratio, clipped as a whole:

    s_i   = (pi(y_i|x) / pi_old(y_i|x)) ^ (1/|y_i|) = exp( (1/|y_i|) sum_t (l_it - l_old_it) )
    L     = mean_i  (1/|y_i|) sum_t  max( -A_it s_it, -A_it clip(s_it, 1 - eps_low, 1 + eps_high) )

with s_it = sg[s_i] * pi(y_it) / sg[pi(y_it)] (the paper's GSPO-token form; its value is s_i,
its gradient s_i * grad log pi(y_it)), so with a sequence-level advantage the gradient is the
paper's s_i A_i (1/|y_i|) sum_t grad log pi(y_it); a sequence whose clipped term wins gets none.

Follows verl `compute_policy_loss_gspo` (core_algos.py): log s_it clamped above at 10 before
exp, no dual clip, aggregation fixed to `seq-mean-token-mean` whatever `algorithm.loss_agg` says
(the loss refuses a `loss_agg` set away from its algorithm's default, which would do nothing
here). Choices: the clip range is this loss's own option with the paper's values (eps_low 3e-4,
eps_high 4e-4, section 5.1): sequence ratios move far less than token ratios, so the
algorithm-level clip_low / clip_high (0.2, for token ratios) are not read. verl reads the actor's
clip_ratio_low / high and leaves the paper's values to the recipe. Padding never reaches the
sequence mean (masked sum; verl multiplies by the mask, so a non-finite log-prob on padding
would give NaN there).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from rlvr.losses import agg_loss, masked_mean, masked_sum

from .policy_losses import PolicyLoss, register_policy_loss

_LOG_RATIO_MAX = 10.0  # verl's clamp on log s_it


class GSPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_low: float = Field(3e-4, ge=0, description="sequence ratio clipped below at 1 - clip_low (paper: 3e-4)")
    clip_high: float = Field(4e-4, ge=0, description="sequence ratio clipped above at 1 + clip_high (paper: 4e-4)")


@register_policy_loss("gspo")
class GSPOLoss(PolicyLoss):
    Options = GSPOOptions
    token_weights_exact = True  # max of terms linear in A_it: a weight w_it > 0 factors out of token (i, t)

    def __call__(self, logprob, old_logprob, advantages, mask, agg_kw):
        o = self.options
        delta = torch.where(mask.bool(), logprob - old_logprob, 0.0)  # [B, T]
        lengths = mask.sum(-1).clamp(min=1)  # [B]
        seq_log_ratio = masked_sum(delta, mask, dim=-1) / lengths  # [B], log s_i
        log_s = (logprob - logprob.detach() + seq_log_ratio.detach()[:, None]).clamp(max=_LOG_RATIO_MAX)  # [B, T]
        s = log_s.exp()  # [B, T]: value s_i on every token of sequence i
        loss1 = -advantages * s
        loss2 = -advantages * s.clamp(1.0 - o.clip_low, 1.0 + o.clip_high)
        loss = torch.maximum(loss1, loss2)  # [B, T]
        with torch.no_grad():
            metrics = {
                "clip_frac": masked_mean((loss2 > loss1).float(), mask),
                "approx_kl": masked_mean(-delta.detach(), mask),
                "seq_ratio_mean": masked_mean(s.detach(), mask),
            }
        return agg_loss(loss, mask, "seq-mean-token-mean", **agg_kw), metrics
