"""What every reward is: `RewardFn`, the `Reward` base of the built-ins, and `Scored`, one reward's verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from rlvr.tasks import Problem

RewardFn = Callable[[list[Problem], list[str]], list[float]]


@dataclass
class Scored:
    """One reward's verdicts on a batch, with what went wrong (None: no opinion, adds nothing)."""

    scores: list[float | None]
    errors: int = 0
    timeouts: int = 0
    tracebacks: list[str] = field(default_factory=list)
    logged: dict[str, list[float]] = field(default_factory=dict)  # a TRL function's log_metric calls
    extra_columns: list[str] = field(default_factory=list)  # the columns it gave log_extra


@dataclass
class Context:
    """What a built-in reward knows of the run: the prompt template, `reward.timeout`, `reward.workers`."""

    template: str
    timeout: float
    workers: int


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reward:
    """A reward: `score(problems, completions) -> Scored`, one score per completion.

    `score` may raise: rlvr.rewards.runner isolates the failure to the samples that
    cause it. A failure it catches itself (a grading worker's timeout, a sandbox
    error) it returns in the Scored, counted.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions
    needs: ClassVar[str] = ""  # what the data must provide, checked in build_reward

    def __init__(self, ctx: Context, options: BaseModel):
        self.ctx, self.options = ctx, options

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        raise NotImplementedError

    def close(self) -> None:
        pass
