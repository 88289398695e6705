"""Run untrusted or unbounded work in another process, bounded in time and memory.

Two tools live here, both stdlib-only so that worker processes start fast:

* `run_program(code)` runs a model-written Python program in a sandbox and says
  whether it exited 0. `run_many` runs many of them on a thread pool, each
  thread driving its own child process.
* `WorkerPool` keeps a few long-lived Python workers that call one trusted but
  possibly slow function (math-verify's sympy can hang on adversarial input),
  killing and replacing a worker that runs past the time limit.

How a program is contained (each step falls back, and says so in `isolation`):

  parent (trainer thread)
   `- launcher: a tiny Python run as the trainer's user, in a new session
       - unshare(CLONE_NEWNET): a network namespace with no interface up, so
         no connection leaves the box, not even to localhost. Without the
         privilege (not root, no user namespaces) a Python-level socket guard
         is installed instead ("python-guard"), which ctypes could bypass.
       - PR_SET_CHILD_SUBREAPER, so every descendant is reaped here, even when
         the container's init does not reap orphans.
       `- child: own process group, rlimits (address space, CPU seconds,
          processes, file size, no core dumps), then, when the trainer is
          root, drops to an unused uid of its own so that RLIMIT_NPROC applies
          (root ignores it) and it cannot write to root's files; cwd is a fresh
          temporary directory owned by that uid, the environment is scrubbed to
          PATH/HOME/TMPDIR/LANG.
  At exit, timeout or kill, every process of the sandbox uid is killed with
  kill(-1) run as that uid (which catches children that left the process
  group with setsid), or, without a uid of its own, the child's process group.
  The world-writable /tmp, /var/tmp and /dev/shm stay writable (there is no
  mount namespace); what the uid left there is deleted after each program.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

RC_MEMORY = 86  # the harness's exit code for MemoryError
RC_SETUP = 97  # the launcher could not set the child up (a sandbox error, not the program's)
OUTPUT_LIMIT = 64 * 1024  # bytes of stdout/stderr kept in a Result
_UID_BASE = 2_000_000  # sandbox uids: far above any real account
_UID_SLOTS = 128  # concurrent sandboxes per trainer process


@dataclass
class Result:
    passed: bool
    status: str  # ok | fail | timeout | memory | crash | error
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    returncode: int | None = None
    isolation: dict[str, str] = field(default_factory=dict)  # what containment this run really had


# ------------------------------------------------------------ the launcher (runs as its own process)

# Runs as `python -I -S -c _LAUNCHER <json>`. Kept stdlib-only and short: it starts once per program.
_LAUNCHER = r'''
import ctypes, json, os, resource, signal, sys
a = json.loads(sys.argv[1])
status_fd = a["status_fd"]
libc = ctypes.CDLL(None, use_errno=True)
report = {"network": "python-guard", "user": "none"}
if a["netns"]:
    flags = 0x40000000 if os.geteuid() == 0 else 0x40000000 | 0x10000000  # CLONE_NEWNET [| CLONE_NEWUSER]
    if libc.unshare(flags) == 0:
        report["network"] = "namespace"
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans are reaped here
env = dict(a["env"])
if report["network"] != "namespace":
    env["RLVR_SANDBOX_NO_NETWORK"] = "1"
uid = a["uid"]
if uid is not None:
    report["user"] = "uid %d" % uid
pid = os.fork()
if pid == 0:
    try:
        os.close(status_fd)
        os.setpgid(0, 0)
        L = a["limits"]
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (L["as"], L["as"]))
        resource.setrlimit(resource.RLIMIT_CPU, (L["cpu"], L["cpu"] + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (L["fsize"], L["fsize"]))
        resource.setrlimit(resource.RLIMIT_NPROC, (L["nproc"], L["nproc"]))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.chdir(a["workdir"])
        os.execve(a["python"], [a["python"], "-I", "-c", a["harness"]], env)
    except BaseException as e:
        os.write(2, ("rlvr sandbox: could not start the program: %r\n" % (e,)).encode())
    os._exit(97)

def kill_tree():
    if uid is not None:
        k = os.fork()
        if k == 0:  # as the sandbox uid, kill(-1) reaches exactly the sandbox's processes
            try:
                os.setgid(uid); os.setuid(uid); os.kill(-1, signal.SIGKILL)
            except BaseException:
                pass
            os._exit(0)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

def on_timeout(signum, frame):
    report["timeout"] = True
    kill_tree()

signal.signal(signal.SIGALRM, on_timeout)
signal.signal(signal.SIGTERM, on_timeout)
signal.setitimer(signal.ITIMER_REAL, a["timeout"])
while True:
    try:
        w, st = os.wait()
    except ChildProcessError:
        st = None
        break
    if w == pid:
        break
signal.setitimer(signal.ITIMER_REAL, 0)
if st is not None:
    if os.WIFSIGNALED(st):
        report["signal"] = os.WTERMSIG(st)
    else:
        report["exit"] = os.WEXITSTATUS(st)
kill_tree()
while True:  # reap every descendant (killed above, or the kill helper)
    try:
        os.wait()
    except ChildProcessError:
        break
os.write(status_fd, json.dumps(report).encode())
'''

# Runs as the program's interpreter: `python -I -c _HARNESS` in the work dir.
_HARNESS = r'''
import os, runpy, sys
if os.environ.get("RLVR_SANDBOX_NO_NETWORK"):
    import socket
    def _blocked(*a, **k):
        raise PermissionError("network access is disabled in the rlvr sandbox")
    for _name in ("connect", "connect_ex", "bind", "sendto", "sendmsg"):
        setattr(socket.socket, _name, _blocked)
    socket.create_connection = _blocked
try:
    runpy.run_path("solution.py", run_name="__main__")
except MemoryError:
    sys.stdout.flush()
    os.write(2, b"MemoryError\n")
    os._exit(86)
'''


# ------------------------------------------------------------ sandbox uids


class _UidPool:
    """Distinct uids for concurrent sandboxes: RLIMIT_NPROC and kill(-1) count per uid."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._free = list(range(_UID_SLOTS))
        self._base = _UID_BASE + (os.getpid() % 50_000) * _UID_SLOTS

    def acquire(self) -> int:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._base + self._free.pop()

    def release(self, uid: int) -> None:
        with self._cond:
            self._free.append(uid - self._base)
            self._cond.notify()


_uids = _UidPool()
_probe_lock = threading.Lock()
_probed: dict[str, Any] | None = None


def _python_candidates() -> list[str]:
    out = [sys.executable]
    for p in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""):
        if p and os.path.isfile(p) and p not in out:
            out.append(p)
    return out


def isolation() -> dict[str, Any]:
    """What this machine lets the sandbox do, probed once: uid drop, interpreter, network.

    The trainer's interpreter may sit where an unprivileged uid cannot read it (a
    pyenv under /root); then the first system python3 that works under the
    sandbox uid runs the programs. If none does, programs run as the trainer's user.
    """
    global _probed
    with _probe_lock:
        if _probed is not None:
            return _probed
        probe = "import collections, json, math, re, socket\nprint('ok')\n"
        found: dict[str, Any] = {"python": sys.executable, "drop_uid": False}
        if os.geteuid() == 0:
            for py in _python_candidates():
                r = _run(probe, python=py, drop_uid=True, timeout=30.0, memory_mb=1024, cpu_seconds=30,
                         max_processes=16, file_size_mb=1, stdin=None)
                if r.status == "ok" and r.stdout.strip() == "ok":
                    found = {"python": py, "drop_uid": True}
                    break
        r = _run(probe, python=found["python"], drop_uid=found["drop_uid"], timeout=30.0, memory_mb=1024,
                 cpu_seconds=30, max_processes=16, file_size_mb=1, stdin=None)
        found["network"] = r.isolation.get("network", "unknown")
        found["user"] = r.isolation.get("user", "none")
        found["works"] = r.status == "ok"
        if not found["works"]:
            found["error"] = r.stderr[-2000:]
        _probed = found
        return found


# ------------------------------------------------------------ running programs


def run_program(code: str, *, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: int | None = None,
                max_processes: int = 32, file_size_mb: int = 16, stdin: str | None = None,
                python: str | None = None) -> Result:
    """Run Python `code` sandboxed; `passed` when it exits 0 within every limit.

    timeout: wall-clock seconds for the whole process tree; cpu_seconds: CPU time
    per process (default: the timeout, rounded up); memory_mb: address space per
    process; max_processes: processes and threads of the sandbox uid; file_size_mb:
    largest file it may write; stdin: text fed to the program; python: the
    interpreter (default: probed, see `isolation`).
    """
    iso = isolation()
    return _run(code, python=python or iso["python"], drop_uid=iso["drop_uid"], timeout=timeout,
                memory_mb=memory_mb, cpu_seconds=cpu_seconds, max_processes=max_processes,
                file_size_mb=file_size_mb, stdin=stdin)


def run_many(programs: Sequence[str | dict[str, Any]], *, workers: int = 4, **limits: Any) -> list[Result]:
    """Run many programs, up to `workers` at a time; results in input order.

    A program is its code, or a dict of `run_program` keyword arguments with a
    `code` key (e.g. {"code": ..., "stdin": ...}); `limits` apply to all.
    """
    def one(p: str | dict[str, Any]) -> Result:
        kw = dict(limits)
        if isinstance(p, dict):
            kw.update(p)
            return run_program(**kw)
        return run_program(p, **kw)

    if not programs:
        return []
    isolation()  # probe once, not in every thread
    workers = max(1, min(workers, len(programs), _UID_SLOTS))
    if workers == 1:
        return [one(p) for p in programs]
    with ThreadPoolExecutor(workers, thread_name_prefix="rlvr-sandbox") as pool:
        return list(pool.map(one, programs))


def _run(code: str, *, python: str, drop_uid: bool, timeout: float, memory_mb: int, cpu_seconds: int | None,
         max_processes: int, file_size_mb: int, stdin: str | None) -> Result:
    t0 = time.monotonic()
    uid = _uids.acquire() if drop_uid else None
    workdir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    status_r, status_w = os.pipe()
    out_f, err_f, in_f = tempfile.TemporaryFile(), tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = None
    try:
        with open(os.path.join(workdir, "solution.py"), "w") as f:
            f.write(code)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(os.path.join(workdir, "solution.py"), uid, uid)
        if stdin:
            in_f.write(stdin.encode())
            in_f.seek(0)
        nproc = max_processes if uid is not None else _own_process_count() + max_processes
        args = {
            "status_fd": status_w, "netns": True, "uid": uid, "python": python, "workdir": workdir,
            "harness": _HARNESS, "timeout": float(timeout),
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                    "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
                    "OMP_NUM_THREADS": "1"},
            "limits": {"as": int(memory_mb) << 20, "cpu": int(cpu_seconds or max(1, -(-timeout // 1))),
                       "fsize": int(file_size_mb) << 20, "nproc": int(nproc)},
        }
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(args)],
                                stdin=in_f, stdout=out_f, stderr=err_f, pass_fds=(status_w,),
                                start_new_session=True, cwd=workdir, env={"PATH": "/usr/bin:/bin"})
        os.close(status_w)
        status_w = -1
        # the launcher enforces `timeout` and closes the status pipe as it exits; this is the backstop
        ready, _, _ = select.select([status_r], [], [], timeout + 10.0)
        if not ready:
            _kill_everything(proc.pid, uid)
        proc.wait()
        report = _read_report(status_r)
        if not report and proc.returncode is not None and proc.returncode >= 0:
            report = {"launcher_failed": proc.returncode}
        duration = time.monotonic() - t0
        out, err = _read_tail(out_f), _read_tail(err_f)
        status, rc = _classify(report, proc.returncode, err)
        iso = {k: report[k] for k in ("network", "user") if k in report}
        return Result(passed=status == "ok", status=status, stdout=out, stderr=err, duration=duration,
                      returncode=rc, isolation=iso)
    except OSError as e:
        return Result(passed=False, status="error", stderr=f"rlvr sandbox: {e!r}", duration=time.monotonic() - t0)
    finally:
        if proc is not None and proc.poll() is None:
            _kill_everything(proc.pid, uid)
            proc.wait()
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        for f in (out_f, err_f, in_f):
            f.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            _kill_uid(uid)  # nothing should be left; be sure before the uid is reused
            _remove_files_of(uid)
            _uids.release(uid)


def _classify(report: dict[str, Any], launcher_rc: int | None, stderr: str) -> tuple[str, int | None]:
    if "launcher_failed" in report:
        return "error", None
    if report.get("timeout") or not report:  # no report: the backstop killed the launcher
        return "timeout", None
    if "signal" in report:
        sig = report["signal"]
        if sig in (signal.SIGXCPU, signal.SIGKILL):  # CPU limit (soft, then hard)
            return "timeout", -sig
        return "crash", -sig
    rc = report.get("exit")
    if rc == 0:
        return "ok", 0
    if rc == RC_MEMORY or "MemoryError" in stderr[-4000:]:
        return "memory", rc
    if rc == RC_SETUP:
        return "error", rc
    return "fail", rc


def _read_report(fd: int) -> dict[str, Any]:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    try:
        return json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}


def _read_tail(f) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - OUTPUT_LIMIT))
    return f.read().decode(errors="replace")


def _own_process_count() -> int:
    """Tasks (processes and threads) of this user: RLIMIT_NPROC counts them all when the uid is shared."""
    me = os.getuid()
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == me:
                    n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n


_KILL_AS_UID = "import os,signal,sys;u=int(sys.argv[1]);os.setgid(u);os.setuid(u);os.kill(-1,signal.SIGKILL)"


def _uid_alive(uid: int) -> bool:
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    return True
            except OSError:
                pass
    return False


def _kill_uid(uid: int) -> None:
    for _ in range(3):
        if not _uid_alive(uid):
            return
        subprocess.run([sys.executable, "-I", "-S", "-c", _KILL_AS_UID, str(uid)], env={},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        time.sleep(0.05)


_SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: the one place outside its dir a program can write


def _remove_files_of(uid: int) -> None:
    """Delete what the sandbox uid left in the shared temporary directories.

    Without this, a program could leave a file there for a later program run
    under the same uid (an answer cache is a reward hack).
    """
    for d in _SHARED_DIRS:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


def _kill_everything(pgid: int, uid: int | None) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    if uid is not None:
        _kill_uid(uid)


# ------------------------------------------------------------ worker pool for slow trusted functions


class _Worker:
    """One long-lived `python -c _serve` process calling `target` on JSON arguments."""

    def __init__(self, target: str, warmup: Sequence[Any] | None, memory_mb: int, start_timeout: float):
        env = dict(os.environ)
        # the parent's import path, as multiprocessing's spawn does, so `target` imports the same
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from rlvr.sandbox import _serve; _serve()", target,
             json.dumps(list(warmup) if warmup is not None else None), str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env)
        self._buf = b""
        line = self._readline(start_timeout)
        if line is None or json.loads(line).get("ready") is not True:
            self.kill()
            raise RuntimeError(f"grading worker for {target} did not start within {start_timeout:.0f}s"
                               + ("" if line is None else f": {json.loads(line).get('error', '')}"))

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

    def __init__(self, target: str, *, workers: int = 2, timeout: float = 10.0, warmup: Sequence[Any] | None = None,
                 memory_mb: int = 4096, start_timeout: float = 300.0):
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
    import importlib
    import resource
    import traceback

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
