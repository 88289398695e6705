"""Functions as rewards: TRL's reward-function convention (`CallableReward`) and a plain `RewardFn`.

A TRL function gets the keywords TRL 1.16's GRPOTrainer passes (`_calculate_rewards`): `prompts`,
`completions`, `completion_ids` (each sample's response token ids, its eos included), every
dataset column by name, `trainer_state`, `log_extra` and `log_metric`. Under the chat template
(`data.template: chat`) prompts and completions are TRL's conversational format: a prompt is its
message list, a completion `[{"role": "assistant", "content": text}]`; otherwise both are strings.

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
from dataclasses import asdict, dataclass
from typing import Any, Callable

from rlvr.rewards.base import Reward, RewardFn, Scored
from rlvr.tasks import Problem
from rlvr.templates import chat_messages

SIGNATURE = "f(prompts, completions, **columns) -> list[float | None]"
# the keywords TRL's GRPOTrainer passes besides the dataset columns (TRL leaves out prompt, completion, completion_ids)
TRL_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")


@dataclass
class TrainerState:
    """`trainer_state`: the fields of transformers' TrainerState (what TRL passes) that rlvr knows.
    global_step: optimizer steps done; max_steps: train.steps; epoch: passes over the training
    problems done. Outside training (rlvr eval) all zero; evals in training see the last step's."""

    global_step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True


class RemoteError(Exception):
    """A reward's exception in its worker process: `traceback` is the worker's traceback text."""

    def __init__(self, traceback: str):
        super().__init__(traceback.strip().splitlines()[-1] if traceback.strip() else "the reward failed")
        self.traceback = traceback


class CallableReward(Reward):
    """A TRL-convention function `f(prompts, completions, **columns) -> list[float | None]`.

    The columns: `answer`, `tests`, `entry` (reasoning-gym) and `data.extra_columns`, and the
    answer and tests again under their file's column names (`aliases`: {'answer': 'solution'}),
    as TRL passes a dataset's columns. With `path` ('module:function') each call runs in a worker
    process bounded by `timeout` seconds.
    """

    trl = True  # score() takes completion_ids and trainer_state (rlvr.rewards.runner.score_isolated)

    def __init__(
        self,
        fn: Callable[..., Any],
        path: str | None = None,
        timeout: float = 10.0,
        aliases: dict[str, str] | None = None,
    ):
        self.fn, self.path, self.timeout = fn, path, timeout
        self.aliases = {k: v for k, v in (aliases or {}).items() if v and v != k}
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
        for ours, theirs in self.aliases.items():
            if ours in columns:
                columns[theirs] = columns[ours]
        for name in dict.fromkeys(k for p in problems for k in p.metadata.get("columns", {})):
            columns[name] = [p.metadata.get("columns", {}).get(name) for p in problems]
        return columns

    def keywords(
        self,
        problems: list[Problem],
        completions: list[str],
        completion_ids: list[list[int]] | None = None,
        trainer_state: TrainerState | None = None,
    ) -> dict[str, Any]:
        """What TRL passes a reward function, but log_extra and log_metric (made where it runs, `call_trl`);
        trainer_state as a dict. Conversational under the chat template. No completion_ids where they are
        not known (samples scored from text: rlvr eval --samples, --server)."""
        chat = bool(problems) and all(p.metadata.get("template") == "chat" for p in problems)
        if chat:
            prompts: list[Any] = [chat_messages(p.metadata.get("question", p.prompt)) for p in problems]
            texts: list[Any] = [[{"role": "assistant", "content": c}] for c in completions]
        else:
            prompts, texts = [p.prompt for p in problems], list(completions)
        kw: dict[str, Any] = {**self.columns(problems), "prompts": prompts, "completions": texts}
        if completion_ids is not None:
            kw["completion_ids"] = [[int(t) for t in ids] for ids in completion_ids]
        kw["trainer_state"] = asdict(trainer_state or TrainerState())
        return kw

    def score(
        self,
        problems: list[Problem],
        completions: list[str],
        completion_ids: list[list[int]] | None = None,
        trainer_state: TrainerState | None = None,
    ) -> Scored:
        kw = self.keywords(problems, completions, completion_ids, trainer_state)
        if self.pool is not None and _portable(kw):
            status, value = self.pool.call([self.path, kw])
            if status == "timeout":
                reason = f"timed out after {self.timeout:g}s (reward.timeout)"
                return Scored([0.0] * len(completions), timeouts=len(completions), tracebacks=[reason])
            if status != "ok":
                raise RemoteError(str(value))
        else:  # a plain function, or columns JSON cannot carry to a worker: called here, unbounded
            value = call_trl(self.fn, kw)
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
    return Scored(
        scores,
        errors=len(bad),
        tracebacks=list(bad.values()),
        logged=value.get("logged", {}),
        extra_columns=value.get("extra_columns", []),
    )


def call_trl(fn: Callable[..., Any], kw: dict[str, Any]) -> dict[str, Any]:
    """`fn(**kw)` as TRL calls it, trainer_state made an object again, with `log_metric(name, value)`
    and `log_extra(column, values)`: the result checked (`checked_scores`), plus 'logged' ({metric:
    [values]}) and 'extra_columns' (the names given to log_extra)."""
    logged: dict[str, list[float]] = {}
    extra: list[str] = []

    def log_metric(name: str, value: float) -> None:
        logged.setdefault(str(name), []).append(float(value))

    def log_extra(column: str, values: list) -> None:
        if str(column) not in extra:
            extra.append(str(column))

    kw = {**kw, "trainer_state": TrainerState(**kw.get("trainer_state", {}))}
    out = checked_scores(fn(**kw, log_extra=log_extra, log_metric=log_metric))
    out.update(logged=logged, extra_columns=extra)
    return out


_FNS: dict[str, Callable[..., Any]] = {}


def call_by_path(path: str, kw: dict[str, Any] | None = None):
    """Worker side: import `path` ('module:function') once; call it TRL-style with the keywords `kw`
    (`CallableReward.keywords`) and check its result (`call_trl`). Without `kw` it only imports (the
    worker's warm-up)."""
    if path not in _FNS:
        mod, _, attr = path.rpartition(":")
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        _FNS[path] = obj
    if kw is None:
        return None
    return call_trl(_FNS[path], kw)


class FunctionReward(Reward):
    """A plain `RewardFn`, `f(problems, completions) -> list[float]`, as a Reward."""

    def __init__(self, fn: RewardFn):
        self.fn = fn

    def score(self, problems: list[Problem], completions: list[str]) -> Scored:
        return _scored(checked_scores(self.fn(problems, completions)), len(completions))
