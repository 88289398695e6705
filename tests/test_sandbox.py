"""The code sandbox: programs that loop, eat memory, fork, write where they must not,
or open connections neither hang nor harm the caller, and score as failures."""

import os
import shutil
import socket
import sys
import tempfile
import time

import pytest

from rlvr.sandbox import isolation, run_many, run_program
from rlvr.workers import WorkerPool

ISO = isolation()
OWN_UID = ISO["user"] != "none"
needs_uid = pytest.mark.skipif(not OWN_UID, reason=f"the sandbox cannot drop to a uid of its own here: {ISO}")


def test_sandbox_works_here():
    assert ISO["works"], ISO
    r = run_program("print(6 * 7)")
    assert (r.passed, r.status, r.stdout.strip(), r.returncode) == (True, "ok", "42", 0)


@pytest.mark.parametrize(
    "code, status",
    [
        ("import sys; sys.exit(3)", "fail"),
        ("assert 1 + 1 == 3", "fail"),
        ("def f(:\n  pass", "fail"),  # a syntax error
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crash"),
    ],
)
def test_failures_are_not_passes(code, status):
    r = run_program(code, timeout=5)
    assert (r.passed, r.status) == (False, status), r.stderr


def test_infinite_loop_is_stopped_at_the_wall_clock_limit():
    t0 = time.monotonic()
    r = run_program("while True:\n    pass\n", timeout=1.0)
    assert (r.passed, r.status) == (False, "timeout")
    assert time.monotonic() - t0 < 5


def test_cpu_limit_stops_a_busy_program_before_the_wall_clock():
    r = run_program("while True:\n    pass\n", timeout=30, cpu_seconds=1)
    assert (r.passed, r.status) == (False, "timeout")
    assert r.duration < 10


def test_sleeping_children_do_not_outlive_the_timeout():
    code = "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        break\ntime.sleep(60)\n"
    t0 = time.monotonic()
    r = run_program(code, timeout=1.0)
    assert r.status == "timeout" and time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(16 * 1024 ** 3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n",
    ],
)
def test_memory_bomb_is_refused(code):
    r = run_program(code, timeout=10, memory_mb=256)
    assert (r.passed, r.status) == (False, "memory"), (r.status, r.stderr[-500:])
    assert r.duration < 8


def test_fork_bomb_fails_fast():
    r = run_program("import os\nwhile True:\n    os.fork()\n", timeout=5, max_processes=16)
    assert not r.passed and r.status in ("fail", "timeout")
    assert r.duration < 8


def test_process_limit_really_caps_the_process_count():
    code = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    r = run_program(code, timeout=10, max_processes=12)
    assert r.passed, r.stderr
    assert 0 < int(r.stdout) < 12  # the program itself is one of the 12
    assert r.duration < 8  # the 30 s sleepers were killed when the program ended


def _processes_with(token: str) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(d))
            except OSError:
                pass
    return found


@needs_uid
def test_a_child_that_leaves_the_process_group_is_still_killed():
    token = f"rlvr-setsid-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {token!r}])\n"
        "import time; time.sleep(0.5)\n"
    )
    r = run_program(code, timeout=5)
    assert r.passed, r.stderr
    time.sleep(0.2)
    assert not _processes_with(token)


@needs_uid
def test_cannot_write_outside_its_directory():
    d = tempfile.mkdtemp()
    os.chmod(d, 0o755)  # readable by all, writable by root only
    target, keep = os.path.join(d, "pwned"), os.path.join(d, "keep")
    with open(keep, "w") as f:
        f.write("precious")
    try:
        r = run_program(f"open({target!r}, 'w').write('x')", timeout=5)
        assert (r.passed, r.status) == (False, "fail")
        assert "PermissionError" in r.stderr or "FileNotFoundError" in r.stderr  # in the jail it is not there
        assert not os.path.exists(target)
        r = run_program(f"import os\nos.remove({keep!r})", timeout=5)
        assert not r.passed and open(keep).read() == "precious"
    finally:
        shutil.rmtree(d)


@needs_uid
def test_nothing_is_left_in_shared_temp_dirs_for_the_next_program():
    code = (
        "import os\nfor d in ('/tmp', '/dev/shm'):\n"
        "    open(os.path.join(d, 'rlvr-answer-cache'), 'w').write('42')\n"
        "    os.makedirs(os.path.join(d, 'rlvr-cache-dir', 'sub'), exist_ok=True)\n"
    )
    r = run_program(code, timeout=5)
    assert r.passed, r.stderr
    for d in ("/tmp", "/dev/shm"):
        assert not os.path.exists(os.path.join(d, "rlvr-answer-cache"))
        assert not os.path.exists(os.path.join(d, "rlvr-cache-dir"))


def test_cannot_open_a_network_connection():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n"
    try:
        r = run_program(code, timeout=5)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert (r.passed, r.status) == (False, "fail")
    assert r.isolation["network"] in ("namespace", "python-guard")


def test_fresh_directory_and_scrubbed_environment(monkeypatch):
    monkeypatch.setenv("RLVR_TEST_SECRET", "hunter2")
    code = "import os, json\nprint(json.dumps([os.getcwd(), sorted(os.listdir('.')), dict(os.environ)]))\n"
    import json

    first = run_program(code + "open('left-behind', 'w').write('x')\n")
    a, b = json.loads(first.stdout), json.loads(run_program(code).stdout)
    assert a[1] == b[1] == ["solution.py"]  # nothing of the first run is seen by the second
    assert "RLVR_TEST_SECRET" not in a[2] and "hunter2" not in json.dumps(a[2])
    if not ISO["jail"]:  # without the jail: a fresh directory under /tmp each time, removed afterwards
        assert a[0] != b[0] and not os.path.exists(a[0])


def test_stdin_is_fed():
    r = run_program("print(sum(map(int, input().split())))", stdin="2 3 4\n")
    assert r.stdout.strip() == "9"


def test_run_many_keeps_order_and_runs_in_parallel():
    progs = [f"import time\ntime.sleep(0.5)\nprint({i})" for i in range(8)]
    t0 = time.monotonic()
    results = run_many(progs, workers=4)
    elapsed = time.monotonic() - t0
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(8)]
    assert all(r.passed for r in results)
    assert elapsed < 8 * 0.5  # serial would take at least 4 s


def test_run_many_takes_per_program_arguments():
    results = run_many([{"code": "print(input())", "stdin": "a"}, "import sys; sys.exit(1)"], workers=2, timeout=5)
    assert [r.status for r in results] == ["ok", "fail"] and results[0].stdout.strip() == "a"


def test_worker_pool_kills_a_hung_call_and_recovers():
    pool = WorkerPool("time:sleep", workers=1, timeout=0.5)
    try:
        assert pool.call([0]) == ("ok", None)
        t0 = time.monotonic()
        assert pool.call([30]) == ("timeout", None)
        assert time.monotonic() - t0 < 5
        assert pool.call([0]) == ("ok", None)  # a fresh worker replaced the killed one
        status, tb = pool.call(["not a number"])
        assert status == "error" and "TypeError" in tb
        assert pool.map([[0], [0], [0]]) == [("ok", None)] * 3
    finally:
        pool.close()


# ------------------------------------------------------------ containment: the attack classes of issue 8


def test_the_jail_is_used_where_the_kernel_allows_namespaces():
    import subprocess

    unshare = shutil.which("unshare")
    if not unshare:
        pytest.skip("no unshare(1) to ask the kernel independently")
    flags = ["--mount", "--pid", "--fork", "--ipc", "--net"] + (
        [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    )
    allowed = subprocess.run([unshare, *flags, "true"], capture_output=True).returncode == 0
    if not allowed:
        assert not ISO["jail"] and ISO["missing"], ISO  # said, not pretended
        pytest.skip("the kernel forbids namespaces here; the fallback said what is missing")
    assert ISO["jail"], f"the kernel allows namespaces but the jail failed: {ISO.get('jail_error')}"


def test_the_program_has_no_capability_and_no_view_of_the_host():
    code = (
        "import os\nst = open('/proc/self/status').read()\n"
        "print([l.split()[1] for l in st.splitlines() if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs'))])\n"
        "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    r = run_program(code)
    assert r.passed, r.stderr
    caps, pids = (eval(line) for line in r.stdout.splitlines())
    assert caps[:2] == ["0000000000000000"] * 2
    if ISO["jail"]:
        assert caps[2] == "1" and len(pids) <= 3  # init, the program (and /proc's own reader)
        assert r.isolation["jail"] == "namespaces"


def _unused_uid() -> int:
    import pwd

    used = {u.pw_uid for u in pwd.getpwall()}
    return next(u for u in range(9_100_002, 9_200_000) if u not in used and not _uid_has_processes(u))


def _uid_has_processes(uid: int) -> bool:
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and os.stat(f"/proc/{d}").st_uid == uid:
                return True
        except OSError:
            pass
    return False


ATTACKS = os.path.join(os.path.dirname(__file__), "sandbox_attacks.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("who", ["trainer's user", "unprivileged uid"])
def test_attacks_are_contained(who):
    """kill(-1), daemons, files in shared places, private files, memory, SysV shm, unix sockets, network.

    Run by a driver script as the suite's own user and, when that is root, again
    as an unused unprivileged uid (the common case for researchers).
    """
    import json
    import subprocess

    if not ISO["jail"]:
        pytest.skip(f"no jail on this machine ({ISO.get('jail_error')}); missing: {ISO['missing']}")
    home = tempfile.mkdtemp(prefix="rlvr-home-")  # the driver's $HOME, with a private file in it
    if who == "trainer's user":
        cmd, env = [sys.executable, ATTACKS, REPO], dict(os.environ, HOME=home)
    else:
        if os.geteuid() != 0:
            pytest.skip("the suite is not root: the run as the trainer's user is the unprivileged one")
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("no setpriv to switch to an unprivileged uid")
        uid = _unused_uid()
        os.chown(home, uid, uid)  # under /tmp: tmp_path's parents are not searchable by that uid
        python = next(
            (
                p
                for p in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable)
                if subprocess.run(
                    [
                        setpriv,
                        f"--reuid={uid}",
                        f"--regid={uid}",
                        "--clear-groups",
                        p,
                        "-c",
                        f"import sys; sys.path.insert(0, {REPO!r}); import rlvr.sandbox",
                    ],
                    capture_output=True,
                ).returncode
                == 0
            ),
            None,
        )
        if python is None:
            shutil.rmtree(home)
            pytest.skip(f"no python that uid {uid} can run with {REPO} readable")
        cmd = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", python, ATTACKS, REPO]
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd="/")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert p.returncode == 0 and lines and lines[-1] == {"done": True}, (
        f"the driver did not survive (rc {p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}"
    )
    assert lines[0]["isolation"]["works"], lines[0]  # a sandbox that runs nothing contains everything
    escaped = [x for x in lines if x.get("escaped")]
    assert not escaped, escaped
    # 9 attacks, and the keyring one where its syscall number is known
    assert len([x for x in lines if "attack" in x]) == 9 + (os.uname().machine in ("x86_64", "aarch64"))


def test_without_the_jail_the_missing_protections_are_said_once(tmp_path):
    import subprocess

    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from rlvr.sandbox import isolation, run_program\n"
        "iso = isolation(); isolation()\n"
        "r = run_program('print(1)')\n"
        "print(iso['jail'], len(iso['missing']), r.stdout.strip(), r.isolation.get('jail'))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, REPO],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, RLVR_SANDBOX_NO_JAIL="1"),
    )
    jail, missing, out, run_jail = p.stdout.split()
    assert (jail, out, run_jail) == ("False", "1", "none") and int(missing) >= 3, p.stderr
    assert p.stderr.count("WARNING") == 1 and "pid namespace" in p.stderr and "mount namespace" in p.stderr


def test_seccomp_refuses_new_namespaces_but_threads_and_subprocesses_work():
    """The filter refuses unshare/setns/mount and clone with a CLONE_NEW* flag (nested namespaces would
    give the program capabilities, and a tmpfs outside the memory bound); clone3 answers ENOSYS so libc
    falls back to clone: threads, fork and subprocess still work."""
    code = (
        "import ctypes, os, subprocess, threading\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "print(subprocess.run(['echo', 'child'], capture_output=True, text=True).stdout.strip())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(7)\n"
        "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    r = run_program(code, timeout=20)
    if not r.isolation.get("jail") or r.isolation.get("seccomp") != "on":
        pytest.skip(f"no jail or no seccomp here: {r.isolation}")
    assert r.status == "ok", r.stderr
    assert r.stdout.split("\n")[:4] == ["unshare -1 1", "thread", "child", "fork 7"], r.stdout
