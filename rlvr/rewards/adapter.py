"""Functions as rewards: TRL's reward-function convention (`CallableReward`) and a plain `RewardFn`.

A function named by import path runs in a worker process (`rlvr.workers.WorkerPool`), so that
`reward.timeout` bounds each call: a hung function is killed, its samples count as timeouts.
Its results are checked per sample: a score must be a finite number or None (TRL's "no
opinion"); anything else (a string, nan, inf) scores 0 and counts as an error of that sample.
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
from typing import Any, Callable

from rlvr.rewards.base import Reward, RewardFn, Scored
from rlvr.tasks import Problem

SIGNATURE = "f(prompts, completions, **columns) -> list[float | None]"


class RemoteError(Exception):
    """A reward's exception in its worker process: `traceback` is the worker's traceback text."""

    def __init__(self, traceback: str):
        super().__init__(traceback.strip().splitlines()[-1] if traceback.strip() else "the reward failed")
        self.traceback = traceback


class CallableReward(Reward):
    """A TRL-convention function `f(prompts, completions, **columns) -> list[float | None]`.

    The columns: `answer`, `tests`, `entry` (reasoning-gym) and `data.extra_columns`. With
    `path` ('module:function') each call runs in a worker process bounded by `timeout` seconds.
    """

    def __init__(self, fn: Callable[..., Any], path: str | None = None, timeout: float = 10.0):
        self.fn, self.path, self.timeout = fn, path, timeout
        self.pool = None
        if path is not None:
            from rlvr.workers import WorkerPool

            # trusted code, so no memory limit; one worker: each call is a whole batch
            self.pool = WorkerPool(
                "rlvr.rewards.adapter:call_by_path", workers=1, timeout=timeout, warmup=[path], memory_mb=0
            )

    def columns(self, problems: list[Problem]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {"answer": [p.metadata.get("answer", p.answer) for p in problems]}
        if any(p.metadata.get("tests") is not None for p in problems):
            columns["tests"] = [p.metadata.get("tests") for p in problems]
        if any("entry" in p.metadata for p in problems):
            columns["entry"] = [p.metadata.get("entry") for p in problems]
        for name in dict.fromkeys(k for p in problems for k in p.metadata.get("columns", {})):
            columns[name] = [p.metadata.get("columns", {}).get(name) for p in problems]
        return columns

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        prompts, completions, columns = [p.prompt for p in problems], list(completions), self.columns(problems)
        if self.pool is not None and _portable(columns):
            status, value = self.pool.call([self.path, prompts, completions, columns])
            if status == "timeout":
                reason = f"timed out after {self.timeout:g}s (reward.timeout)"
                return Scored([0.0] * len(completions), timeouts=len(completions), tracebacks=[reason])
            if status != "ok":
                raise RemoteError(str(value))
        else:  # a plain function, or columns JSON cannot carry to a worker: called here, unbounded
            value = checked_scores(self.fn(prompts=prompts, completions=completions, **columns))
        return _scored(value, len(completions))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _portable(columns: dict[str, Any]) -> bool:
    try:
        json.dumps(columns)
    except (TypeError, ValueError):
        return False
    return True


def checked_scores(out: Any) -> dict[str, Any]:
    """A function's result made JSON-safe: {'scores': [...]} with each bad item's reason in 'bad'
    ({index: reason}), or {'error': reason} when it is not a list of scores at all."""
    if isinstance(out, (str, bytes, dict)) or not hasattr(out, "__iter__"):
        return {"error": f"returned {type(out).__name__} {_short(out)}, not a list of scores"}
    scores: list[float | None] = []
    bad: dict[int, str] = {}
    for i, x in enumerate(out):
        v = None
        if x is not None:
            try:
                v = float(x) if not isinstance(x, (str, bytes)) else None
            except (TypeError, ValueError):
                v = None
            if v is None or not math.isfinite(v) or not _numeric(x):
                bad[i] = f"returned {type(x).__name__} {_short(x)} for sample {i}, not a finite number or None"
                v = 0.0
        scores.append(v)
    return {"scores": scores, "bad": bad}


def _numeric(x: Any) -> bool:
    return isinstance(x, numbers.Real) or (hasattr(x, "item") and hasattr(x, "__float__"))


def _short(x: Any) -> str:
    s = repr(x)
    return f"({s[:60]}...)" if len(s) > 60 else f"({s})"


def _scored(value: dict[str, Any], n: int) -> Scored:
    if "error" in value:
        raise TypeError(f"{value['error']} (a reward by import path is {SIGNATURE})")
    scores, bad = value["scores"], value["bad"]
    if len(scores) != n:
        raise ValueError(f"returned {len(scores)} scores for {n} completions")
    return Scored(scores, errors=len(bad), tracebacks=list(bad.values()))


_FNS: dict[str, Callable[..., Any]] = {}


def call_by_path(path: str, prompts: list[str] | None = None, completions: list[str] | None = None, columns=None):
    """Worker side: import `path` ('module:function') once; call it TRL-style and check its result
    (`checked_scores`). Without prompts it only imports (the worker's warm-up)."""
    if path not in _FNS:
        mod, _, attr = path.rpartition(":")
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        _FNS[path] = obj
    if prompts is None:
        return None
    return checked_scores(_FNS[path](prompts=prompts, completions=completions, **(columns or {})))


class FunctionReward(Reward):
    """A plain `RewardFn`, `f(problems, completions) -> list[float]`, as a Reward."""

    def __init__(self, fn: RewardFn):
        self.fn = fn

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        return _scored(checked_scores(self.fn(problems, completions)), len(completions))
