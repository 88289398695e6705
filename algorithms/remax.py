"""ReMax (Li et al. 2024, arXiv 2310.10505): REINFORCE with a greedy baseline.

For each prompt the rollout engine also decodes one greedy (temperature 0)
response and scores it; its reward b is the baseline for every sampled
response to that prompt:

    A_t = G_t - b,   G_t = sum_{s >= t} r_s  (the outcome on the last token,
                                              minus KL when it sits in the reward)

No whitening, no critic. The greedy response is never trained on: it lives only
in `batch.greedy_rewards`, not among the batch's samples.

Choices: default no KL (Yue et al.); with KL in the reward the baseline is the
greedy response's task reward alone (its KL is not computed), as the paper does.
"""

from __future__ import annotations

from rlvr.batch import RolloutBatch

from .base import Algorithm, AlgorithmConfig, register_algorithm
from .reinforce_pp import returns_to_go


@register_algorithm("remax")
class ReMax(Algorithm):
    Config = AlgorithmConfig
    wants_greedy_baseline = True

    def compute_advantages(self, batch: RolloutBatch) -> None:
        if batch.greedy_rewards is None:
            raise ValueError("remax: the batch has no greedy baseline rewards (batch.greedy_rewards)")
        returns = returns_to_go(self.token_rewards(batch), batch.response_mask, 1.0)  # [B, R]
        batch.returns = returns
        batch.advantages = (returns - batch.greedy_rewards[:, None]) * batch.response_mask
