"""The `reward:` config section, the registry of built-in rewards, and `build_reward`, which makes the sum."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlvr.errors import ConfigError
from rlvr.rewards.adapter import TRL_KEYWORDS, CallableReward
from rlvr.rewards.base import Context, Reward
from rlvr.rewards.codetests import CodeTests
from rlvr.rewards.runner import WeightedReward
from rlvr.rewards.verifiers import MathAccuracy, MathFormat, ReasoningGymReward

BUILTINS: dict[str, type[Reward]] = {
    "reasoning_gym": ReasoningGymReward,
    "math_accuracy": MathAccuracy,
    "math_format": MathFormat,
    "code_tests": CodeTests,
}


class RewardFunctionConfig(BaseModel):
    """One term of the weighted sum: a built-in name or 'module:function', its weight, its options."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(
        description="built-in reward (reasoning_gym, math_accuracy, math_format, code_tests) "
        "or 'module.path:function' with TRL's reward-function signature"
    )
    weight: float = Field(1.0, description="weight of this reward in the sum")

    @model_validator(mode="after")
    def _check(self) -> RewardFunctionConfig:
        options = dict(self.model_extra or {})
        if ":" in self.name:
            if options:
                raise ValueError(
                    f"{self.name!r} is a function by import path; it takes no options (got {', '.join(options)})"
                )
            return self
        if self.name not in BUILTINS:
            import difflib

            close = difflib.get_close_matches(self.name, BUILTINS, n=1)
            raise ValueError(
                f"unknown reward {self.name!r}"
                + (f"; did you mean '{close[0]}'?" if close else "")
                + f" (built in: {', '.join(BUILTINS)}; or 'module.path:function')"
            )
        try:
            BUILTINS[self.name].Options.model_validate(options)
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            allowed = ", ".join(BUILTINS[self.name].Options.model_fields) or "none"
            raise ValueError(f"reward {self.name!r}: {msgs} (options: {allowed})") from None
        return self


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    functions: list[RewardFunctionConfig] = Field(
        default_factory=list,
        description="weighted rewards [{name, weight, options...}]; empty = the data's own: reasoning_gym for "
        "reasoning-gym tasks, code_tests when data has tests, else math_accuracy",
    )
    timeout: float = Field(
        10.0,
        gt=0.0,
        description="seconds per grade (a math-verify call, a program's run, a call of a reward by import path "
        "on a batch); past it the samples score 0, counted in reward/timeouts",
    )
    workers: int = Field(2, ge=1, description="grading processes (math) and sandboxed programs (code) run at once")
    stop_error_frac: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="a batch in which at least this fraction of a reward's samples fail (an error or a timeout) "
        "stops the run with its first error; 1: only when every sample fails",
    )


def build_reward(reward_cfg: RewardConfig, data_cfg: Any) -> WeightedReward:
    """The reward of `reward_cfg` for problems of `data_cfg` (an rlvr.data.DataConfig).

    Raises ConfigError for a function that cannot be imported, or a built-in
    whose input the data does not have (code_tests without tests, ...).
    """
    functions = list(reward_cfg.functions) or [RewardFunctionConfig(name=natural_reward(data_cfg))]
    ctx = Context(
        template=getattr(data_cfg, "template", "plain"), timeout=reward_cfg.timeout, workers=reward_cfg.workers
    )
    components: list[tuple[str, float, Reward]] = []
    used: dict[str, int] = {}
    aliases = _column_names(data_cfg)
    for i, f in enumerate(functions):
        key = f"reward.functions.{i}"
        if ":" in f.name:
            fn = _import_callable(f.name, key)
            reserved = [c for c in getattr(data_cfg, "extra_columns", []) if c in TRL_KEYWORDS]
            if reserved:
                raise ConfigError(
                    f"data.extra_columns: {', '.join(reserved)} would clash with the keyword TRL passes a reward "
                    f"function ({', '.join(TRL_KEYWORDS)}); rename the column"
                )
            reward: Reward = CallableReward(fn, path=f.name, timeout=reward_cfg.timeout, aliases=aliases)
            label = f.name.rsplit(":", 1)[1]
        else:
            cls = BUILTINS[f.name]
            _check_needs(cls, f.name, data_cfg, key)
            reward = cls(ctx, cls.Options.model_validate(dict(f.model_extra or {})))
            label = f.name
        used[label] = used.get(label, 0) + 1
        if used[label] > 1:
            label = f"{label}_{used[label]}"
        components.append((label, f.weight, reward))
    return WeightedReward(components, stop_error_frac=reward_cfg.stop_error_frac)


def _column_names(data_cfg: Any) -> dict[str, str]:
    """{'answer': its file's column, 'tests': ...} for data from a file or the hub, which TRL would pass
    to a reward function under the file's names (a 'solution' column as `solution`)."""
    if getattr(data_cfg, "source", None) not in ("jsonl", "parquet", "hf"):
        return {}
    cols = getattr(data_cfg, "columns", None)
    return {k: v for k in ("answer", "tests") if (v := getattr(cols, k, None))}


def natural_reward(data_cfg: Any) -> str:
    """The data source's own reward, used when reward.functions is empty."""
    source = getattr(data_cfg, "source", "reasoning_gym")
    if source == "reasoning_gym":
        return "reasoning_gym"
    if source == "humaneval" or getattr(getattr(data_cfg, "columns", None), "tests", None):
        return "code_tests"
    return "math_accuracy"


def _check_needs(cls: type[Reward], name: str, data_cfg: Any, key: str) -> None:
    source = getattr(data_cfg, "source", "reasoning_gym")
    if cls.needs == "entry" and source != "reasoning_gym":
        raise ConfigError(f"{key}: reward 'reasoning_gym' scores reasoning-gym problems, but data.source is {source!r}")
    if (
        cls.needs == "tests"
        and source != "humaneval"
        and not getattr(getattr(data_cfg, "columns", None), "tests", None)
    ):
        raise ConfigError(
            f"{key}: reward 'code_tests' needs tests; set data.columns.tests to the column that holds them"
        )


def _import_callable(path: str, key: str) -> Callable[..., Any]:
    mod, _, attr = path.rpartition(":")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:
        raise ConfigError(f"{key}.name: cannot import {path!r}: {type(e).__name__}: {e}") from None
    if not callable(obj):
        raise ConfigError(f"{key}.name: {path!r} is a {type(obj).__name__}, not a function")
    return obj
