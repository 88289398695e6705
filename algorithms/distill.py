"""Distillation: supervised fine-tuning of the policy on a stronger model's correct samples.

Yue et al. (2025, "Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs
Beyond the Base Model?") contrast RLVR with distillation from a stronger teacher, which they
find does expand the set of problems the model solves (pass@k at large k). This is that arm as
a run like any other: the same data, verifier, batch, checkpoints and eval against the base.

Each step, the teacher (`algorithm.teacher`: a model.path value such as a directory or
`tiny-teacher`) samples `rollout.n` responses to each of the step's prompts, through the
`rollout_engine` hook (the policy samples nothing during training, only in evals). The verifier
scores them; a sample is correct, and trained on, when its verifier score (before any reward
shaping) is at least `algorithm.correct_at` (default 1.0, a binary verifier's "correct"). The
loss is the token-mean negative log-likelihood of the correct samples' response tokens under
the policy, normalised over the minibatch's correct tokens (all processes):

    L = - sum_{i correct} sum_t log pi(y_it | x_i, y_i<t) / sum_{i correct} |y_i|

No ratio, no advantage, no KL. In metrics.jsonl, reward/* are the teacher's samples' (distill/correct_frac
the fraction trained on) and sft_loss is L. Incorrect samples stay in the batch with their response mask
zeroed (so their tokens count in no normaliser); a minibatch with no correct sample has loss 0.

Choices:
- log pi is taken at the sampling temperature (the trainer scores responses with logits / T, and
  the teacher samples at T): with rollout.temperature 1, as the tiny recipes use, plain SFT.
- The teacher is a frozen full replica on every process, sampled with transformers `generate`
  (the hf engine) whatever rollout.engine is: a vLLM policy engine still serves the evals. Its
  tokenizer must equal the policy's (the prompts are encoded once, with the policy's).
- Only `loss_agg: token-mean` (with the masked rows the sequence modes would count incorrect
  samples in their normaliser); the PPO clip, policy_loss, KL and rollout.is_correction do not apply and are
  refused when set, as is DAPO's overlong reward shaping (what is trained on is decided by the verifier's
  score, before shaping; `overlong_filter` applies) and a teacher directory that does not exist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError
from rlvr.losses import agg_loss, all_reduce_sum, masked_mean
from rlvr.tiny import TINY_MODELS

from .base import Algorithm, AlgorithmConfig, register_algorithm

# options of the shared config that have no meaning here: refused unless at their defaults
# (overlong_buffer shapes the rewards, which distill does not read: it trains on the verifier's scores)
_UNUSED = ("clip_low", "clip_high", "clip_c", "kl_coef", "kl_target", "policy_loss", "norm_constant", "overlong_buffer")


class _NoPolicyLoss:
    """Stands in for the policy loss (distill has none): refuses rollout.is_correction, which weights advantages
    by sampler/trainer ratios, at load (`config.check_algorithm`)."""

    name = "none"
    token_weights_exact = False

    def check_token_weights(self, is_correction: str) -> None:
        if is_correction != "none":
            raise ConfigError(
                f"rollout.is_correction={is_correction}: distill trains on a teacher's samples with no ratio and "
                "no advantage to weight; use rollout.is_correction=none"
            )

    def __call__(self, *args: Any, **kwargs: Any):
        raise RuntimeError("distill has no policy loss (compute_loss is the NLL)")


class DistillConfig(AlgorithmConfig):
    teacher: str = Field(
        description="the teacher model: a model.path value (a local directory, a hub id, or tiny-teacher)"
    )
    correct_at: float = Field(
        1.0, description="a teacher sample is trained on when its verifier score (before shaping) is at least this"
    )


@register_algorithm("distill")
class Distill(Algorithm):
    Config = DistillConfig
    loss_terms = frozenset({"sft_loss"})

    def __init__(self, config: DistillConfig, **context: Any):
        super().__init__(config, **context)
        self.policy_loss = _NoPolicyLoss()

    def check(self) -> None:
        super().check()
        c = self.config
        for key in _UNUSED:
            if getattr(c, key) != AlgorithmConfig.model_fields[key].default:
                raise ValueError(f"algorithm.{key}: not used by distill (a supervised loss on verified samples)")
        if c.loss_agg != "token-mean":
            raise ValueError(f"algorithm.loss_agg: distill supports token-mean only (got {c.loss_agg})")
        t = c.teacher
        looks_local = t.startswith(("/", "./", "../", "~")) or os.path.isabs(t) or t.count("/") > 1
        if t not in TINY_MODELS and looks_local and not Path(t).expanduser().is_dir():
            raise ValueError(f"algorithm.teacher: no such model directory: {t}")

    def setup(self, trainer) -> None:
        super().setup(trainer)
        from rlvr.models import load_model_and_tokenizer, resolve_model_path
        from rlvr.rollout import build_engine

        acc = trainer.accelerator
        with acc.main_process_first():  # rank 0 builds an embedded teacher once
            path = resolve_model_path(self.config.teacher)
        try:
            model, tok = load_model_and_tokenizer(path, trainer.cfg.model.dtype)
        except ConfigError as e:
            raise ConfigError(str(e).replace("model.path:", "algorithm.teacher:", 1)) from None
        ours = trainer.tokenizer
        if tok.get_vocab() != ours.get_vocab() or (tok.eos_token_id, tok.pad_token_id) != (
            ours.eos_token_id,
            ours.pad_token_id,
        ):
            raise ConfigError(
                f"algorithm.teacher: {self.config.teacher!r} has another tokenizer than model.path "
                f"{trainer.cfg.model.path!r} (vocabulary or eos/pad ids differ); distill needs the same one"
            )
        self.teacher = model.requires_grad_(False).eval().to(acc.device)  # frozen, not checkpointed
        self.teacher_engine = build_engine(
            "hf", self.teacher, ours, batch_size=trainer.cfg.rollout.generation_batch_size
        )

    def rollout_engine(self, trainer):
        return self.teacher_engine

    def correct(self, batch: RolloutBatch) -> torch.Tensor:
        """[B] bool: the teacher samples trained on (verifier score >= correct_at)."""
        return batch.scores >= self.config.correct_at

    def compute_advantages(self, batch: RolloutBatch) -> None:
        batch.advantages = torch.zeros_like(batch.response_mask)  # unused: the loss has no advantage

    def prepare(self, batch: RolloutBatch) -> None:
        """Mask the incorrect samples out of the loss and its normaliser; log the correct fraction."""
        super().prepare(batch)  # overlong_filter, if set, also masks truncated samples
        ok = self.correct(batch)
        batch.response_mask = batch.response_mask * ok.to(batch.response_mask.dtype)[:, None]
        s = all_reduce_sum(torch.tensor([float(ok.sum()), float(len(ok))], dtype=torch.float64))
        batch.metrics["distill/correct_frac"] = float(s[0] / s[1])  # of the teacher's samples, all processes

    def compute_loss(
        self, batch: RolloutBatch, logprobs: torch.Tensor, entropy: torch.Tensor | None = None, **extras: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = batch.response_mask  # correct samples only (prepare)
        agg = dict(global_tokens=batch.global_tokens, global_seqs=batch.global_seqs)
        loss = agg_loss(-logprobs, mask, "token-mean", **agg)
        metrics = {"sft_loss": loss.detach()}
        if entropy is not None:
            metrics["entropy"] = masked_mean(entropy.detach(), mask)
            if self.config.entropy_coef > 0:
                loss = loss - self.config.entropy_coef * agg_loss(entropy, mask, "token-mean", **agg)
        return loss, metrics
