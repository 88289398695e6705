"""A pool of long-lived Python worker processes calling one trusted but possibly slow function.

`WorkerPool("module:function")` runs calls in `python -c "from rlvr.workers import
_serve; _serve()"` processes (math-verify's sympy can hang on adversarial input),
each call bounded in time: a worker past the limit is killed and replaced, so a hung
call costs one worker restart, never a hang. Stdlib only, so that workers start fast.
Untrusted code goes to rlvr.sandbox instead.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence


class _Worker:
    """One long-lived `python -c _serve` process calling `target` on JSON arguments."""

    def __init__(self, target: str, warmup: Sequence[Any] | None, memory_mb: int, start_timeout: float):
        env = dict(os.environ)
        # the parent's import path, as multiprocessing's spawn does, so `target` imports the same
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from rlvr.workers import _serve; _serve()",
                target,
                json.dumps(list(warmup) if warmup is not None else None),
                str(memory_mb),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        self._buf = b""
        line = self._readline(start_timeout)
        if line is None or json.loads(line).get("ready") is not True:
            self.kill()
            raise RuntimeError(
                f"grading worker for {target} did not start within {start_timeout:.0f}s"
                + ("" if line is None else f": {json.loads(line).get('error', '')}")
            )

    def _readline(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return None  # the worker died
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def call(self, args: Sequence[Any], timeout: float) -> tuple[str, Any]:
        try:
            self.proc.stdin.write((json.dumps(list(args)) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return "error", "the grading worker died"
        line = self._readline(timeout)
        if line is None:
            alive = self.proc.poll() is None
            self.kill()
            return ("timeout", None) if alive else ("error", "the grading worker died (out of memory?)")
        msg = json.loads(line)
        return ("ok", msg["ok"]) if "ok" in msg else ("error", msg.get("error", ""))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class WorkerPool:
    """`workers` processes calling `target` ("module:function"), each call bounded by `timeout`.

    `map(args_list)` returns one (status, value) per call: ("ok", value),
    ("timeout", None) or ("error", traceback text). A worker that times out is
    killed and replaced on next use, so a hung call costs one worker restart,
    never a hang. Workers start lazily, after importing `target` and calling it
    once on `warmup` (so a slow first import is not charged to a grade).
    """

    def __init__(
        self,
        target: str,
        *,
        workers: int = 2,
        timeout: float = 10.0,
        warmup: Sequence[Any] | None = None,
        memory_mb: int = 4096,
        start_timeout: float = 300.0,
    ):
        self.target, self.workers, self.timeout = target, max(1, workers), timeout
        self.warmup, self.memory_mb, self.start_timeout = warmup, memory_mb, start_timeout
        self._idle: list[_Worker | None] = [None] * self.workers
        self._cond = threading.Condition()
        self._closed = False

    def _take(self) -> _Worker | None:
        with self._cond:
            while not self._idle:
                self._cond.wait()
            return self._idle.pop()

    def _give(self, w: _Worker | None) -> None:
        with self._cond:
            self._idle.append(w if (w is not None and w.alive and not self._closed) else None)
            if self._closed and w is not None:
                w.kill()
            self._cond.notify()

    def call(self, args: Sequence[Any]) -> tuple[str, Any]:
        w = self._take()
        try:
            if w is None or not w.alive:
                w = _Worker(self.target, self.warmup, self.memory_mb, self.start_timeout)
            return w.call(args, self.timeout)
        except (RuntimeError, OSError) as e:
            return "error", str(e)
        finally:
            self._give(w)

    def map(self, args_list: Sequence[Sequence[Any]]) -> list[tuple[str, Any]]:
        if len(args_list) <= 1 or self.workers == 1:
            return [self.call(a) for a in args_list]
        with ThreadPoolExecutor(min(self.workers, len(args_list)), thread_name_prefix="rlvr-grade") as ex:
            return list(ex.map(self.call, args_list))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers, self._idle = self._idle, [None] * len(self._idle)
        for w in workers:
            if w is not None:
                w.kill()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _serve() -> None:
    """Worker main: import the target, warm it up, then answer one JSON line per call."""
    target, warmup, memory_mb = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    try:
        mod, _, name = target.partition(":")
        fn = getattr(importlib.import_module(mod), name)
        if warmup is not None:
            fn(*warmup)
        with open("/proc/self/status") as f:
            vm = next((int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:")), 0)
        if vm and memory_mb > 0:
            resource.setrlimit(resource.RLIMIT_AS, (vm + (memory_mb << 20), resource.RLIM_INFINITY))
    except BaseException:
        out.write(json.dumps({"ready": False, "error": traceback.format_exc()}) + "\n")
        out.flush()
        return
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            msg = {"ok": fn(*json.loads(line))}
        except BaseException:
            msg = {"error": traceback.format_exc()}
        try:
            out.write(json.dumps(msg) + "\n")
        except (TypeError, ValueError):
            out.write(json.dumps({"error": f"{target} returned a value JSON cannot carry"}) + "\n")
        out.flush()
