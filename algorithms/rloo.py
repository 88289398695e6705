"""RLOO: REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024).

Each response's baseline is the mean reward of the other G-1 responses to the
same prompt:

    A_i = R_i - 1/(G-1) * sum_{j != i} R_j  =  G/(G-1) * (R_i - mean_g(R))

broadcast to every response token, not whitened, trained with the PPO-clipped
loss (one epoch of on-policy data makes it plain REINFORCE).

Choices: a group of one response has no leave-one-out baseline and is an error
(verl's two implementations disagree, giving 0 or R; we refuse: rollout.n = 1 at
config load, a group of one in a batch when computing advantages). With
`kl_in: reward` the sequence reward is R_i - beta * sum_t KL_t, as in the RLOO
paper; the default is no KL (Yue et al.).
"""

from __future__ import annotations

import torch

from rlvr.advantages import group_mean_std
from rlvr.batch import RolloutBatch

from .base import Algorithm, AlgorithmConfig, register_algorithm


@register_algorithm("rloo")
class RLOO(Algorithm):
    Config = AlgorithmConfig

    def min_group_size(self) -> int:
        return 2

    def compute_advantages(self, batch: RolloutBatch) -> None:
        R = self.sequence_rewards(batch)  # [B]: outcome (minus the summed KL when it sits in the reward)
        sizes = torch.bincount(batch.group)[batch.group].to(R.dtype)  # [B] size of each sample's group
        if (sizes < 2).any():
            raise ValueError("rloo: a prompt group holds a single response; the leave-one-out baseline needs >= 2")
        mean, _ = group_mean_std(R, batch.group)
        adv = sizes / (sizes - 1) * (R - mean)  # [B]
        batch.advantages = adv[:, None] * batch.response_mask  # [B, R]
