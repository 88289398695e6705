"""Function tests decided by a trusted judge outside the jail: the completion never sees them.

For HumanEval's `check(candidate)` and MBPP-style assert lists, two processes:

  trainer thread
   `- launcher (rlvr/jail.py)
       |- judge: forked before the launcher enters the jail's namespaces, so it is
       |  outside them (the program cannot see or signal it); the trainer's user, no
       |  core dumps and not ptrace-able (PR_SET_DUMPABLE 0), rlimits, no network.
       |  It runs the dataset's prefix (HumanEval's prompt: helpers such as
       |  encode_cyclic stay the dataset's own) and then the test code, where every
       |  top-level function the solution defines is a proxy that calls it in the
       |  jail; `candidate` is the entry point's proxy. Its verdict goes to the
       |  trainer on a pipe the program has no handle to: a pass means the test code
       |  ran to its end and called the program at least once.
       `- the program, in the jail: SERVER below executes solution.py as module
          "solution", says which names it defines, then answers
          `name(*args, **kwargs)` over fds 3 (calls in) and 4 (answers out).

Arguments and results cross as JSON with type tags, builtin types only (None,
bool, int, float incl. inf/nan, complex, str, bytes, list, tuple, dict, set,
frozenset; exact types, never subclasses), so `==` runs in the judge on fresh
builtin objects: an object whose `__eq__` always says True cannot come back. An
exception in the program comes back as a builtin exception of the same name (or
RuntimeError; never StopIteration). sys.exit, os._exit, atexit or excepthook in the program only end
the program: the judge sees a closed channel, a failure.

`run_inside` is the mode for tests whose results are not builtin types
(`builtin_results: false`): the tests run inside the jail with the solution, sent
on stdin (never a file) with a per-run secret the harness reads before the
solution runs; the harness writes the secret to fd 3 only after the tests
passed. Weaker: a program that reads the harness's memory (frames, gc) can find
the secret and forge a pass.
"""

from __future__ import annotations

import json
import os
import re
import select
import sys
import time
from typing import Any

MAX_MESSAGE = 32 << 20  # bytes in one answer from the program

CODEC = r'''
import json as _json
_SEQ = {list: "l", tuple: "t", set: "s", frozenset: "z"}
_MAKE = {"l": list, "t": tuple, "s": set, "z": frozenset}

def encode(x):
    """A JSON-able form of a builtin value; TypeError for anything else (subclasses too)."""
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return {"i": format(x, "x")}
    if t is float:
        return {"f": repr(x)}
    if t is complex:
        return {"c": [repr(x.real), repr(x.imag)]}
    if t is bytes:
        return {"b": x.hex()}
    if t in _SEQ:
        return {_SEQ[t]: [encode(v) for v in x]}
    if t is dict:
        return {"d": [[encode(k), encode(v)] for k, v in x.items()]}
    raise TypeError("a %s.%s cannot cross the sandbox (builtin types only)" % (t.__module__, t.__qualname__))

def decode(x):
    """The value `encode` made, rebuilt from exact builtin types; ValueError for anything else."""
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is dict and len(x) == 1:
        (tag, v), = x.items()
        tv = type(v)
        if tag == "i" and tv is str:
            return int(v, 16)
        if tag == "f" and tv is str:
            return float(v)
        if tag == "c" and tv is list and len(v) == 2 and all(type(p) is str for p in v):
            return complex(float(v[0]), float(v[1]))
        if tag == "b" and tv is str:
            return bytes.fromhex(v)
        if tag in _MAKE and tv is list:
            return _MAKE[tag](decode(e) for e in v)
        if tag == "d" and tv is list and all(type(p) is list and len(p) == 2 for p in v):
            return {decode(k): decode(e) for k, e in v}
    raise ValueError("not a value the sandbox encodes: %.100r" % (x,))

def dumps(msg):
    return (_json.dumps(msg, separators=(",", ":")) + "\n").encode()
'''

_codec: dict[str, Any] = {}
exec(CODEC, _codec)  # the same code on both sides
encode, decode, dumps = _codec["encode"], _codec["decode"], _codec["dumps"]

SERVER = (
    CODEC
    + r"""
import os, sys, types
_calls, _answers = os.fdopen(3, "rb"), os.fdopen(4, "wb")
_g = {"__name__": "solution", "__builtins__": __builtins__}
def _send(msg):
    _answers.write(dumps(msg))
    _answers.flush()
try:
    with open("solution.py") as _f:
        exec(compile(_f.read(), "solution.py", "exec"), _g)
except MemoryError:
    os.write(2, b"MemoryError\n")
    os._exit(86)
_names = {}
for _k, _v in list(_g.items()):
    if _k.startswith("__"):
        continue
    if isinstance(_v, types.ModuleType):
        _names[_k] = ["module", _v.__name__]
    elif callable(_v):
        _names[_k] = ["call"]
    else:
        try:
            _names[_k] = ["value", encode(_v)]
        except (TypeError, ValueError, RecursionError):
            pass
_send({"ready": _names})
for _line in _calls:
    _m = _json.loads(_line)
    try:
        _r = _g[_m["f"]](*decode(_m["a"]), **decode(_m["k"]))
        _out = {"ok": encode(_r)}
    except MemoryError:
        os.write(2, b"MemoryError\n")
        os._exit(86)
    except Exception as _e:
        _out = {"e": type(_e).__name__, "m": str(_e)[:1000]}
    _send(_out)
"""
)

INSIDE = r"""
import json, os, sys
_p = json.loads(sys.stdin.buffer.read())
_fd = os.open("/dev/null", os.O_RDONLY)
os.dup2(_fd, 0)
os.close(_fd)
_g = {"__name__": "__main__", "__builtins__": __builtins__}
with open("solution.py") as _f:
    exec(compile(_f.read(), "solution.py", "exec"), _g)
exec(compile(_p.pop("tests"), "tests", "exec"), _g)
os.write(3, _p.pop("secret").encode())
"""


_ENDS_ITERATION = (StopIteration, StopAsyncIteration)


class ProgramDied(Exception):
    """The program closed its channel: it exited, crashed, or was killed at the time limit."""


class _Channel:
    def __init__(self, calls_fd: int, answers_fd: int, deadline: float):
        self.calls, self.answers, self.deadline, self.buf, self.n = calls_fd, answers_fd, deadline, b"", 0

    def read(self) -> Any:
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.answers], [], [], left)[0]:
                raise ProgramDied("no answer within the time limit")
            chunk = os.read(self.answers, 1 << 20)
            if not chunk:
                raise ProgramDied("the program ended before answering")
            self.buf += chunk
            if len(self.buf) > MAX_MESSAGE:
                raise ProgramDied("the program's answer is too long")
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if type(msg) is not dict:
            raise ProgramDied("a malformed answer")
        return msg

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        self.n += 1
        try:
            os.write(self.calls, dumps({"f": name, "a": encode(list(args)), "k": encode(kwargs)}))
        except OSError:
            raise ProgramDied("the program ended before the call") from None
        msg = self.read()
        if "ok" in msg:
            return decode(msg["ok"])
        if type(msg.get("e")) is str:
            import builtins

            exc = getattr(builtins, msg["e"], None)
            if not (isinstance(exc, type) and issubclass(exc, Exception)) or issubclass(exc, _ENDS_ITERATION):
                exc = RuntimeError  # a StopIteration out of candidate would end `all(map(candidate, xs))` early
            raise exc(f"in the program: {msg['e']}: {msg.get('m', '')}")
        raise ProgramDied("a malformed answer")


def _proxy(channel: _Channel, name: str):
    def call(*args, **kwargs):
        return channel.call(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _judge(spec: dict[str, Any], calls_fd: int, answers_fd: int) -> dict[str, Any]:
    import builtins
    import importlib

    channel = _Channel(calls_fd, answers_fd, time.monotonic() + spec["timeout"])
    g: dict[str, Any] = {"__name__": "__main__"}
    try:  # the dataset's prefix: trusted, and its names are kept over the program's
        exec(compile(spec.get("prefix") or "", "prefix", "exec"), g)
    except Exception as e:  # a bare header that is no program on its own: the tests get the program's names
        sys.stderr.write(f"rlvr judge: the prefix does not run on its own ({type(e).__name__}); ignored\n")
        g = {"__name__": "__main__"}
    keep = set(g) | set(vars(builtins))  # the program may not shadow these (abs, sorted, encode_cyclic, ...)
    try:
        ready = channel.read().get("ready")
        if type(ready) is not dict:
            raise ProgramDied("the program did not start")
        entry = spec.get("entry_point")
        for name, what in ready.items():
            if type(name) is not str or type(what) is not list or not what or (name in keep and name != entry):
                continue
            if what[0] == "call":
                g[name] = _proxy(channel, name)
            elif what[0] == "module" and what[1:] == [name] and name in getattr(sys, "stdlib_module_names", ()):
                g[name] = importlib.import_module(name)  # `import math` in the solution: the judge's own math
            elif what[0] == "value" and len(what) == 2:
                g[name] = decode(what[1])
        tests = spec["tests"]
        exec(compile(tests, "tests", "exec"), g)
        if entry and "def check(" in tests and not re.search(r"^check\(", tests, re.M) and entry in g:
            g["check"](g[entry])  # HumanEval's tests define check(candidate) without calling it
        if channel.n == 0:
            return {"passed": False, "error": "the tests never called the program"}
        return {"passed": True}
    except ProgramDied as e:
        return {"passed": False, "died": str(e)}
    except BaseException as e:  # an assert that failed, an error, a result of the wrong type
        return {"passed": False, "failed": f"{type(e).__name__}: {str(e)[:500]}"}


def serve(spec: dict[str, Any], calls_fd: int, answers_fd: int, verdict_fd: int) -> None:
    """The judge process: forked by rlvr/jail.py's launcher before it enters the jail's namespaces."""
    import ctypes
    import resource
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE: no core dumps, no ptrace, no /proc/<pid>/mem
    if libc.unshare(0x40000000 | (0 if os.geteuid() == 0 else 0x10000000)) != 0:  # CLONE_NEWNET [| NEWUSER]
        os.write(2, b"rlvr judge: no network namespace; the tests (trusted) keep the network\n")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (int(spec["timeout"]) + 5,) * 2)
    resource.setrlimit(resource.RLIMIT_AS, (spec["memory_mb"] << 20,) * 2)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(int(spec["timeout"]) + 5)
    sys.path += [p for p in spec["path"] if p not in sys.path]  # the trainer's packages, without site's start-up cost
    sys.stdout = sys.stderr  # the tests' prints must not reach the verdict
    verdict = _judge(spec, calls_fd, answers_fd)
    os.write(verdict_fd, json.dumps(verdict).encode())


# ------------------------------------------------------------ the trainer's side


def check_function(
    code: str,
    tests: str,
    *,
    prefix: str = "",
    entry_point: str | None = None,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 8,
):
    """Run `tests` in a judge against the program `code` in the jail; a sandbox Result, passed as the judge says."""
    from rlvr.sandbox import Result, _run_with

    verdict_r, verdict_w = os.pipe()
    judge = {
        "prefix": prefix,
        "tests": tests,
        "entry_point": entry_point,
        "timeout": float(timeout),
        "memory_mb": max(2048, 4 * (MAX_MESSAGE >> 20)),
        "path": [p for p in sys.path if os.path.isabs(p)],
        "module": os.path.abspath(__file__),
        "verdict_fd": verdict_w,
    }
    try:
        r = _run_with(
            code,
            harness=SERVER,
            judge=judge,
            timeout=timeout,
            memory_mb=memory_mb,
            cpu_seconds=None,
            max_processes=max_processes,
            file_size_mb=16,
        )
        with os.fdopen(verdict_r, "rb") as f:
            verdict_r = -1
            os.set_blocking(f.fileno(), False)
            raw = f.read() or b""
    finally:
        if verdict_r >= 0:
            os.close(verdict_r)
    try:
        verdict = json.loads(raw)
    except ValueError:
        return Result(
            False,
            "error",
            r.stdout,
            (r.stderr + "\nrlvr judge: no verdict").strip(),
            r.duration,
            r.returncode,
            r.isolation,
        )
    if verdict.get("passed") is True:
        return Result(True, "ok", r.stdout, r.stderr, r.duration, r.returncode, r.isolation)
    status = r.status if r.status in ("timeout", "memory", "error") else ("error" if "error" in verdict else "fail")
    why = verdict.get("failed") or verdict.get("died") or verdict.get("error", "")
    return Result(
        False, status, r.stdout, (r.stderr + f"\nrlvr judge: {why}").strip(), r.duration, r.returncode, r.isolation
    )


def run_inside(code: str, tests: str, *, timeout: float = 10.0, memory_mb: int = 1024, max_processes: int = 8):
    """The tests in the jail with the solution (results of any type); passed only if the harness wrote the secret."""
    import secrets

    from rlvr.sandbox import _run_with

    secret = secrets.token_hex(16)
    got_r, got_w = os.pipe()
    try:
        r = _run_with(
            code,
            harness=INSIDE,
            fds=(got_w,),
            stdin=json.dumps({"tests": tests, "secret": secret}),
            timeout=timeout,
            memory_mb=memory_mb,
            cpu_seconds=None,
            max_processes=max_processes,
            file_size_mb=16,
        )
        os.set_blocking(got_r, False)
        try:
            got = os.read(got_r, 4096)
        except BlockingIOError:
            got = b""
    finally:
        os.close(got_r)
    r.passed = r.status == "ok" and got == secret.encode()
    if r.status == "ok" and not r.passed:
        r.status = "fail"
    return r
