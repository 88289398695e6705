"""Scoring a batch: the weighted sum of the configured rewards and the runner the trainer calls.

`score_isolated` is the one place a verifier's failure is caught: a reward that
raises (or returns the wrong number of scores) on a batch is asked again sample by
sample, and a sample it still fails on scores 0 and is counted in `errors`. Rewards
that catch a failure themselves (a grading worker's timeout, a sandbox error, a
function's nan or string score) return it in their `Scored`. `RewardRunner` sums the
counts into the metrics and prints each reward's first traceback, once; a reward that
failed on `reward.stop_error_frac` of a batch's samples (default 1: every one), or a
user's function that failed on any sample of its first call (a wrong signature, a
missing column: a bug, not bad luck), stops the run (`RewardError`).

A TRL function (`CallableReward`) also gets each sample's `completion_ids` and the
`trainer_state`, which the runner takes per call; what it logs with `log_metric` is
logged as `reward/<name>/<metric>`.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr.errors import RewardError
from rlvr.rewards.adapter import SIGNATURE, TRL_KEYWORDS, CallableReward, FunctionReward, RemoteError, TrainerState
from rlvr.rewards.base import Reward, RewardFn, Scored
from rlvr.rewards.verifiers import reasoning_gym_reward
from rlvr.tasks import Problem

if TYPE_CHECKING:  # torch is imported only where tensors are made: grading workers import this package
    import torch


def score_isolated(
    reward: Reward, problems: list[Problem], completions: list[str], trl: dict[str, Any] | None = None
) -> Scored:
    """`reward.score` on the batch, a failure confined to the samples that cause it (scored 0, counted).
    `trl`: what a TRL function takes besides ({'completion_ids': [...], 'trainer_state': ...})."""
    trl = trl or {}

    def score(i: slice) -> Scored:
        if not getattr(reward, "trl", False):
            return reward.score(problems[i], completions[i])
        kw = {k: v[i] if k == "completion_ids" and v is not None else v for k, v in trl.items()}
        return reward.score(problems[i], completions[i], **kw)

    try:
        return _checked(score(slice(None)), len(completions))
    except Exception:
        pass
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems for {len(completions)} completions")
    out = Scored([])
    for j in range(len(completions)):
        try:
            s = _checked(score(slice(j, j + 1)), 1)
        except Exception as e:  # a worker's exception carries the worker's traceback
            out.scores.append(0.0)
            out.errors += 1
            out.tracebacks.append(e.traceback if isinstance(e, RemoteError) else traceback.format_exc())
            continue
        out.scores += s.scores
        out.errors += s.errors
        out.timeouts += s.timeouts
        out.tracebacks += s.tracebacks
        for k, v in s.logged.items():
            out.logged.setdefault(k, []).extend(v)
        out.extra_columns += [x for x in s.extra_columns if x not in out.extra_columns]
    return out


def _checked(s: Scored, n: int) -> Scored:
    if len(s.scores) != n:
        raise ValueError(f"returned {len(s.scores)} scores for {n} completions")
    return s


class WeightedReward:
    """The configured rewards' weighted sum; a `RewardFn`, plus `detailed` for per-reward metrics."""

    def __init__(self, components: list[tuple[str, float, Reward]], stop_error_frac: float = 1.0):
        self.components = components
        self.stop_error_frac = stop_error_frac  # read by RewardRunner

    def __call__(self, problems: list[Problem], completions: list[str]) -> list[float]:
        return self.detailed(problems, completions)[0]

    def detailed(
        self, problems: list[Problem], completions: list[str], **trl: Any
    ) -> tuple[list[float], dict[str, Scored]]:
        """(the weighted sums, each reward's Scored by name); a None score adds nothing. `trl`:
        completion_ids and trainer_state, for the TRL functions."""
        parts: dict[str, Scored] = {}
        totals = [0.0] * len(completions)
        for name, weight, reward in self.components:
            s = parts[name] = score_isolated(reward, problems, completions, trl)
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
    printed with its traceback, once. Raises `RewardError` for a reward that failed on
    `stop_error_frac` of a batch's samples (1: every one), or a user's function that failed on
    any sample of its first call.

    `completion_ids` (each sample's response token ids) and `trainer_state` go to TRL functions;
    the last trainer_state given is kept for later calls without one (an eval within training).
    """

    def __init__(self, fn: RewardFn = reasoning_gym_reward, stop_error_frac: float | None = None):
        self.fn = fn
        self.stop_error_frac = stop_error_frac if stop_error_frac is not None else getattr(fn, "stop_error_frac", 1.0)
        self.trainer_state = TrainerState()
        self.errors = 0
        self.timeouts = 0
        self._shown: set[str] = set()
        self._called: set[str] = set()
        self._extra_noted: set[str] = set()

    def __call__(
        self,
        problems: list[Problem],
        completions: list[str],
        *,
        completion_ids: list[list[int]] | None = None,
        trainer_state: TrainerState | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        if trainer_state is not None:
            self.trainer_state = trainer_state
        weighted = isinstance(self.fn, WeightedReward)
        if weighted:
            trl = {"completion_ids": completion_ids, "trainer_state": self.trainer_state}
            scores, parts = self.fn.detailed(problems, completions, **trl)
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
            for k, v in s.logged.items():  # TRL's log_metric: averaged over the batch's calls
                metrics[f"reward/{name}/{k}"] = sum(v) / len(v)
            if s.extra_columns and name not in self._extra_noted:
                self._extra_noted.add(name)
                print(
                    f"rlvr: the reward {name!r} logged columns with log_extra ({', '.join(s.extra_columns)}); "
                    "rlvr keeps no completions table, so they are not kept (log_metric values are)"
                )
            if s.tracebacks:
                self._show_once(name, s.tracebacks[0])
        self.errors += int(metrics["reward/errors"])
        self.timeouts += int(metrics["reward/timeouts"])
        return torch.tensor([0.0 if s is None else float(s) for s in scores]), metrics

    def check(self, name: str, s: Scored, problems: list[Problem]) -> None:
        """Stop on a broken reward: at least `stop_error_frac` of the batch's samples failed (an error
        or a timeout; 1: every one), or a user's function (by import path, or a plain RewardFn) raised
        on any sample of its first call. A built-in's error on one sample is the data's (a gold
        math-verify cannot parse), not a bug."""
        n, first = len(problems), name not in self._called
        self._called.add(name)
        fn = self._function(name)
        user = not isinstance(self.fn, WeightedReward) or isinstance(fn, CallableReward)
        failed = s.errors + s.timeouts
        too_many = failed > 0 and failed >= self.stop_error_frac * n - 1e-9
        if n == 0 or not (too_many or (first and user and s.errors)):
            return
        if failed >= n:
            what = f"every sample of a batch ({n})"
        elif too_many:
            what = f"{failed} of {n} samples of a batch (reward.stop_error_frac={self.stop_error_frac:g})"
        else:
            what = f"{s.errors} of {n} samples of its first call"
        hint = ""
        tb = (s.tracebacks or [""])[0]
        if isinstance(fn, CallableReward) and "TypeError" in tb and SIGNATURE not in tb:
            hint = (
                f" (a reward by import path is {SIGNATURE}; columns here: {', '.join(fn.columns(problems))}; "
                f"TRL's keywords too: {', '.join(TRL_KEYWORDS)})"
            )
        raise RewardError(f"the reward {name!r}{fn_path(fn)} failed on {what}: {first_error(s)}{hint}")

    def _function(self, name: str):
        if isinstance(self.fn, WeightedReward):
            return next((r for n, _, r in self.fn.components if n == name), None)
        return None

    def _show_once(self, name: str, tb: str) -> None:
        if name not in self._shown:
            self._shown.add(name)
            print(f"rlvr: the reward {name!r} failed; scoring that sample 0 (shown once):\n{tb}")


def completion_id_lists(batch: Any) -> list[list[int]] | None:
    """Each sample's response token ids in a RolloutBatch, its eos included and padding left out
    (TRL's `completion_ids`); None for a batch without token ids (an OpenAI server's: prompt_len 0)."""
    if batch.prompt_len == 0:
        return None
    ids, mask = batch.response_ids.cpu(), batch.response_mask.cpu().bool()
    return [row[m].tolist() for row, m in zip(ids, mask, strict=True)]


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
