"""The eval's settings: one type, one set of defaults, used by training, `rlvr eval` and sweeps.

`EvalSettings` is what `rlvr.eval.evaluate` takes. The run config's `eval:` section
(`rlvr.config.EvalConfig`) extends it with when to evaluate during training; the
flags of `rlvr eval` are generated from its fields (`add_arguments`), and a sweep's
`eval:` section is `EvalOverrides`, the same fields, each optional (unset = the
recipe's). Defaults are the paper's protocol (Yue et al. 2025: temperature 0.6,
top-p 0.95); a recipe that evaluates otherwise says so (the tiny recipes sample at
1.0, as they train).
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = ["EvalOverrides", "EvalSettings", "add_arguments", "overrides_from_args", "to_arguments"]


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    n: int = Field(4, ge=1, description="samples per held-out problem")
    temperature: float = Field(0.6, ge=0.0, description="eval sampling temperature (the paper's: 0.6); 0 means greedy")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="eval nucleus sampling mass (the paper's: 0.95)")
    max_new_tokens: Optional[int] = Field(
        None, ge=1, description="eval response length in tokens; null = rollout.max_new_tokens"
    )
    seed: int = Field(
        0,
        description="seed of the eval's sampling and bootstrap; independent of train.seed, so runs of any training seed are measured on the same draws and share the base's cached samples",
    )
    problems: Optional[int] = Field(
        None, ge=1, description="evaluate only the first N held-out problems; null = all of data.eval_size"
    )
    K: int = Field(256, ge=1, description="K of the sampling-efficiency gap pass@K(base) - pass@1(model); clipped to n")
    threshold: float = Field(1.0, description="a sample counts as correct when its reward >= threshold")
    resamples: int = Field(1000, ge=10, description="bootstrap resamples for the intervals")
    perplexity: bool = Field(True, description="perplexity cross-terms of model and base (full eval only)")
    ppl_per_problem: int = Field(4, ge=1, description="samples per problem scored in the perplexity cross-terms")
    batch_size: Optional[int] = Field(
        None,
        ge=1,
        description="sequences per generate() call; null = rollout.generation_batch_size. It decides which problems share a call, so it is part of the base cache key",
    )
    sampler: str = Field(
        "lean",
        pattern="^(hf|shared_prefill|lean)$",
        description="how the hf engine samples (rlvr/sampler.py): lean (each prompt prefilled once, one forward per distinct prefix a step, one uniform per token: generate's distribution, other draws, fastest), shared_prefill (each prompt prefilled once: generate's draws, byte for byte) or hf (transformers generate on n copies of each prompt); lean's base samples are cached apart; not used by vllm",
    )

    def sampling_key(self) -> dict[str, Any]:
        """The settings that decide which samples are drawn (the rest only change the metrics)."""
        return {k: getattr(self, k) for k in ("n", "temperature", "top_p", "max_new_tokens", "seed")}


def _optional(name: str, f) -> tuple[Any, Any]:
    from pydantic.fields import FieldInfo

    info = FieldInfo.merge_field_infos(
        f, default=None, description=f"{f.description} (unset: the recipe's eval.{name})"
    )
    return Optional[f.annotation], info


# A sweep's `eval:` section: any EvalSettings field, unset = the cell recipe's own.
EvalOverrides = create_model(
    "EvalOverrides",
    __config__=ConfigDict(extra="forbid"),
    **{name: _optional(name, f) for name, f in EvalSettings.model_fields.items()},
)
EvalOverrides.__doc__ = "Optional overrides of EvalSettings; unset fields keep the run config's eval settings."


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-") if name != "K" else "--K"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per EvalSettings field (`--top-p`, `--no-perplexity`, ...), default unset (the config's)."""
    for name, f in EvalSettings.model_fields.items():
        ann = f.annotation
        inner = next((a for a in getattr(ann, "__args__", (ann,)) if a is not type(None)), ann)
        if inner is bool:
            parser.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=f.description
            )
        else:
            parser.add_argument(_flag(name), dest=name, type=inner, default=None, help=f.description)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The EvalSettings flags that were given."""
    return {name: getattr(args, name) for name in EvalSettings.model_fields if getattr(args, name, None) is not None}


def to_arguments(overrides: dict[str, Any]) -> list[str]:
    """The `rlvr eval` flags for these overrides (the inverse of `overrides_from_args`)."""
    out = []
    for name, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out.append(_flag(name) if v else "--no-" + _flag(name)[2:])
        else:
            out.append(f"{_flag(name)}={v}")
    return out
