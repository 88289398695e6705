"""GRPO: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath).

For a prompt group of G responses with scalar rewards R_1..R_G (with `kl_in: reward`,
R_i is the summed token reward R_i - beta * sum_t KL_t, as verl's `apply_kl_penalty`
then `compute_grpo_outcome_advantage`):

    A_i = (R_i - mean_g(R)) / (std_g(R) + eps)      scale = "group" (the paper)
    A_i = (R_i - mean_g(R)) / (std_B(R) + eps)      scale = "batch" (std over the global batch)
    A_i =  R_i - mean_g(R)                           scale = "none"  (Dr. GRPO, Liu et al. 2025)

A_i is broadcast to every response token and trained with the PPO-clipped loss.

Choices (ALGORITHMS.md): std with Bessel's correction; eps = 1e-6 (verl; TRL
uses 1e-4, OpenRLHF 1e-9: set `std_eps`); the loss is aggregated with
`seq-mean-token-mean` as in the GRPO paper (verl's default is `token-mean`;
Dr. GRPO pairs `scale: none` with `seq-mean-token-sum-norm`); no KL by default,
as Yue et al. train (the paper's beta = 0.04 is `kl_coef`, a loss term with k3).
rollout.n = 1 is refused at config load: every centred reward would be 0, whatever
the scale. A group of one inside a batch still gets advantage 0 (no NaN).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from rlvr.advantages import batch_std, group_mean_std
from rlvr.batch import RolloutBatch

from .base import AggMode, Algorithm, AlgorithmConfig, register_algorithm


class GRPOConfig(AlgorithmConfig):
    scale: Literal["group", "batch", "none"] = Field(
        "group", description="divide the centred reward by the group std, the batch std, or nothing (Dr. GRPO)"
    )
    std_eps: float = Field(1e-6, ge=0, description="added to the std before dividing")
    loss_agg: AggMode = Field("seq-mean-token-mean", description="loss aggregation (GRPO paper: seq-mean-token-mean)")


@register_algorithm("grpo")
class GRPO(Algorithm):
    Config = GRPOConfig

    def min_group_size(self) -> int:
        return 2

    def scalar_advantages(self, batch: RolloutBatch) -> torch.Tensor:
        """A_i per sample, [B]."""
        R = self.sequence_rewards(batch)  # [B]: the outcome, minus the summed KL when it sits in the reward
        mean, std = group_mean_std(R, batch.group)
        centred = R - mean
        if self.config.scale == "group":
            return centred / (std + self.config.std_eps)
        if self.config.scale == "batch":
            return centred / (batch_std(R) + self.config.std_eps)
        return centred

    def compute_advantages(self, batch: RolloutBatch) -> None:
        adv = self.scalar_advantages(batch)  # [B]
        batch.advantages = adv[:, None] * batch.response_mask  # [B, R]
