"""Functions as rewards: TRL's reward-function convention (`CallableReward`) and a plain `RewardFn`."""

from __future__ import annotations

from typing import Any, Callable

from rlvr.rewards.base import Reward, RewardFn, Scored
from rlvr.tasks import Problem


class CallableReward(Reward):
    """A TRL-convention function `f(prompts, completions, **columns) -> list[float | None]`.

    The columns: `answer`, `tests`, `entry` (reasoning-gym) and `data.extra_columns`.
    """

    def __init__(self, fn: Callable[..., list[float | None]]):
        self.fn = fn

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        columns: dict[str, list[Any]] = {"answer": [p.metadata.get("answer", p.answer) for p in problems]}
        if any(p.metadata.get("tests") is not None for p in problems):
            columns["tests"] = [p.metadata.get("tests") for p in problems]
        if any("entry" in p.metadata for p in problems):
            columns["entry"] = [p.metadata.get("entry") for p in problems]
        for name in dict.fromkeys(k for p in problems for k in p.metadata.get("columns", {})):
            columns[name] = [p.metadata.get("columns", {}).get(name) for p in problems]
        scores = self.fn(prompts=[p.prompt for p in problems], completions=list(completions), **columns)
        return Scored([None if s is None else float(s) for s in scores])


class FunctionReward(Reward):
    """A plain `RewardFn`, `f(problems, completions) -> list[float]`, as a Reward."""

    def __init__(self, fn: RewardFn):
        self.fn = fn

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        return Scored(list(self.fn(problems, completions)))
