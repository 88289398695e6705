"""The algorithm seam: a base class, its shared config, and the registry.

An algorithm computes two things: `compute_advantages(batch)` fills
`batch.advantages` (and `batch.returns` where it has them), and
`compute_loss(batch, logprobs, ...)` returns this micro-batch's share of the
minibatch loss. Everything else that differs between algorithms is owned here,
through hooks the trainer calls at fixed points of a step (defaults do nothing):

    setup(trainer)                 once, before the first step: own models, via
                                   trainer.prepare_model (the reference; PPO's critic)
    after_scoring(batch)           each scored batch: reward shaping (overlong)
    rollout_engine(trainer)        the engine the step's samples come from: the
                                   policy's (default), or a teacher's (distill)
    keep_group(rewards, scores)    each prompt group: whether it is trained on;
    max_gen_batches, raise_on_shortfall   with these, refill rounds (DAPO)
    after_rollout(batch, trainer)  the step's batch, complete: extra sampling
                                   passes (ReMax's greedy sample), via
                                   trainer.rollout / trainer.score
    after_logprobs(batch, trainer) old log-probs known: no-grad passes of own
                                   models (reference log-probs, critic values)
    compute_advantages(batch), prepare(batch)
    forward_extras(micro)          each micro-batch of the update, with grad:
                                   own models' outputs, passed to compute_loss
    wants_entropy_grad             whether the loss differentiates the entropy
    old_logprobs_before_update     whether a hook before the update reads
                                   batch.old_logprobs (else the first minibatch's
                                   come from the update's forward: rlvr/fused.py)
    state_dict(), load_state_dict(state)   saved in every checkpoint (the
                                   adaptive KL coefficient)

So a method with another model or another sampling pass is one file: the
trainer prepares, steps, clips and checkpoints the models an algorithm hands it,
and never asks which algorithm it runs (prime-rl's orchestrator/algo/base.py has
the same shape). An algorithm's per-sample data rides in `batch.extras`.

The default `compute_loss` is the policy loss `algorithm.policy_loss` names (default
`ppo`, the PPO-clipped policy-gradient loss; GSPO, CISPO, ... in policy_losses.py and
one file each) with the options every algorithm shares (KL as a loss term, entropy
bonus), aggregated by `agg_loss` with global normalisers, so most algorithms only
override `compute_advantages`.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlvr import plugins
from rlvr.advantages import last_token
from rlvr.batch import RolloutBatch
from rlvr.errors import ConfigError, format_validation_error
from rlvr.losses import AGG_MODES, agg_loss, all_reduce_sum, kl_penalty, masked_mean

from .policy_losses import build_policy_loss

if TYPE_CHECKING:
    from rlvr.trainer import Trainer

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
assert set(AggMode.__args__) == set(AGG_MODES)


class AlgorithmConfig(BaseModel):
    """Options shared by every algorithm. Subclasses add their own fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(description="registered algorithm name or 'pkg.module:Class'")
    loss_agg: AggMode = Field("token-mean", description="how per-token losses become one number (see ALGORITHMS.md)")
    norm_constant: float | None = Field(
        None, gt=0, description="divisor for seq-mean-token-sum-norm; default rollout.max_new_tokens"
    )
    clip_low: float = Field(0.2, ge=0, description="PPO ratio clip below: 1 - clip_low")
    clip_high: float = Field(0.2, ge=0, description="PPO ratio clip above: 1 + clip_high")
    clip_c: float | None = Field(3.0, gt=1, description="dual-clip constant for negative advantages; null disables")
    kl_coef: float = Field(0.0, ge=0, description="beta of the KL to the reference model; 0 = no reference model")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator: k1, k2, or k3 (low-variance)")
    kl_in: Literal["loss", "reward"] = Field(
        "loss",
        description="KL as a loss term (GRPO paper) or subtracted from token rewards (PPO-RLHF, REINFORCE++); group baselines then compare R - beta * sum_t KL_t",
    )
    kl_target: float | None = Field(
        None,
        gt=0,
        description="adaptive KL controller (with kl_in=reward): target for the mean per-sequence KL sum over the batch (Ziegler et al.; verl targets the mean of per-token means, smaller by about the mean response length); null = fixed kl_coef",
    )
    kl_horizon: int = Field(10000, ge=1, description="adaptive KL controller horizon, in samples")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus weight (subtracted from the loss)")
    overlong_filter: bool = Field(
        False, description="mask truncated responses (no eos within max_new_tokens) out of the loss"
    )
    overlong_buffer: int = Field(
        0,
        ge=0,
        description="DAPO overlong reward shaping: penalise the last N tokens before rollout.max_new_tokens, falling to -overlong_factor at the limit; 0 = off",
    )
    overlong_factor: float = Field(
        1.0, ge=0.0, description="DAPO overlong reward shaping: the penalty at rollout.max_new_tokens"
    )
    policy_loss: str | dict[str, Any] = Field(
        "ppo",
        description="the policy loss, composable with any advantage: a name (ppo, gspo, cispo, clip_cov, kl_cov, geo_mean, gpg) or {name: ..., options}; see algorithms/policy_losses.py",
    )


class Algorithm:
    """Base class. Subclass, set `Config`, override `compute_advantages`, and fill
    the hooks the method needs (module docstring)."""

    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    # compute_loss's metrics that are this micro-batch's share of the minibatch loss: the trainer sums them
    # over micro-batches like the loss. Every other metric is a token mean over the micro-batch's response
    # tokens, which the trainer weights by those tokens (so micro_batch_size does not change it).
    loss_terms: ClassVar[frozenset[str]] = frozenset({"pg_loss"})

    def __init__(self, config: AlgorithmConfig, *, max_new_tokens: int | None = None, group_size: int | None = None):
        self.config = config
        self.max_new_tokens = max_new_tokens
        self.group_size = group_size
        self.kl_coef = config.kl_coef  # moves when the adaptive controller is on; checkpointed (state_dict)
        self.ref: torch.nn.Module | None = None  # the frozen reference model, after setup() when needs_reference
        self.check()
        self.policy_loss = build_policy_loss(config.policy_loss, config)  # ValueError names the key

    def check(self) -> None:
        """Raise ValueError for settings this algorithm cannot run with (named by key).
        Subclasses that add checks call super().check()."""
        need = self.min_group_size()
        if self.group_size is not None and self.group_size < need:
            raise ValueError(
                f"algorithm {self.config.name} needs rollout.n >= {need} samples per prompt: its baseline "
                f"is the other samples of the same prompt (got rollout.n={self.group_size})"
            )
        buf = self.config.overlong_buffer
        if buf and self.max_new_tokens is not None and buf >= self.max_new_tokens:
            raise ValueError(
                f"algorithm.overlong_buffer={buf} must be below rollout.max_new_tokens={self.max_new_tokens}"
            )

    def min_group_size(self) -> int:
        """Samples per prompt (rollout.n) the advantage needs: 2 for a group baseline."""
        return 1

    @property
    def needs_reference(self) -> bool:
        return self.config.kl_coef > 0

    @property
    def old_logprobs_before_update(self) -> bool:
        """Whether after_logprobs, compute_advantages or prepare read `batch.old_logprobs` (the KL in the
        reward does): the trainer then computes them all before the update; else the first minibatch's come
        from the update's own forward and are NaN until then (train.fused_old_logprobs, rlvr/fused.py)."""
        return self.config.kl_in == "reward" and self.config.kl_coef > 0

    # ------------------------------------------------------------ hooks, in step order

    def setup(self, trainer: "Trainer") -> None:
        """Once, after the policy is prepared and before the first step (and before a resume
        loads a checkpoint): create the models this algorithm needs and hand them to
        `trainer.prepare_model` (with `lr`: trained, stepped, clipped and checkpointed with
        the policy; without: frozen). The base loads the reference model when the KL is on.
        Subclasses that add models call super().setup(trainer) first."""
        if self.needs_reference:  # the base model, or with LoRA the policy with its adapters off
            self.ref = trainer.reference_model()

    def rollout_engine(self, trainer: "Trainer"):
        """The rollout engine (`generate(problems, n, sampling)`) the trainer collects each step's
        samples from: by default the policy's own, `trainer.engine`. Distillation returns a
        teacher's (algorithms/distill.py). Extra passes through `trainer.rollout` use the policy."""
        return trainer.engine

    def after_scoring(self, batch: RolloutBatch) -> None:
        """Each batch the trainer scores (`trainer.score`): `batch.scores` holds the verifier's
        rewards and `batch.rewards` a copy to shape. The base adds DAPO's overlong penalty
        when `overlong_buffer` > 0, a reward wrapper any algorithm may use (ALGORITHMS.md)."""
        c = self.config
        if c.overlong_buffer:
            from rlvr.rewards import overlong_penalty

            batch.rewards = batch.rewards + overlong_penalty(
                batch.response_lengths, self.max_new_tokens, c.overlong_buffer, c.overlong_factor
            )

    def keep_group(self, rewards: torch.Tensor, scores: torch.Tensor | None = None) -> bool:
        """Whether a prompt group enters the training batch, given its rewards [n]
        and its verifier scores before any shaping [n]."""
        return True

    @property
    def max_gen_batches(self) -> int:
        """Generation rounds per step at most while `keep_group` drops groups (refill)."""
        return 1

    @property
    def raise_on_shortfall(self) -> bool:
        """After max_gen_batches rounds short of groups: raise (True) or train on what was kept."""
        return False

    def after_rollout(self, batch: RolloutBatch, trainer: "Trainer") -> None:
        """Once per step, on the step's batch (every round joined, groups kept), before any
        log-prob: draw extra samples with `trainer.rollout`, score them with `trainer.score`,
        and keep what the advantage needs in `batch.extras`."""

    def after_logprobs(self, batch: RolloutBatch, trainer: "Trainer") -> None:
        """After the trainer filled `batch.old_logprobs`, before `compute_advantages`: no-grad
        forward passes of this algorithm's own models (`trainer.forward` runs a function over
        micro-batches). The base fills `batch.ref_logprobs` when a reference model is loaded."""
        if self.ref is not None:
            batch.ref_logprobs = trainer.logprobs(self.ref, batch)

    def compute_advantages(self, batch: RolloutBatch) -> None:
        raise NotImplementedError

    def prepare(self, batch: RolloutBatch) -> None:
        """Last changes before the update; by default, overlong filtering. Logs the overlong penalty
        (`overlong_buffer`) of the trained batch: reward/overlong_penalty_mean (<= 0) and
        reward/overlong_penalised_frac, over every process."""
        c = self.config
        if c.overlong_buffer:  # recomputed from the lengths (after_scoring shaped the rewards with it)
            from rlvr.rewards import overlong_penalty

            p = overlong_penalty(batch.response_lengths, self.max_new_tokens, c.overlong_buffer, c.overlong_factor)
            s = all_reduce_sum(torch.tensor([p.sum(), (p < 0).sum(), len(p)], dtype=torch.float64))
            batch.metrics["reward/overlong_penalty_mean"] = float(s[0] / s[2])
            batch.metrics["reward/overlong_penalised_frac"] = float(s[1] / s[2])
        if self.config.overlong_filter:
            batch.response_mask = batch.response_mask * (~batch.truncated).to(batch.response_mask.dtype)[:, None]

    def forward_extras(self, micro: RolloutBatch) -> dict[str, torch.Tensor]:
        """Each micro-batch of the update, after the policy's forward and with grad: outputs of
        this algorithm's trained models, passed to `compute_loss` as keyword arguments."""
        return {}

    @property
    def wants_entropy_grad(self) -> bool:
        """Whether the loss differentiates the policy's entropy (else it is only logged)."""
        return self.config.entropy_coef > 0

    def state_dict(self) -> dict[str, Any]:
        """This algorithm's own state, JSON-serialisable, saved in every checkpoint (models
        handed to `trainer.prepare_model` are checkpointed with the policy)."""
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved, when a run resumes."""
        self.kl_coef = float(state["kl_coef"])

    def compute_loss(
        self,
        batch: RolloutBatch,
        logprobs: torch.Tensor,  # [B, R], with grad
        entropy: torch.Tensor | None = None,  # [B, R]
        **extras: torch.Tensor,  # forward_extras(batch)
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        mask = batch.response_mask
        agg = dict(global_tokens=batch.global_tokens, global_seqs=batch.global_seqs, norm_constant=self.norm_constant)
        loss, metrics = self.policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask, agg)  # default: ppo
        metrics["pg_loss"] = loss.detach()
        if c.kl_coef > 0 and c.kl_in == "loss":
            kl = kl_penalty(logprobs, batch.ref_logprobs, c.kl_estimator)  # [B, R]
            kl_loss = agg_loss(kl, mask, c.loss_agg, **agg)
            loss = loss + c.kl_coef * kl_loss
            metrics["kl"] = masked_mean(kl.detach(), mask)
        if entropy is not None:
            metrics["entropy"] = masked_mean(entropy.detach(), mask)
            if c.entropy_coef > 0:
                loss = loss - c.entropy_coef * agg_loss(entropy, mask, c.loss_agg, **agg)
        return loss, metrics

    def token_rewards(self, batch: RolloutBatch, outcome: torch.Tensor | None = None) -> torch.Tensor:
        """Token-level rewards [B, R]: the outcome (default: batch.rewards) on each
        response's last token, minus kl_coef * KL(old || ref) on every token when
        the KL sits in the reward.

        With `kl_target` set, the adaptive controller (Ziegler et al. 2019) then moves
        kl_coef by comparing the target with the mean per-sequence KL sum, the mean over
        the global batch of sum_t KL_t (also logged as `kl`); verl compares its target
        with the mean of per-token means instead. This step's rewards use the
        coefficient from before the update."""
        r = last_token(batch.rewards if outcome is None else outcome, batch.response_mask)
        mask = batch.response_mask
        c = self.config
        if c.kl_in == "reward" and c.kl_coef > 0:
            kl = torch.where(
                mask.bool(), kl_penalty(batch.old_logprobs, batch.ref_logprobs, c.kl_estimator), 0.0
            )  # [B, R]
            r = r - self.kl_coef * kl
            seq_kl = all_reduce_sum(
                torch.stack([kl.sum().double().cpu(), torch.tensor(float(len(mask)), dtype=torch.float64)])
            )
            batch.metrics["kl"] = float(seq_kl[0] / seq_kl[1])  # mean per-sequence KL, all processes
            batch.metrics["kl_coef"] = self.kl_coef
            if c.kl_target:  # Ziegler et al. 2019
                err = max(-0.2, min(0.2, batch.metrics["kl"] / c.kl_target - 1))
                self.kl_coef *= 1 + err * float(seq_kl[1]) / c.kl_horizon
        return r

    def sequence_rewards(self, batch: RolloutBatch) -> torch.Tensor:
        """R'_i = sum_t of the token rewards [B]: the outcome minus kl_coef * sum_t KL_t
        when the KL sits in the reward, else exactly the outcome. What the group
        baselines (GRPO, DAPO, RLOO, REINFORCE++-baseline) compare, as verl's
        `token_level_rewards.sum(-1)` after `apply_kl_penalty`."""
        return self.token_rewards(batch).sum(-1)

    @property
    def norm_constant(self) -> float | None:
        return self.config.norm_constant or (float(self.max_new_tokens) if self.max_new_tokens else None)


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Algorithm]] = {}


def register_algorithm(name: str):
    """Class decorator: make an Algorithm selectable as `algorithm.name: <name>`."""

    def deco(cls: type[Algorithm]) -> type[Algorithm]:
        if name in _REGISTRY:
            raise ValueError(f"algorithm {name!r} is already registered (by {_REGISTRY[name].__qualname__})")
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"@register_algorithm({name!r}) needs an Algorithm subclass, got {cls!r}")
        _REGISTRY[name] = cls
        return cls

    return deco


def registered_algorithms() -> list[str]:
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> type[Algorithm]:
    """A registered name, or 'package.module:ClassName'."""
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"algorithm.name: cannot import {name!r}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise ValueError(f"algorithm.name: {name!r} is not an Algorithm subclass")
        return cls
    if name not in _REGISTRY:
        _load_plugin(name)  # an installed plugin's entry point (rlvr/plugins.py), imported only now
    if name not in _REGISTRY:
        known = sorted({*_REGISTRY, *plugins.entry_points()})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"algorithm.name: unknown algorithm {name!r}{hint} (known: {', '.join(known)}; "
            "a plugin's module: rlvr train --import MODULE)"
        )
    return _REGISTRY[name]


def _load_plugin(name: str) -> None:
    """Load the `rlvr.algorithms` entry point `name`, if one is installed: an Algorithm class is
    registered under `name`; a module registers its algorithms itself when imported."""
    obj = plugins.load_entry_point(name)
    if isinstance(obj, type) and issubclass(obj, Algorithm) and name not in _REGISTRY:
        _REGISTRY[name] = obj
    elif obj is not None and name not in _REGISTRY:
        raise ValueError(
            f"algorithm.name: the entry point {name!r} (group {plugins.ENTRY_POINT_GROUP}) loaded {obj!r}, which "
            f"is not an Algorithm subclass and registered no algorithm named {name!r}"
        )


def build_algorithm(options: AlgorithmConfig | BaseModel | dict[str, Any], **context: Any) -> Algorithm:
    """Build the algorithm `options` names: a run's validated `cfg.algorithm` (its class's Config,
    used as a copy) or a raw `algorithm:` section (validated here with the class's Config)."""
    name = options.get("name", "") if isinstance(options, dict) else getattr(options, "name", "")
    try:
        cls = get_algorithm(str(name))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        if type(options) is cls.Config:
            cfg = options.model_copy(deep=True)
        else:
            cfg = cls.Config.model_validate(options.model_dump() if isinstance(options, BaseModel) else options)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, cls.Config, prefix="algorithm.")) from None
    try:
        return cls(cfg, **context)
    except ValueError as e:
        raise ConfigError(str(e)) from None
