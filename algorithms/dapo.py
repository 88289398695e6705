"""DAPO: Decoupled Clip and Dynamic sAmpling Policy Optimization (Yu et al. 2025).

The GRPO advantage, A_i = (R_i - mean_g) / (std_g + eps), with four changes:

1. Clip-higher: ratio clipped to [1 - eps_low, 1 + eps_high], 0.2 / 0.28.
2. Token-level loss: `token-mean` over all tokens of the global batch.
3. Dynamic sampling: a group whose responses all score the same (std 0) gives
   no gradient, so it is dropped and fresh prompts are sampled until the batch
   holds `train.prompts_per_step` groups, at most `max_gen_batches` rounds; then
   it trains on what it has (logged as sampling/shortfall) or raises. Logged:
   sampling/groups_kept_frac, the groups with signal over the groups drawn; groups
   with signal drawn after the batch is full are surplus, not dropped (verl counts
   them in num_prompt_in_batch, then cuts the batch to size).
4. Overlong reward shaping: `algorithm.overlong_buffer` / `overlong_factor`
   (shared options: a reward wrapper any algorithm can use, applied in
   `after_scoring`; the paper: 4096 of 20480, factor 1). Overlong filtering
   (truncated responses out of the loss) is `overlong_filter`.

Choices: no KL (the paper removes it; `kl_coef` works as in GRPO, in the loss or in the
sequence reward); dual clip c = 10 (verl's DAPO recipe);
groups are compared on the verifier score before length shaping (`filter_on:
score`, verl's `acc`), since shaping alone can make equal answers differ.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from .base import AggMode, register_algorithm
from .grpo import GRPO, GRPOConfig


class DAPOConfig(GRPOConfig):
    clip_low: float = Field(0.2, ge=0, description="eps_low")
    clip_high: float = Field(0.28, ge=0, description="eps_high (clip-higher)")
    clip_c: float | None = Field(10.0, gt=1, description="dual-clip constant")
    loss_agg: AggMode = Field("token-mean", description="token-level loss")
    dynamic_sampling: bool = Field(True, description="drop groups whose responses all score the same, and refill")
    filter_on: Literal["score", "reward"] = Field(
        "score", description="compare groups on the verifier score or the shaped reward"
    )
    max_gen_batches: int = Field(10, ge=1, description="generation rounds per step at most")
    on_shortfall: Literal["train", "raise"] = Field("train", description="after max_gen_batches rounds short of groups")


@register_algorithm("dapo")
class DAPO(GRPO):
    Config = DAPOConfig

    @property
    def max_gen_batches(self) -> int:
        return self.config.max_gen_batches if self.config.dynamic_sampling else 1

    @property
    def raise_on_shortfall(self) -> bool:
        return self.config.on_shortfall == "raise"

    def keep_group(self, rewards: torch.Tensor, scores: torch.Tensor | None = None) -> bool:
        if not self.config.dynamic_sampling:
            return True
        x = scores if self.config.filter_on == "score" and scores is not None else rewards
        return bool((x != x[0]).any())
