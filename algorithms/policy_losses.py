"""Policy losses, selectable with `algorithm.policy_loss`, composable with any advantage estimator.

An algorithm's advantage and its policy loss are separate choices (verl's `adv_estimator` and
`policy_loss.loss_mode`): GRPO's advantage with GSPO's sequence-level ratio, RLOO's with CISPO's
clipped weight. `algorithm.policy_loss` names a registered loss, or a mapping with its name and
its own options:

    algorithm: {name: grpo, policy_loss: gspo}
    algorithm: {name: rloo, policy_loss: {name: clip_cov, ratio: 0.001}}

The default, `ppo`, is the PPO-clipped surrogate every algorithm used before this option existed
(`rlvr.losses.clipped_pg_loss`, aggregated by `algorithm.loss_agg`), computed by the same calls.

A loss is a `PolicyLoss` subclass registered with `@register_policy_loss(name)`: it declares its
own options (`Options`, a pydantic model; unknown keys are errors naming
`algorithm.policy_loss.<key>`), the algorithm-level options it reads (`reads`: which of
clip_low / clip_high / clip_c / loss_agg; a loss with its own clip range refuses an algorithm
clip set away from its default, so that a setting never silently does nothing), and `__call__`,
which returns this micro-batch's share of the minibatch loss (global normalisers from
`agg_kw`) and token-mean metrics. One file per loss in `algorithms/`. `token_weights_exact` says
whether weighting A_it weights token (i, t)'s loss and nothing else; `rollout.is_correction`
(which weights the advantages) is refused at config load for a loss where it does not.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from rlvr.errors import ConfigError, format_validation_error
from rlvr.losses import agg_loss, clipped_pg_loss

__all__ = ["NoOptions", "PolicyLoss", "build_policy_loss", "register_policy_loss", "registered_policy_losses"]

# the algorithm-level options a loss may read (AlgorithmConfig fields)
ALGORITHM_OPTIONS = ("clip_low", "clip_high", "clip_c", "loss_agg")


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyLoss:
    """Base class: set `Options` and `reads`, implement `__call__`."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    reads: ClassVar[frozenset[str]] = frozenset()  # of ALGORITHM_OPTIONS
    name: ClassVar[str] = ""
    # whether multiplying A_it by a positive weight w_it multiplies token (i, t)'s loss by w_it and changes
    # nothing else: what `rollout.is_correction: token_tis` relies on (it weights the advantages, rlvr/mismatch.py)
    token_weights_exact: ClassVar[bool] = False

    def __init__(self, options: BaseModel, algo_config: Any):
        self.options = options
        self.algo = algo_config  # the AlgorithmConfig: clip_low, clip_high, clip_c, loss_agg (as `reads` says)

    def check_token_weights(self, is_correction: str) -> None:
        """Raise ConfigError if `rollout.is_correction` would weight this loss's tokens only approximately."""
        if is_correction != "none" and not self.token_weights_exact:
            exact = ", ".join(n for n, c in sorted(_LOSSES.items()) if c.token_weights_exact)
            raise ConfigError(
                f"rollout.is_correction={is_correction} weights the advantages, which weights each token's loss "
                f"only for the policy losses {exact}; algorithm.policy_loss {self.name!r} uses the advantages "
                "otherwise (covariances, sequence means): use one of those or rollout.is_correction=none"
            )

    def __call__(
        self,
        logprob: torch.Tensor,  # [B, T] current policy, with grad
        old_logprob: torch.Tensor,  # [B, T]
        advantages: torch.Tensor,  # [B, T]
        mask: torch.Tensor,  # [B, T]
        agg_kw: dict[str, Any],  # global_tokens, global_seqs, norm_constant for agg_loss
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


_LOSSES: dict[str, type[PolicyLoss]] = {}


def register_policy_loss(name: str):
    """Class decorator: make a PolicyLoss selectable as `algorithm.policy_loss: <name>`."""

    def deco(cls: type[PolicyLoss]) -> type[PolicyLoss]:
        if name in _LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered (by {_LOSSES[name].__qualname__})")
        if not (isinstance(cls, type) and issubclass(cls, PolicyLoss)):
            raise TypeError(f"@register_policy_loss({name!r}) needs a PolicyLoss subclass, got {cls!r}")
        unknown = set(cls.reads) - set(ALGORITHM_OPTIONS)
        if unknown:
            raise ValueError(f"policy loss {name!r} reads unknown algorithm options {sorted(unknown)}")
        cls.name = name
        _LOSSES[name] = cls
        return cls

    return deco


def registered_policy_losses() -> list[str]:
    return sorted(_LOSSES)


def build_policy_loss(spec: str | dict[str, Any], algo_config: Any) -> PolicyLoss:
    """The loss `spec` names (a name, or {name: ..., **options}) for this algorithm config.
    Raises ValueError naming the key (algorithm.policy_loss[.option]) for a bad spec."""
    if isinstance(spec, str):
        name, raw = spec, {}
    else:
        raw = dict(spec)
        name = raw.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(
                "algorithm.policy_loss.name: missing; e.g. {name: clip_cov, ratio: 0.0002} (a dotted option such as "
                "algorithm.policy_loss.ratio=... needs the recipe's loss written as a mapping with its name, or "
                "write the whole loss: 'algorithm.policy_loss={name: clip_cov, ratio: 0.001}')"
            )
    if name not in _LOSSES:
        close = difflib.get_close_matches(name, _LOSSES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"algorithm.policy_loss: unknown policy loss {name!r}{hint} (known: {', '.join(registered_policy_losses())})"
        )
    cls = _LOSSES[name]
    try:
        options = cls.Options.model_validate(raw)
    except ValidationError as e:
        raise ValueError(format_validation_error(e, cls.Options, prefix="algorithm.policy_loss.")) from None
    # an algorithm-level option this loss does not read, set away from the algorithm's default, would do nothing
    fields = type(algo_config).model_fields
    for key in ALGORITHM_OPTIONS:
        if key in cls.reads or key not in fields:
            continue
        if getattr(algo_config, key) != fields[key].default:
            own = (
                f"; set algorithm.policy_loss: {{name: {name}, {key}: ...}}" if key in cls.Options.model_fields else ""
            )
            raise ValueError(
                f"algorithm.{key}={getattr(algo_config, key)!r} is not read by policy loss {name!r} "
                f"(it reads: {', '.join(sorted(cls.reads)) or 'none of the algorithm-level options'}){own}"
            )
    return cls(options, algo_config)


@register_policy_loss("ppo")
class PPOClipLoss(PolicyLoss):
    """The PPO clipped surrogate (verl `vanilla`): `rlvr.losses.clipped_pg_loss` with the algorithm's
    clip_low / clip_high / dual clip_c, aggregated by `algorithm.loss_agg` (ALGORITHMS.md)."""

    reads = frozenset({"clip_low", "clip_high", "clip_c", "loss_agg"})
    token_weights_exact = True  # max / min of terms linear in A: w > 0 factors out

    def __call__(self, logprob, old_logprob, advantages, mask, agg_kw):
        c = self.algo
        pg, metrics = clipped_pg_loss(
            logprob, old_logprob, advantages, mask, clip_low=c.clip_low, clip_high=c.clip_high, clip_c=c.clip_c
        )
        return agg_loss(pg, mask, c.loss_agg, **agg_kw), metrics
