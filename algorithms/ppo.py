"""PPO for language models (Schulman et al. 2017; Ouyang et al. 2022).

A critic V (the policy's architecture with a scalar value head) estimates the
value of each response prefix. With token rewards r_t (the outcome on the last
token, minus beta * KL_t when the KL sits in the reward) and V masked to the
response:

    delta_t = r_t + gamma * V_{t+1} - V_t
    A_t     = delta_t + gamma * lambda * A_{t+1}          (GAE)
    returns = A + V                                        (before whitening)
    A       = whiten(A) over the global batch

Loss = clipped policy loss + vf_coef * 0.5 * max((v - ret)^2, (clip(v, v_old +- c_v) - ret)^2),
both aggregated with `loss_agg`.

Choices (verl): gamma = lambda = 1; value clip 0.5; dual clip c = 3; KL in the
reward with k1 when enabled (PPO-RLHF), off by default (Yue et al.); the critic
has its own AdamW (`critic_lr`, default the policy's lr).

The critic is this file's: `setup` builds it and hands it to the trainer (which
steps, clips and checkpoints it with the policy), `after_logprobs` stores the old
values in `batch.extras["values"]`, `forward_extras` gives the loss the new ones.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from rlvr.batch import RolloutBatch
from rlvr.losses import agg_loss, masked_mean, value_loss, whiten
from rlvr.models import load_value_model, response_values

from .base import Algorithm, AlgorithmConfig, register_algorithm


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates over the masked tokens. [B, R] x3 -> [B, R]"""
    keep = mask.bool()
    r, v = (
        torch.where(keep, rewards, 0.0),
        torch.where(keep, values, 0.0),
    )  # value past the last token is 0; where, not *, so junk (even inf) on padding cannot leak
    adv = torch.zeros_like(r)
    last = torch.zeros_like(r[:, 0])
    next_v = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):  # vectorised over the batch
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
        next_v = v[:, t]
    return adv


class PPOConfig(AlgorithmConfig):
    gamma: float = Field(1.0, ge=0, le=1, description="discount")
    lam: float = Field(1.0, ge=0, le=1, description="GAE lambda")
    value_clip: float | None = Field(0.5, gt=0, description="clip the new value to v_old +- value_clip; null disables")
    vf_coef: float = Field(1.0, ge=0, description="weight of the value loss")
    critic_lr: float | None = Field(None, gt=0, description="critic learning rate; null = train.lr")
    kl_in: Literal["loss", "reward"] = Field("reward", description="KL placement (PPO-RLHF: in the reward)")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="KL estimator")


@register_algorithm("ppo")
class PPO(Algorithm):
    Config = PPOConfig
    loss_terms = Algorithm.loss_terms | {"value_loss"}
    critic: torch.nn.Module | None = None

    def setup(self, trainer) -> None:
        super().setup(trainer)
        critic = load_value_model(trainer.model_path, trainer.cfg.model.dtype)
        self.critic = trainer.prepare_model(critic, lr=self.config.critic_lr or trainer.cfg.train.lr, name="critic")

    def after_logprobs(self, batch: RolloutBatch, trainer) -> None:
        super().after_logprobs(batch, trainer)
        batch.extras["values"] = trainer.forward(lambda mb: response_values(self.critic, mb), batch)  # [B, R]

    def forward_extras(self, micro: RolloutBatch) -> dict[str, torch.Tensor]:
        return {"values": response_values(self.critic, micro)}  # [B, R], with grad

    def compute_advantages(self, batch: RolloutBatch) -> None:
        mask, values = batch.response_mask, batch.extras["values"]
        adv = gae(self.token_rewards(batch), values, mask, self.config.gamma, self.config.lam)
        batch.returns = adv + torch.where(mask.bool(), values, 0.0)  # [B, R]
        batch.advantages = whiten(adv, mask)

    def compute_loss(self, batch, logprobs, entropy=None, values=None):
        loss, metrics = super().compute_loss(batch, logprobs, entropy=entropy)
        vl, vm = value_loss(
            values, batch.extras["values"], batch.returns, batch.response_mask, clip_range=self.config.value_clip
        )
        v = agg_loss(
            vl,
            batch.response_mask,
            self.config.loss_agg,
            global_tokens=batch.global_tokens,
            global_seqs=batch.global_seqs,
            norm_constant=self.norm_constant,
        )
        metrics.update(vm, value_loss=v.detach(), value_mean=masked_mean(values.detach(), batch.response_mask))
        return loss + self.config.vf_coef * v, metrics
