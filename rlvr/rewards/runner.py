"""Scoring a batch: the weighted sum of the configured rewards and the runner the trainer calls.

`score_isolated` is the one place a verifier's failure is caught: a reward that
raises (or returns the wrong number of scores) on a batch is asked again sample by
sample, and a sample it still fails on scores 0 and is counted in `errors`. Rewards
that catch a failure themselves (a grading worker's timeout, a sandbox error)
return it in their `Scored`. `RewardRunner` sums the counts into the metrics and
prints each reward's first traceback, once.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from rlvr.rewards.adapter import FunctionReward
from rlvr.rewards.base import Reward, RewardFn, Scored
from rlvr.rewards.verifiers import reasoning_gym_reward
from rlvr.tasks import Problem

if TYPE_CHECKING:  # torch is imported only where tensors are made: grading workers import this package
    import torch


def score_isolated(reward: Reward, problems: list[Problem], completions: list[str]) -> Scored:
    """`reward.score` on the batch, a failure confined to the samples that cause it (scored 0, counted)."""
    try:
        return _checked(reward.score(problems, completions), len(completions))
    except Exception:
        pass
    out = Scored([])
    for p, c in zip(problems, completions, strict=True):
        try:
            s = _checked(reward.score([p], [c]), 1)
        except Exception:
            out.scores.append(0.0)
            out.errors += 1
            out.tracebacks.append(traceback.format_exc())
            continue
        out.scores += s.scores
        out.errors += s.errors
        out.timeouts += s.timeouts
        out.tracebacks += s.tracebacks
    return out


def _checked(s: Scored, n: int) -> Scored:
    if len(s.scores) != n:
        raise ValueError(f"returned {len(s.scores)} scores for {n} completions")
    return s


class WeightedReward:
    """The configured rewards' weighted sum; a `RewardFn`, plus `detailed` for per-reward metrics."""

    def __init__(self, components: list[tuple[str, float, Reward]]):
        self.components = components

    def __call__(self, problems: list[Problem], completions: list[str]) -> list[float]:
        return self.detailed(problems, completions)[0]

    def detailed(self, problems: list[Problem], completions: list[str]) -> tuple[list[float], dict[str, Scored]]:
        """(the weighted sums, each reward's Scored by name); a None score adds nothing."""
        parts: dict[str, Scored] = {}
        totals = [0.0] * len(completions)
        for name, weight, reward in self.components:
            s = parts[name] = score_isolated(reward, problems, completions)
            for i, v in enumerate(s.scores):
                if v is not None:
                    totals[i] += weight * v
        return totals, parts

    def close(self) -> None:
        for _, _, r in self.components:
            r.close()


class RewardRunner:
    """Scores a batch, isolating failures to the sample that caused them.

    `runner(problems, completions)` -> (rewards [B], metrics): `reward/errors`,
    `reward/timeouts`, and for a `build_reward` reward `reward/<name>`, the mean
    of each term (over the samples it scored). Each reward's first failure is
    printed with its traceback, once.
    """

    def __init__(self, fn: RewardFn = reasoning_gym_reward):
        self.fn = fn
        self.errors = 0
        self.timeouts = 0
        self._shown: set[str] = set()

    def __call__(self, problems: list[Problem], completions: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        weighted = isinstance(self.fn, WeightedReward)
        if weighted:
            scores, parts = self.fn.detailed(problems, completions)
        else:  # a plain RewardFn: one term, without a metric of its own
            part = score_isolated(FunctionReward(self.fn), problems, completions)
            scores, parts = part.scores, {"reward": part}
        metrics = {"reward/errors": 0.0, "reward/timeouts": 0.0}
        for name, s in parts.items():
            metrics["reward/errors"] += s.errors
            metrics["reward/timeouts"] += s.timeouts
            if weighted:
                seen = [v for v in s.scores if v is not None]
                metrics[f"reward/{name}"] = sum(seen) / len(seen) if seen else 0.0
            if s.tracebacks:
                self._show_once(name, s.tracebacks[0])
        self.errors += int(metrics["reward/errors"])
        self.timeouts += int(metrics["reward/timeouts"])
        return torch.tensor([0.0 if s is None else float(s) for s in scores]), metrics

    def _show_once(self, name: str, tb: str) -> None:
        if name not in self._shown:
            self._shown.add(name)
            print(f"rlvr: the reward {name!r} failed; scoring that sample 0 (shown once):\n{tb}")
