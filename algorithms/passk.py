"""Pass@k training: advantages that optimise pass@k rather than pass@1 (`algorithm.name: passk`).

Two estimators, `estimator:`

- `analytic` (default; Chen et al. 2025, "Pass@k Training for Adaptively Balancing Exploration
  and Exploitation of Large Reasoning Models", arXiv 2508.10751): with binary rewards, a group of
  N responses, N_neg of them wrong, the expected reward of a random k-subset (its pass@k) and
  each response's advantage in closed form (no subsets drawn):

      R_bar = 1 - C(N_neg, k) / C(N, k)                   sigma = sqrt(R_bar (1 - R_bar))
      A_pos = (1 - R_bar) / (sigma + eps)
      A_neg = (1 - R_bar - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / (sigma + eps)

  (a wrong response's subsets pass with probability 1 - C(N_neg-1, k-1)/C(N-1, k-1); a right
  one's always). k = 1 is GRPO with the biased std. Rewards must be 0 or 1 (reward.functions
  with `binary: true`); anything else is an error, as is a KL in the reward.
- `max` (verl `compute_grpo_passk_outcome_advantage`, after Tang et al. 2025, arXiv 2503.19595):
  only the best response of each group gets an advantage, r_max - r_second_max, divided by
  (std_g + eps) when `norm_by_std` (Bessel std, verl's default); every other response gets 0.
  k is the group size (rollout.n); `k` is not read. A tie for best gives 0 to all.

Both broadcast to every response token and train with the policy loss (default `ppo`) and
`seq-mean-token-mean`, as GRPO. eps = 1e-6 (verl's; `std_eps`). Choice: the analytic
estimator's sigma + eps (the paper divides by sigma; its numerators are 0 exactly where sigma is,
so eps only keeps 0/0 out). k must be <= rollout.n (checked at load).
"""

from __future__ import annotations

from math import comb
from typing import Literal

import torch
from pydantic import Field

from rlvr.batch import RolloutBatch

from .base import AggMode, Algorithm, AlgorithmConfig, register_algorithm


class PassKConfig(AlgorithmConfig):
    estimator: Literal["analytic", "max"] = Field(
        "analytic", description="Chen et al.'s closed-form pass@k advantage, or verl's grpo_passk (best response only)"
    )
    k: int = Field(4, ge=1, description="the k of pass@k (analytic estimator); at most rollout.n")
    std_eps: float = Field(1e-6, ge=0, description="added to the std before dividing")
    norm_by_std: bool = Field(True, description="max estimator: divide by the group std (verl norm_adv_by_std_in_grpo)")
    loss_agg: AggMode = Field("seq-mean-token-mean", description="loss aggregation (as GRPO)")


def analytic_passk_advantages(correct: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """One group's advantages [N] from its 0/1 rewards [N] (Chen et al. 2025)."""
    N = len(correct)
    n_neg = int((correct == 0).sum())
    r_bar = 1.0 - comb(n_neg, k) / comb(N, k)
    sigma = (r_bar * (1.0 - r_bar)) ** 0.5
    a_pos = (1.0 - r_bar) / (sigma + eps)
    a_neg = (1.0 - r_bar - comb(n_neg - 1, k - 1) / comb(N - 1, k - 1)) / (sigma + eps) if n_neg else 0.0
    return torch.where(correct == 1, a_pos, a_neg).to(torch.float64)


def max_passk_advantages(rewards: torch.Tensor, norm_by_std: bool, eps: float) -> torch.Tensor:
    """One group's advantages [N]: r_max - r_second on the first best response, 0 elsewhere (verl)."""
    r = rewards.double()
    order = torch.sort(r, descending=True, stable=True).indices
    out = torch.zeros_like(r)
    a = r[order[0]] - r[order[1]]
    if norm_by_std:
        a = a / (r.std() + eps)
    out[order[0]] = a
    return out


@register_algorithm("passk")
class PassK(Algorithm):
    Config = PassKConfig

    def min_group_size(self) -> int:
        return max(2, self.config.k) if self.config.estimator == "analytic" else 2

    def check(self) -> None:
        super().check()
        c = self.config
        if c.estimator == "analytic" and c.kl_coef > 0 and c.kl_in == "reward":
            raise ValueError("algorithm passk (analytic) needs 0/1 rewards: use kl_in: loss, not kl_in: reward")

    def compute_advantages(self, batch: RolloutBatch) -> None:
        c = self.config
        R = self.sequence_rewards(batch)  # [B]
        if c.estimator == "analytic" and not bool(((R == 0) | (R == 1)).all()):
            bad = R[(R != 0) & (R != 1)][0].item()
            raise ValueError(
                f"algorithm passk (analytic) needs rewards of exactly 0 or 1, got {bad:g}: use a binary reward "
                "(reward.functions: [{name: ..., binary: true}]) and no reward shaping"
            )
        adv = torch.zeros(len(R), dtype=torch.float64, device=R.device)
        for g in torch.unique(batch.group):
            idx = (batch.group == g).nonzero().squeeze(-1)
            if len(idx) < 2:
                raise ValueError(f"passk: a prompt group holds {len(idx)} response(s); the estimator needs >= 2")
            if c.estimator == "analytic":
                if len(idx) < c.k:
                    raise ValueError(f"passk: a prompt group holds {len(idx)} responses, fewer than k={c.k}")
                adv[idx] = analytic_passk_advantages(R[idx], c.k, c.std_eps)
            else:
                adv[idx] = max_passk_advantages(R[idx], c.norm_by_std, c.std_eps)
        batch.advantages = adv.to(R.dtype)[:, None] * batch.response_mask  # [B, R]
