"""The run directory's I/O, made to survive faults: a kill, a full disk, a torn file, a second run.

- Checkpoints are written into `checkpoints/.tmp-step-N`, fsynced, closed by `trainer_state.json`
  (which lists every file with its size) and renamed to `step-N`: a reader never sees half a
  checkpoint. `final/` is written the same way.
- Resume takes the newest checkpoint whose `trainer_state.json` parses and whose files are all there
  (with the listed sizes); a broken one is skipped with one warning line naming it.
- `metrics.jsonl` rows are strict JSON (non-finite floats are null); a torn trailing line (a write cut
  short by a kill or a full disk) is dropped with a warning on resume.
- A full disk at any write is one line, "no space left on device writing <path>" (`RunError`).
- Non-finite weights are never saved: the save stops the run naming the first such parameter.
- One run per directory: the main process holds an exclusive `flock` on `<output_dir>/.rlvr.lock`
  (the kernel drops it when the process dies, kill -9 included).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlvr.errors import RunError
from rlvr.quiet import tied_copies_dropped

LOCK_NAME = ".rlvr.lock"
STATE_NAME = "trainer_state.json"
TMP, OLD = ".tmp-", ".old-"  # prefixes of directories being written or deleted; stale ones go at start
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_LOW_SPACE = 1 << 20  # bytes free below which a failed write is taken for a full disk (torch words it oddly)


def warn(msg: str) -> None:
    print(f"rlvr: warning: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------ write errors


def _free_bytes(path: Path) -> int | None:
    """Bytes free to this user on the filesystem holding `path` (its nearest existing ancestor)."""
    for p in (Path(path).absolute(), *Path(path).absolute().parents):
        try:
            st = os.statvfs(p)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return st.f_bavail * st.f_frsize
    return None


def is_disk_full(err: BaseException, path: Path) -> bool:
    """Whether `err` (from writing `path`) means the disk or quota is full. torch.save's error does not say
    so ("unexpected pos ..."), safetensors' says it in text only: the free space decides those."""
    e: BaseException | None = err
    while e is not None:
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(e)
        if "No space left" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    free = _free_bytes(path)
    return free is not None and free < _LOW_SPACE


@contextlib.contextmanager
def write_errors(path: Path, what: str = "", cleanup: Path | None = None) -> Iterator[None]:
    """Turn a full disk (or a permission error) while writing `path` into one-line `RunError`; `cleanup`
    (a partial temporary directory) is removed first so the space it took is given back."""
    try:
        yield
    except RunError:
        raise
    except Exception as e:
        full = is_disk_full(e, path)
        if not (full or isinstance(e, PermissionError)):
            raise
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        cause = "no space left on device" if full else "permission denied"
        raise RunError(f"{cause} writing {path}{what}") from None


# ------------------------------------------------------------ files


def fsync_path(path: Path) -> None:
    """fsync a file or directory by name (a directory's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for d, _, files in os.walk(root):
        for f in files:
            fsync_path(Path(d) / f)
        fsync_path(Path(d))


def write_atomic(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a temporary sibling, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with write_errors(path):
        try:
            tmp.write_text(text)
            fsync_path(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(path.parent)


def strict_json(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None, so json.dumps writes strict JSON (null, not NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one strict-JSON row; a write cut short (disk full) is truncated away, then reported."""
    line = json.dumps(strict_json(row), allow_nan=False) + "\n"
    with write_errors(path), open(path, "a") as f:
        start = f.tell()
        try:
            f.write(line)
            f.flush()
        except OSError:
            with contextlib.suppress(OSError):
                f.truncate(start)
            raise


def repair_jsonl(path: Path, last_step: int) -> None:
    """Keep the rows of `path` up to `last_step` (a resume redoes the later ones); a torn trailing line
    is dropped with a warning. Any other line that is not JSON stops the run naming its line number."""
    if not path.is_file():
        return
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    keep = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                warn(f"{path}: dropping its torn last line {i + 1} (a write cut short): {line[:60]!r}")
                continue
            raise RunError(f"{path}: line {i + 1} is not JSON ({line[:60]!r}); remove it to resume") from None
        if row.get("step", 0) <= last_step:
            keep.append(line)
    new = "".join(line + "\n" for line in keep)
    if new != text:
        write_atomic(path, new)


# ------------------------------------------------------------ the run-directory lock

_HELD: dict[str, int] = {}  # realpath of output_dir -> fd holding its lock, in this process


def lock_run_dir(out: Path) -> None:
    """Take `out/.rlvr.lock` for this process (a no-op if it holds it already: runs one after another in
    one process). Another live holder: one line naming its pid, host and start time."""
    out = Path(out)
    key = os.path.realpath(out)
    if key in _HELD:
        return
    path = out / LOCK_NAME
    with write_errors(path):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's lock file: a shared lock on it still excludes them
            fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        try:
            holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            holder = {}
        os.close(fd)
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (started {holder.get('started', '?')})"
        raise RunError(
            f"output_dir {out} is in use by {who}; wait for that run to end or stop it, or choose another output_dir"
        ) from None
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    with contextlib.suppress(OSError):  # read-only (another user's file): the lock holds, the note is stale
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD[key] = fd


def unlock_run_dir(out: Path) -> None:
    """Release this process's lock on `out` (the kernel does it anyway when the process ends)."""
    fd = _HELD.pop(os.path.realpath(out), None)
    if fd is not None:
        os.close(fd)


def clean_stale(out: Path) -> None:
    """Remove what a killed run left half-written or half-deleted (only the lock holder may)."""
    for root in (Path(out), Path(out) / "checkpoints"):
        if root.is_dir():
            for d in root.iterdir():
                if d.is_dir() and d.name.startswith((TMP, OLD)):
                    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------ checkpoints


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]


def _manifest(root: Path) -> dict[str, int]:
    return {
        str((Path(d) / f).relative_to(root)): (Path(d) / f).stat().st_size
        for d, _, files in os.walk(root)
        for f in files
    }


def _problem(path: Path) -> tuple[str | None, dict[str, Any]]:
    """Why the checkpoint at `path` cannot be resumed from (None: it can), and its trainer state."""
    try:
        state = json.loads((path / STATE_NAME).read_text())
    except FileNotFoundError:
        return f"no {STATE_NAME} (not completed)", {}
    except (OSError, ValueError) as e:
        return f"{STATE_NAME} is unreadable ({type(e).__name__}: {str(e)[:80]})", {}
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return f"{STATE_NAME} has no step", {}
    for name, size in state.get("files", {}).items():  # absent in checkpoints written before the list
        f = path / name
        if not f.is_file():
            return f"{name} is missing", state
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, not {size}", state
    return None, state


def step_dirs(root: Path) -> list[Path]:
    """checkpoints/step-N directories, oldest first."""
    if not root.is_dir():
        return []
    dirs = [d for d in root.glob("step-*") if d.is_dir() and d.name[5:].isdigit()]
    return sorted(dirs, key=lambda d: int(d.name[5:]))


def complete_checkpoints(root: Path, report: bool = False) -> list[Checkpoint]:
    """The checkpoints under `root` one can resume from, oldest first; with `report`, one warning line per
    step-N directory skipped."""
    out = []
    for d in step_dirs(root):
        problem, state = _problem(d)
        if problem is None:
            out.append(Checkpoint(d, state["step"], state))
        elif report:
            warn(f"skipping checkpoint {d}: {problem}")
    return out


def check_finite(models: list[torch.nn.Module], step: int, target: Path) -> None:
    """Refuse to save non-finite weights: one line naming the first such parameter (or buffer) and the step."""
    from rlvr.fsdp import first_nonfinite  # FSDP2's and ZeRO-3's shards: each process's, agreed over processes

    bad = first_nonfinite(models)
    if bad is not None:
        i, name = bad
        which = name if i == 0 else f"trained model {i}: {name}"
        raise RunError(
            f"step {step}: parameter {which} is not finite (nan or inf); not writing {target} "
            "(earlier checkpoints are intact)"
        )


def _remove_dir(path: Path) -> None:
    """Delete a directory by first renaming it out of sight, so a kill mid-delete leaves no half checkpoint."""
    if path.exists():
        gone = path.with_name(f"{OLD}{path.name}-{os.getpid()}")
        os.replace(path, gone)
        shutil.rmtree(gone, ignore_errors=True)


def publish(tmp: Path, final: Path) -> None:
    """fsync `tmp` and rename it to `final` (replacing an older `final`)."""
    with write_errors(final, cleanup=tmp):
        fsync_tree(tmp)
        _remove_dir(final)
        os.replace(tmp, final)
        fsync_path(final.parent)


def save_checkpoint(
    acc: Any,
    out: Path,
    step: int,
    state: dict[str, Any],
    models: list[torch.nn.Module],
    keep: int,
    save_kwargs: dict[str, Any] | None = None,
):
    """accelerate's save_state (with `save_kwargs`: DeepSpeed's save_checkpoint options) into
    checkpoints/.tmp-step-N on every process, then (main process) the trainer state with its file list,
    fsync, rename to step-N, prune to the `keep` newest."""
    root = Path(out) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f"{TMP}step-{step}"
    check_finite(models, step, final)
    if acc.is_main_process:
        with write_errors(root):
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    with write_errors(final, " (the checkpoint was not written; older ones are intact)", cleanup=tmp):
        with tied_copies_dropped(models):  # no "Removed shared tensor {'lm_head.weight'}" per save (rlvr/quiet.py)
            acc.save_state(str(tmp), **(save_kwargs or {}))
    acc.wait_for_everyone()  # every process's files (its random states) are in
    if acc.is_main_process:
        state = {**state, "step": step, "files": _manifest(tmp)}
        with write_errors(final, " (the checkpoint was not written; older ones are intact)", cleanup=tmp):
            (tmp / STATE_NAME).write_text(json.dumps(state))  # last: the mark of a complete checkpoint
        publish(tmp, final)
        kept = complete_checkpoints(root)[-keep:]
        for d in step_dirs(root):  # older than the kept ones, complete or not
            if int(d.name[5:]) < kept[0].step:
                _remove_dir(d)
    acc.wait_for_everyone()


def save_final(acc: Any, model: torch.nn.Module, tokenizer: Any, out: Path, step: int) -> None:
    """The policy (save_pretrained) and tokenizer into out/.tmp-final, renamed to final/."""
    final, tmp = Path(out) / "final", Path(out) / f"{TMP}final"
    unwrapped = acc.unwrap_model(model)
    check_finite([unwrapped], step, final)
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    with write_errors(final, " (final weights not written)", cleanup=tmp):
        from rlvr.fsdp import without_tied_copies  # a gathered (FSDP, ZeRO-3) state dict holds tied weights apart

        state = acc.get_state_dict(model)  # ZeRO-3: gathered on every process, returned on the main one only
        state = None if state is None else without_tied_copies(unwrapped, state)
        unwrapped.save_pretrained(tmp, is_main_process=acc.is_main_process, save_function=acc.save, state_dict=state)
        if acc.is_main_process:
            tokenizer.save_pretrained(tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        publish(tmp, final)
    acc.wait_for_everyone()
