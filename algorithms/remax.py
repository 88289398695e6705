"""ReMax (Li et al. 2024, arXiv 2310.10505): REINFORCE with a greedy baseline.

For each prompt one greedy (temperature 0) response is also decoded and scored
(`after_rollout`, through the trainer's engine and reward); its reward b is the
baseline for every sampled response to that prompt:

    A_t = G_t - b,   G_t = sum_{s >= t} r_s  (the outcome on the last token,
                                              minus KL when it sits in the reward)

No whitening, no critic. The greedy response is never trained on: its reward
lives only in `batch.extras["greedy_rewards"]` [B], not among the batch's samples.

Choices: default no KL (Yue et al.); with KL in the reward the baseline is the
greedy response's task reward alone (its KL is not computed), as the paper does.
"""

from __future__ import annotations

import torch

from rlvr.advantages import returns_to_go
from rlvr.batch import RolloutBatch
from rlvr.losses import all_reduce_sum

from .base import Algorithm, AlgorithmConfig, register_algorithm


@register_algorithm("remax")
class ReMax(Algorithm):
    Config = AlgorithmConfig

    def after_rollout(self, batch: RolloutBatch, trainer) -> None:
        from rlvr.rollout import Sampling

        n = trainer.cfg.rollout.n  # groups are n consecutive samples of one prompt
        sampling = Sampling(temperature=0.0, max_new_tokens=trainer.cfg.rollout.max_new_tokens)
        greedy = trainer.rollout(batch.problems[::n], 1, sampling)
        trainer.score(greedy)  # the same verifier and shaping as the samples
        batch.extras["greedy_rewards"] = greedy.rewards.repeat_interleave(n).to(batch.rewards.device)  # [B]
        s = all_reduce_sum(torch.tensor([greedy.rewards.sum(), len(greedy)], dtype=torch.float64))
        batch.metrics["reward/greedy_mean"] = float(s[0] / s[1])  # the baseline's mean over prompts, all processes

    def compute_advantages(self, batch: RolloutBatch) -> None:
        b = batch.extras.get("greedy_rewards")
        if b is None:
            raise ValueError("remax: the batch has no greedy baseline rewards (batch.extras['greedy_rewards'])")
        returns = returns_to_go(self.token_rewards(batch), batch.response_mask, 1.0)  # [B, R]
        batch.returns = returns
        batch.advantages = (returns - b[:, None]) * batch.response_mask
