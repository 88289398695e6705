"""OPO: On-Policy RL with Optimal reward baseline (Hao et al. 2025, arXiv 2505.23585).

An advantage estimator (`algorithm.name: opo`). The baseline that minimises the gradient
variance, under the paper's approximation that a response's squared gradient norm grows with
its length, is the length-weighted mean reward of the group:

    b_g = sum_{j in g} |y_j| R_j / sum_{j in g} |y_j|,      A_i = R_i - b_g

broadcast to every response token, not normalised. Follows verl `compute_opo_outcome_advantage`
(a group of one response gets baseline 0, so A = R). The paper trains exactly on-policy (one
gradient step per batch, so the PPO ratio is 1 and the default `ppo` loss is the plain policy
gradient): recipes/tiny/opo.yaml sets train.minibatches: 1. No KL, no entropy bonus, by default.
"""

from __future__ import annotations

import torch

from rlvr.batch import RolloutBatch

from .base import Algorithm, AlgorithmConfig, register_algorithm


def length_weighted_baseline(rewards: torch.Tensor, lengths: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per sample [B]: its group's sum |y| R / sum |y|; 0 for a group of one (verl)."""
    ids, inv = torch.unique(group, return_inverse=True)
    r, n = rewards.double(), lengths.double()
    num = torch.zeros(len(ids), dtype=torch.float64, device=r.device).index_add_(0, inv, n * r)
    den = torch.zeros(len(ids), dtype=torch.float64, device=r.device).index_add_(0, inv, n)
    size = torch.bincount(inv, minlength=len(ids))
    b = torch.where((size > 1) & (den > 0), num / den.clamp(min=1e-30), 0.0)  # [G]
    return b[inv].to(rewards.dtype)


@register_algorithm("opo")
class OPO(Algorithm):
    Config = AlgorithmConfig

    def min_group_size(self) -> int:
        return 2

    def compute_advantages(self, batch: RolloutBatch) -> None:
        R = self.sequence_rewards(batch)  # [B]
        b = length_weighted_baseline(R, batch.response_mask.sum(-1), batch.group)
        batch.advantages = (R - b)[:, None] * batch.response_mask  # [B, R]
