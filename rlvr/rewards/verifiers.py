"""The built-in answer verifiers: `reasoning_gym`, `math_accuracy` and `math_format`.

Each reads the answer where the template asks for it (`extract.answer_style`).
math_accuracy grades in `rlvr.workers.WorkerPool` processes, since math-verify's own
time limit (`signal.alarm`) works only on the main thread; a grade past the timeout is killed.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlvr.rewards.base import Context, Reward, Scored
from rlvr.rewards.extract import TAG, answer_style, answer_tag, last_boxed, math_answer
from rlvr.tasks import Problem, score_reasoning_gym

GRADER = "rlvr.rewards.mathgrade:work"  # what math_accuracy's workers import and call


def reasoning_gym_reward(problems: list[Problem], completions: list[str]) -> list[float]:
    """The task's own reasoning-gym `score_answer` on the whole completion (a plain `RewardFn`)."""
    return [score_reasoning_gym(c, p) for p, c in zip(problems, completions, strict=True)]


class _ExtractOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extract: Literal["auto", "none", "boxed", "answer_tag"] = Field(
        "auto", description="what of the completion is the answer; auto: by data.template (plain: all of it)"
    )


class _ReasoningGymOptions(_ExtractOptions):
    binary: bool = Field(
        False,
        description="1 only for a full score, else 0: reasoning-gym's scorers give partial "
        "credit to near misses (chain_sum: '-191' for 191 scores 0.75)",
    )


class ReasoningGymReward(Reward):
    Options = _ReasoningGymOptions
    needs = "entry"

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        how = self.options.extract
        if how == "auto":  # plain asks for no answer form: all of the completion (the tiny model's bare answers)
            how = (
                "none"
                if self.ctx.template == "plain"
                else ("answer_tag" if answer_style(self.ctx.template) == TAG else "boxed")
            )
        out = Scored([])
        for p, c in zip(problems, completions, strict=True):
            answer: str | None = c
            if how == "boxed":
                answer = last_boxed(c) or c
            elif how == "answer_tag":
                answer = answer_tag(c)
            score = 0.0 if answer is None else score_reasoning_gym(answer, p)
            out.scores.append(float(score >= 1.0) if self.options.binary else score)
        return out


class _TimeoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float | None = Field(None, gt=0.0, description="seconds per grade; default reward.timeout")


class MathAccuracy(Reward):
    Options = _TimeoutOptions
    needs = "answer"

    def __init__(self, ctx: Context, options: BaseModel):
        super().__init__(ctx, options)
        from rlvr.rewards.mathgrade import Grades
        from rlvr.workers import WorkerPool

        self.pool = WorkerPool(
            GRADER, workers=ctx.workers, timeout=options.timeout or ctx.timeout, warmup=("grade", "1", "\\boxed{1}")
        )
        self.grades = Grades(self.pool)  # each distinct extracted answer of a problem graded once

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        out = Scored([0.0] * len(completions))
        jobs, where = [], []
        style = answer_style(self.ctx.template)
        for i, (p, c) in enumerate(zip(problems, completions, strict=True)):
            answer = math_answer(c, style)
            if answer:  # no answer at all scores 0 without a grade
                jobs.append((p.metadata.get("answer", p.answer), answer))
                where.append(i)
        for i, (status, value) in zip(where, self.grades.grade(jobs), strict=True):
            if status == "ok":
                out.scores[i] = float(value)
            elif status == "timeout":
                out.timeouts += 1
            else:
                out.errors += 1
                out.tracebacks.append(str(value))
        return out

    def close(self) -> None:
        self.pool.close()


_TAG_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?\S.*?</answer>\s*$", re.S)


class _FormatOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    style: Literal["auto", "boxed", "r1"] = Field(
        "auto",
        description="boxed: a non-empty \\boxed{}; r1: <think></think> <answer></answer>; auto: by data.template",
    )


class MathFormat(Reward):
    Options = _FormatOptions

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        style = self.options.style
        if style == "auto":
            style = answer_style(self.ctx.template)
        if style == TAG:
            return Scored([float(bool(_TAG_FORMAT.match(c))) for c in completions])
        return Scored([float(bool((last_boxed(c) or "").strip())) for c in completions])
