"""Scoring a batch: the weighted sum of the configured rewards and the runner the trainer calls.

`score_isolated` is the one place a verifier's failure is caught: a reward that
raises (or returns the wrong number of scores) on a batch is asked again sample by
sample, and a sample it still fails on scores 0 and is counted in `errors`. Rewards
that catch a failure themselves (a grading worker's timeout, a sandbox error, a
function's nan or string score) return it in their `Scored`. `RewardRunner` sums the
counts into the metrics and prints each reward's first traceback, once; a reward that
failed on every sample of a batch, or a user's function that failed on any sample of
its first call (a wrong signature, a missing column: a bug, not bad luck), stops the
run (`RewardError`).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from rlvr.errors import RewardError
from rlvr.rewards.adapter import SIGNATURE, CallableReward, FunctionReward, RemoteError
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
        except Exception as e:  # a worker's exception carries the worker's traceback
            out.scores.append(0.0)
            out.errors += 1
            out.tracebacks.append(e.traceback if isinstance(e, RemoteError) else traceback.format_exc())
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
    printed with its traceback, once. Raises `RewardError` for a reward that failed
    on every sample of a batch, or a user's function that failed on any sample of its first call.
    """

    def __init__(self, fn: RewardFn = reasoning_gym_reward):
        self.fn = fn
        self.errors = 0
        self.timeouts = 0
        self._shown: set[str] = set()
        self._called: set[str] = set()

    def __call__(self, problems: list[Problem], completions: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        weighted = isinstance(self.fn, WeightedReward)
        if weighted:
            scores, parts = self.fn.detailed(problems, completions)
        else:  # a plain RewardFn: one term, without a metric of its own
            part = score_isolated(FunctionReward(self.fn), problems, completions)
            scores, parts = part.scores, {"reward": part}
        for name, s in parts.items():
            self.check(name, s, problems)
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

    def check(self, name: str, s: Scored, problems: list[Problem]) -> None:
        """Stop on a broken reward: every sample of the batch failed (an error or a timeout), or
        a user's function (by import path, or a plain RewardFn) raised on any sample of its first
        call. A built-in's error on one sample is the data's (a gold math-verify cannot parse), not a bug."""
        n, first = len(problems), name not in self._called
        self._called.add(name)
        fn = self._function(name)
        user = not isinstance(self.fn, WeightedReward) or isinstance(fn, CallableReward)
        failed = s.errors + s.timeouts
        if n == 0 or not (failed >= n or (first and user and s.errors)):
            return
        what = f"every sample of a batch ({n})" if failed >= n else f"{s.errors} of {n} samples of its first call"
        hint = ""
        tb = (s.tracebacks or [""])[0]
        if isinstance(fn, CallableReward) and "TypeError" in tb and SIGNATURE not in tb:
            hint = f" (a reward by import path is {SIGNATURE}; columns here: {', '.join(fn.columns(problems))})"
        raise RewardError(f"the reward {name!r}{fn_path(fn)} failed on {what}: {first_error(s)}{hint}")

    def _function(self, name: str):
        if isinstance(self.fn, WeightedReward):
            return next((r for n, _, r in self.fn.components if n == name), None)
        return None

    def _show_once(self, name: str, tb: str) -> None:
        if name not in self._shown:
            self._shown.add(name)
            print(f"rlvr: the reward {name!r} failed; scoring that sample 0 (shown once):\n{tb}")


def fn_path(reward) -> str:
    """' (module:function)' for a reward by import path, else ''."""
    path = getattr(reward, "path", None)
    return f" ({path})" if path else ""


_OWN = str(Path(__file__).resolve().parent.parent)
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')


def first_error(s: Scored) -> str:
    """One line for the first failure in `s`: the exception line, after where it was raised
    (`file.py:12 in f`) when it is a traceback."""
    text = (s.tracebacks or ["no reason given"])[0].strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "no reason given"
    frames = [m for line in lines if (m := _FRAME.match(line))]
    where = ""
    if frames and not frames[-1].group(1).startswith(_OWN):  # where the function raised, not our check
        f = frames[-1]
        where = f"{f.group(1).rsplit('/', 1)[-1]}:{f.group(2)} in {f.group(3)}: "
    last = lines[-1].strip()
    return where + (last if len(last) <= 300 else last[:300] + "...")
