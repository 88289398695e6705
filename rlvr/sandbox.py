"""Run untrusted code in another process, bounded in time and memory (stdlib only).

`run_program(code)` runs a model-written Python program in a jail and says
whether it exited 0 (a reward must ask more than that: see rlvr.judge).
`run_many` runs many of them on a thread pool, each thread driving its own
launcher process. (Trusted but slow functions run in rlvr.workers instead.)

How a program is contained (rlvr/jail.py has the details):

  trainer thread
   `- launcher (python -I -S rlvr/jail.py), new session, the trainer's user
       unshare: user namespace (unless root), mount, pid, ipc, uts, network
       `- init, pid 1 of the jail: a new root on a tmpfs holding read-only
          /usr, /lib*, /bin, /etc and the interpreter, a fresh /proc, empty
          /tmp /var/tmp /dev/shm /run; no $HOME, no run directory, no repo, no
          host unix socket; no network interface up; SysV IPC of its own
          `- the program: rlimits, no privilege (as root: an unused uid of its
             own; otherwise uid 0 of the user namespace with no capability),
             cwd /sandbox, environment scrubbed to PATH/HOME/TMPDIR/LANG.
  When the program ends, init ends and the kernel kills everything left in the
  pid namespace; the tmpfs, with all the program wrote, goes with it.

Memory is bounded for the whole process tree by rlimits: each process gets an
address space of memory_mb / max_processes and at most max_processes processes
and threads (RLIMIT_NPROC, counted per user namespace or per sandbox uid), so
the defaults (1024 MiB, 8) give 128 MiB per process. Files the program writes
live on one tmpfs of file_size_mb + 1 MiB.

Where the kernel forbids namespaces (some containers), programs run the old way
(an own uid when root, a network namespace or a Python-level socket guard, a
process group, rlimits, a fresh directory under /tmp) and `isolation()` lists
what is missing; a warning says so once.
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

from rlvr.jail import interpreter

RC_MEMORY = 86  # the harness's exit code for MemoryError
RC_SETUP = 97  # the launcher could not set the child up (a sandbox error, not the program's)
OUTPUT_LIMIT = 64 * 1024  # bytes of stdout/stderr kept in a Result
_UID_BASE = 2_000_000  # sandbox uids: far above any real account
_UID_SLOTS = 128  # concurrent sandboxes per trainer process
_JAIL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jail.py")
MISSING_WITHOUT_JAIL = [
    "pid namespace: kill(-1) can reach the trainer's other processes when not root",
    "mount namespace: $HOME, the run directory and host unix sockets are readable/connectable; "
    "/tmp, /var/tmp, /dev/shm are shared",
    "ipc namespace: SysV shared memory and message queues are shared",
]


@dataclass
class Result:
    passed: bool
    status: str  # ok | fail | timeout | memory | crash | error
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    returncode: int | None = None
    isolation: dict[str, str] = field(default_factory=dict)  # what containment this run really had


# Runs as the program's interpreter: `python -I -c _HARNESS` in the work dir.
_HARNESS = r"""
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
"""


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
    """What this machine lets the sandbox do, probed once: jail, uid, interpreter, network.

    First choice: the jail (namespaces) with the trainer's own interpreter (else the
    first system python3 that works there). If the
    kernel refuses namespaces, the old way: as root an unused uid (then the first
    python3 that uid can read), else the trainer's user; `missing` lists the
    protections lost, and a warning says so once.
    """
    global _probed
    with _probe_lock:
        if _probed is not None:
            return _probed
        probe = "import collections, json, math, re, socket\nprint('ok')\n"
        root = os.geteuid() == 0
        kw = dict(timeout=30.0, memory_mb=1024, cpu_seconds=30, max_processes=8, file_size_mb=1, stdin=None)
        r = Result(False, "error", stderr="RLVR_SANDBOX_NO_JAIL is set")  # to see (and test) the fallback
        for py in [] if os.environ.get("RLVR_SANDBOX_NO_JAIL") else _python_candidates():
            r = _run(probe, python=py, drop_uid=root, jail=True, **kw)
            if r.status == "ok" and r.stdout.strip() == "ok":
                break
        if r.status == "ok" and r.stdout.strip() == "ok":
            found: dict[str, Any] = {"python": py, "drop_uid": root, "jail": True, "missing": []}
            if r.isolation.get("seccomp") != "on":
                found["missing"].append(
                    f"seccomp ({r.isolation.get('seccomp', 'unknown')}): a program can make "
                    "namespaces of its own, mount a tmpfs there and fill it past the memory bound"
                )
                print("rlvr sandbox: WARNING: " + found["missing"][-1], file=sys.stderr)
        else:
            jail_error = (r.stderr.strip().splitlines() or [r.status])[-1]
            found = {"python": sys.executable, "drop_uid": False, "jail": False, "jail_error": jail_error}
            if root:
                for py in _python_candidates():
                    r = _run(probe, python=py, drop_uid=True, jail=False, **kw)
                    if r.status == "ok" and r.stdout.strip() == "ok":
                        found.update(python=py, drop_uid=True)
                        break
            r = _run(probe, python=found["python"], drop_uid=found["drop_uid"], jail=False, **kw)
            found["missing"] = list(MISSING_WITHOUT_JAIL)
            if not found["drop_uid"]:
                found["missing"].append(
                    "own uid: the program runs as the trainer's user and can write wherever the user can"
                )
            if r.isolation.get("network") != "namespace":
                found["missing"].append("network namespace: a Python-level socket guard only (ctypes can bypass it)")
            print(
                f"rlvr sandbox: WARNING: the kernel refused the jail ({jail_error}); programs run with "
                "weaker containment. Missing: " + "; ".join(found["missing"]),
                file=sys.stderr,
            )
        found["network"] = r.isolation.get("network", "unknown")
        found["user"] = r.isolation.get("user", "none")
        found["works"] = r.status == "ok"
        if not found["works"]:
            found["error"] = r.stderr[-2000:]
        _probed = found
        return found


# ------------------------------------------------------------ running programs


def run_program(
    code: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    cpu_seconds: int | None = None,
    max_processes: int = 8,
    file_size_mb: int = 16,
    stdin: str | None = None,
    python: str | None = None,
) -> Result:
    """Run Python `code` sandboxed; `passed` when it exits 0 within every limit.

    timeout: wall-clock seconds for the whole process tree; cpu_seconds: CPU time
    per process (default: the timeout, rounded up); memory_mb: memory for the
    whole process tree (each process gets memory_mb / max_processes of address
    space); max_processes: processes and threads; file_size_mb: largest file,
    and the size of the jail's tmpfs; stdin: text fed to the program; python:
    the interpreter (default: probed, see `isolation`).
    """
    return _run_with(
        code,
        timeout=timeout,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds,
        max_processes=max_processes,
        file_size_mb=file_size_mb,
        stdin=stdin,
        python=python,
    )


def _run_with(code: str, *, python: str | None = None, **kw: Any) -> Result:
    iso = isolation()
    return _run(code, python=python or iso["python"], drop_uid=iso["drop_uid"], jail=iso["jail"], **kw)


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


_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "2",
}


def _run(
    code: str,
    *,
    python: str,
    drop_uid: bool,
    jail: bool,
    timeout: float,
    memory_mb: int,
    cpu_seconds: int | None,
    max_processes: int,
    file_size_mb: int,
    stdin: str | bytes | None = None,
    harness: str = _HARNESS,
    fds: Sequence[int] = (),
    judge: dict[str, Any] | None = None,
) -> Result:
    """One program. `fds` become the program's fds 3, 4, ... and are closed here once it started.

    `judge` (rlvr.judge) has the launcher fork a judge wired to the program's fds 3 and 4.
    """
    owned = (*fds, judge["verdict_fd"]) if judge is not None else tuple(fds)
    t0 = time.monotonic()
    uid = _uids.acquire() if drop_uid else None
    workdir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    status_r, status_w = os.pipe()
    cfg_r, cfg_w = os.pipe()
    out_f, err_f, in_f = tempfile.TemporaryFile(), tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = None
    try:
        with open(os.path.join(workdir, "solution.py"), "w") as f:
            f.write(code)
        if uid is not None and not jail:
            os.chown(workdir, uid, uid)
            os.chown(os.path.join(workdir, "solution.py"), uid, uid)
        if stdin:
            in_f.write(stdin.encode() if isinstance(stdin, str) else stdin)
            in_f.seek(0)
        nproc = max_processes if (uid is not None or jail) else _own_process_count() + max_processes
        home = "/sandbox" if jail else workdir
        args = {
            "status_fd": status_w,
            "jail": jail,
            "uid": uid,
            "python": python,
            "workdir": workdir,
            "harness": harness,
            "timeout": float(timeout),
            "fds": list(fds),
            "judge": judge,
            "binds": interpreter(python)["binds"] if jail else [],
            "tmpfs_mb": int(file_size_mb) + 1,
            "path": interpreter(python)["path"],
            "env": dict(_ENV, HOME=home, TMPDIR="/tmp" if jail else workdir),
            "limits": {
                "as": (int(memory_mb) << 20) // max(1, int(max_processes)),
                "cpu": int(cpu_seconds or max(1, -(-timeout // 1))),
                "fsize": int(file_size_mb) << 20,
                "nproc": int(nproc),
            },
        }
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _JAIL, str(cfg_r)],
            stdin=in_f,
            stdout=out_f,
            stderr=err_f,
            pass_fds=(status_w, cfg_r, *owned),
            start_new_session=True,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin"},
        )
        for fd in (status_w, cfg_r, *owned):
            os.close(fd)
        status_w = cfg_r = -1
        owned = ()
        with os.fdopen(cfg_w, "wb") as f:
            cfg_w = -1
            f.write(json.dumps(args).encode())
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
        iso = {k: report[k] for k in ("network", "user", "jail", "proc", "root", "seccomp") if k in report}
        iso["memory"] = f"rlimit: {max_processes} x {memory_mb / max(1, max_processes):.0f} MiB"
        return Result(
            passed=status == "ok",
            status=status,
            stdout=out,
            stderr=err,
            duration=duration,
            returncode=rc,
            isolation=iso,
        )
    except OSError as e:
        return Result(passed=False, status="error", stderr=f"rlvr sandbox: {e!r}", duration=time.monotonic() - t0)
    finally:
        if proc is not None and proc.poll() is None:
            _kill_everything(proc.pid, uid)
            proc.wait()
        for fd in (status_r, status_w, cfg_r, cfg_w, *owned):
            if fd >= 0:
                os.close(fd)
        for f in (out_f, err_f, in_f):
            f.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            if not jail:  # in the jail the kernel already took every process and file of the run
                _kill_uid(uid)
                _remove_files_of(uid)
            _uids.release(uid)


def _classify(report: dict[str, Any], launcher_rc: int | None, stderr: str) -> tuple[str, int | None]:
    if "launcher_failed" in report or "setup_error" in report:
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
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", _KILL_AS_UID, str(uid)],
            env={},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
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
