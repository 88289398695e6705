"""GPG: Group Policy Gradient (Chu et al. 2025, AMAP, "GPG: A Simple and Strong Reinforcement
Learning Baseline for Model Reasoning", arXiv 2504.02546).

Two pieces, both registered under verl's names:

- the policy loss `gpg` (`algorithm.policy_loss: gpg`, composable with any advantage): plain
  REINFORCE on the current log-probs, no ratio, no clip (the paper optimises the original
  objective, no surrogate):      L = agg_t( -A_it * l_it )       (verl `compute_policy_loss_gpg`)
- the algorithm `gpg` (`algorithm.name: gpg`): the advantage

      A_i = alpha * (R_i - mean_g(R)) / F_norm,   F_norm = 1

  broadcast to the response tokens, with the loss `gpg` and `token-mean` aggregation by default.
  alpha rescales the batch so that groups without signal do not dilute the gradient:
    `alpha: valid` (default, the paper's): alpha = B / (B - M), M the samples in groups whose
        rewards are all equal, B and M over the global batch;
    `alpha: nonzero` (verl `compute_gpg_outcome_advantage`): alpha = B / max(#{R_i != 0}, 1),
        which equals the paper's only in special cases (with 0/1 rewards it counts correct
        samples, not samples of informative groups).
  No KL and no reference model by default, as the paper. The group mean is over the group
  (rollout.n >= 2 is required, where verl gives a group of one mean 0 and std 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from rlvr.advantages import group_mean_std
from rlvr.batch import RolloutBatch
from rlvr.losses import agg_loss, all_reduce_sum

from .base import AggMode, Algorithm, AlgorithmConfig, register_algorithm
from .policy_losses import PolicyLoss, register_policy_loss


@register_policy_loss("gpg")
class GPGLoss(PolicyLoss):
    reads = frozenset({"loss_agg"})
    token_weights_exact = True  # linear in A_it

    def __call__(self, logprob, old_logprob, advantages, mask, agg_kw):
        return agg_loss(-advantages * logprob, mask, self.algo.loss_agg, **agg_kw), {}


class GPGConfig(AlgorithmConfig):
    policy_loss: str | dict = Field("gpg", description="policy loss (GPG: plain REINFORCE, `gpg`)")
    loss_agg: AggMode = Field("token-mean", description="loss aggregation (GPG: token-mean)")
    alpha: Literal["valid", "nonzero"] = Field(
        "valid", description="batch rescaling: B/(B - M) over groups with signal (paper) or B/#nonzero rewards (verl)"
    )


@register_algorithm("gpg")
class GPG(Algorithm):
    Config = GPGConfig

    def min_group_size(self) -> int:
        return 2

    def compute_advantages(self, batch: RolloutBatch) -> None:
        R = self.sequence_rewards(batch)  # [B]
        mean, _ = group_mean_std(R, batch.group)
        if self.config.alpha == "valid":
            _, inv = torch.unique(batch.group, return_inverse=True)
            hi = torch.full((int(inv.max()) + 1,), -torch.inf, dtype=R.dtype, device=R.device)
            lo = torch.full_like(hi, torch.inf)
            hi, lo = hi.scatter_reduce(0, inv, R, "amax"), lo.scatter_reduce(0, inv, R, "amin")
            counted = (hi == lo)[inv].to(torch.float64)  # [B], samples of groups whose rewards are all equal (M)
        else:
            counted = (R != 0).to(torch.float64)  # [B], nonzero rewards
        s = all_reduce_sum(torch.stack([torch.tensor(float(len(R)), dtype=torch.float64), counted.sum().cpu()]))
        B, n = float(s[0]), float(s[1])
        alpha = B / max(B - n, 1.0) if self.config.alpha == "valid" else B / max(n, 1.0)
        batch.metrics["gpg_alpha"] = alpha
        batch.advantages = (alpha * (R - mean))[:, None] * batch.response_mask  # [B, R]
