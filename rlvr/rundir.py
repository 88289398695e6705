"""Whether a run may use its output_dir: the run already there must be this run.

A run directory belongs to one run: its resolved `config.yaml`, its checkpoints, metrics and
`final/`. Before anything is written (and before the model loads) the new run's resolved config is
compared with the directory's `config.yaml`:

- Keys that change what is trained (model, data, algorithm, rollout, reward, train) must be equal,
  or the run is refused in one line naming the differing keys (a PPO run started in a GRPO run's
  directory would resume from GRPO's checkpoint). Keys that may differ (`MAY_DIFFER`): `train.steps`
  (a run may be continued to more steps, never shortened below what it trained), the resource knobs
  `train.micro_batch_size`, `train.cpu_threads`, `rollout.generation_batch_size`,
  `model.gradient_checkpointing`, `reward.workers` (the same update up to floating-point order and
  sampling draws, not bitwise), `train.max_skipped_steps`, and every `eval.`, `checkpoint.`,
  `tracking.` key and `output_dir` (when and how the run is measured and saved, not what it trains).
- A finished run (`train_done.json` for the same train.steps, `final/` written) is not trained again:
  `check` returns its record and `rlvr train` says it is done in one line (exit 0); unless
  `checkpoint.resume=false`, which trains from step 0 again as it always did.
- `rlvr train ... --overwrite` (`Trainer(cfg, overwrite=True)`) skips both checks and, once the run
  holds the directory's lock, deletes the previous run's files (`RUN_FILES`) to start afresh.

A directory without a `config.yaml` (a new one, or checkpoints copied in by hand) is not checked.
Core layer: it compares plain dicts; rlvr/trainer.py resolves the configs (`check_run_dir` there).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlvr.checkpoint import OLD, complete_checkpoints
from rlvr.errors import ConfigError

MAY_DIFFER = (
    "output_dir",
    "train.steps",
    "train.micro_batch_size",
    "train.cpu_threads",
    "train.max_skipped_steps",
    "rollout.generation_batch_size",
    "model.gradient_checkpointing",
    "reward.workers",
    "eval.",
    "checkpoint.",
    "tracking.",
)
RUN_FILES = ("config.yaml", "metrics.jsonl", "evals.jsonl", "train_done.json", "checkpoints", "final", "eval")
DONE = "train_done.json"
_SHOWN = 6  # differing keys named in the error line; the rest counted
_ABSENT = object()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def may_differ(key: str) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MAY_DIFFER)


def differing(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for each key that changes what is trained, sorted by key."""
    a, b = flatten(old), flatten(new)
    out = []
    first = lambda k: (k.rpartition(".")[2] not in ("name", "path", "task"), k)  # noqa: E731  (what it is, first)
    for key in sorted(set(a) | set(b), key=first):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va != vb and not may_differ(key):
            out.append((key, va, vb))
    return out


def _show(v: Any) -> str:
    if v is _ABSENT:
        return "(absent)"
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."


def read_config(out: Path) -> dict[str, Any] | None:
    """The directory's config.yaml as a dict, None if there is none (or it is not a mapping)."""
    p = Path(out) / "config.yaml"
    if not p.is_file():
        return None
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(
            f"output_dir: {p} is unreadable ({type(e).__name__}), so this run cannot tell whether the run there "
            "is the same; use another output_dir, or pass --overwrite to delete that run and start afresh"
        ) from None
    return raw if isinstance(raw, dict) else None


def read_done(out: Path) -> dict[str, Any] | None:
    """The finished run's record (train_done.json: steps, evals) when final/ is there too, else None."""
    p = Path(out) / DONE
    if not (p.is_file() and (Path(out) / "final").is_dir()):
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("steps"), int) else None


def check(
    out: Path,
    new: dict[str, Any],
    normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    overwrite: bool = False,
) -> dict[str, Any] | None:
    """Refuse (ConfigError, one line) a run whose resolved config `new` trains something else than
    the run in `out`, or fewer steps than it trained; return the finished run's record when it is
    this run, done (nothing to train), else None. `normalize` resolves the directory's config.yaml
    as this rlvr version would (defaults added since it was written); if it fails, it is compared as
    written. With `overwrite`, nothing is checked (the old run will be deleted)."""
    out = Path(out)
    if overwrite:
        return None
    old = read_config(out)
    if old is None:
        return None
    if normalize is not None:
        try:
            old = normalize(old)
        except Exception:  # a config of another rlvr version: compared as written
            pass
    how = "use another output_dir, or pass --overwrite to delete that run and start afresh"
    diff = differing(old, new)
    if diff:
        shown = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in diff[:_SHOWN])
        more = f", and {len(diff) - _SHOWN} more" if len(diff) > _SHOWN else ""
        raise ConfigError(
            f"output_dir {out} holds another run: its config.yaml differs in {len(diff)} key(s) that change "
            f"what is trained ({shown}{more}); {how}"
        )
    flat = flatten(new)
    steps = flat.get("train.steps")
    done = read_done(out)
    ckpts = complete_checkpoints(out / "checkpoints")
    trained = max([done["steps"] if done else 0] + [c.step for c in ckpts])
    if isinstance(steps, int) and trained > steps:
        raise ConfigError(
            f"output_dir {out} holds this run trained to step {trained}; train.steps={steps} cannot shorten it "
            f"(its final/ would be a later step's weights); {how}"
        )
    if done is not None and done["steps"] == steps and flat.get("checkpoint.resume") is not False:
        return done  # (checkpoint.resume=false asks to train from step 0 again: it does, as before)
    return None


def done_line(out: Path, record: dict[str, Any]) -> str:
    """What `rlvr train` says for a finished run."""
    return (
        f"rlvr: {out} is done ({record['steps']} steps trained, final/ written); nothing to train "
        f"(a larger train.steps continues it, --overwrite trains it afresh, rlvr eval --model {Path(out) / 'final'} "
        "evaluates it)"
    )


def remove_run(out: Path) -> list[str]:
    """Delete the previous run's files in `out` (`RUN_FILES`; the caller holds the directory's lock),
    each renamed out of sight first; returns the names removed."""
    gone = []
    for name in RUN_FILES:
        p = Path(out) / name
        if p.is_dir():  # renamed first: a kill mid-delete leaves no half checkpoint under its name
            gone_dir = p.with_name(f"{OLD}{name}-{os.getpid()}")
            os.replace(p, gone_dir)
            shutil.rmtree(gone_dir, ignore_errors=True)
        elif p.exists():
            p.unlink()
        else:
            continue
        gone.append(name)
    return gone
