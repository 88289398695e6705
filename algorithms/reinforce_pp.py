"""REINFORCE++ (Hu et al. 2025, arXiv 2501.03262) and its group-baseline variant.

REINFORCE++ (`baseline: false`): token rewards r_t are the outcome R on the last
token minus beta * KL_t (k1, in the reward); the advantage is the return-to-go

    G_t = sum_{s >= t} gamma^{s-t} r_s

whitened over all response tokens of the global batch (mean and Bessel variance
reduced across processes). No critic, no groups: it works with G = 1.

REINFORCE++-baseline (`baseline: true`), the variant RLVR studies use with
G > 1: the sequence reward R'_i = R_i - beta * sum_t KL_t (R_i without KL) is
centred by its group mean, R'_i - mean_g(R'), put on the last token, and given the
same return-to-go (gamma = 1: broadcast to every token) and global whitening, as
verl's `compute_reinforce_plus_plus_baseline_outcome_advantage`. It needs
rollout.n >= 2 (refused at config load). OpenRLHF instead centres the outcome alone
and subtracts the KL per token before the return-to-go.

Choices: KL goes in the reward with the k1 estimator (the paper's placement), but
kl_coef defaults to 0 as Yue et al. train; gamma = 1; whitening uses Bessel's
correction (verl; OpenRLHF's biased variance is `unbiased_whiten: false`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlvr.advantages import group_mean_std, last_token, returns_to_go
from rlvr.batch import RolloutBatch
from rlvr.losses import whiten

from .base import Algorithm, AlgorithmConfig, register_algorithm


class ReinforcePPConfig(AlgorithmConfig):
    baseline: bool = Field(False, description="subtract the group-mean reward first (REINFORCE++-baseline)")
    gamma: float = Field(1.0, ge=0, le=1, description="discount of the return-to-go")
    unbiased_whiten: bool = Field(
        True, description="Bessel-corrected variance in the whitening (verl); false = OpenRLHF"
    )
    kl_in: Literal["loss", "reward"] = Field("reward", description="KL placement (REINFORCE++: in the reward)")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="KL estimator (REINFORCE++: k1)")


@register_algorithm("reinforce_pp")
class ReinforcePP(Algorithm):
    Config = ReinforcePPConfig

    def min_group_size(self) -> int:
        return 2 if self.config.baseline else 1

    def compute_advantages(self, batch: RolloutBatch) -> None:
        if self.config.baseline:
            R = self.sequence_rewards(batch)  # [B], KL included when it sits in the reward
            mean, _ = group_mean_std(R, batch.group)
            rewards = last_token(R - mean, batch.response_mask)
        else:
            rewards = self.token_rewards(batch)
        returns = returns_to_go(rewards, batch.response_mask, self.config.gamma)
        batch.returns = returns
        batch.advantages = whiten(returns, batch.response_mask, unbiased=self.config.unbiased_whiten)  # [B, R]
