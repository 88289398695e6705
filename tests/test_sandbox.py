"""The code sandbox: programs that loop, eat memory, fork, write where they must not,
or open connections neither hang nor harm the caller, and score as failures."""

import os
import shutil
import socket
import tempfile
import time

import pytest

from rlvr.sandbox import WorkerPool, isolation, run_many, run_program

ISO = isolation()
OWN_UID = ISO["user"] != "none"
needs_uid = pytest.mark.skipif(not OWN_UID, reason=f"the sandbox cannot drop to a uid of its own here: {ISO}")


def test_sandbox_works_here():
    assert ISO["works"], ISO
    r = run_program("print(6 * 7)")
    assert (r.passed, r.status, r.stdout.strip(), r.returncode) == (True, "ok", "42", 0)


@pytest.mark.parametrize("code, status", [
    ("import sys; sys.exit(3)", "fail"),
    ("assert 1 + 1 == 3", "fail"),
    ("def f(:\n  pass", "fail"),  # a syntax error
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crash"),
])
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


@pytest.mark.parametrize("code", [
    "x = bytearray(16 * 1024 ** 3)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))\n",
])
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


@needs_uid
def test_a_child_that_leaves_the_process_group_is_still_killed():
    code = (
        "import os, time\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.write(w, str(os.getpid()).encode()); time.sleep(60); os._exit(0)\n"
        "print(os.read(r, 32).decode())\n"
    )
    r = run_program(code, timeout=5)
    assert r.passed, r.stderr
    pid = int(r.stdout)
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


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
        assert "PermissionError" in r.stderr
        assert not os.path.exists(target)
        r = run_program(f"import os\nos.remove({keep!r})", timeout=5)
        assert not r.passed and open(keep).read() == "precious"
    finally:
        shutil.rmtree(d)


@needs_uid
def test_nothing_is_left_in_shared_temp_dirs_for_the_next_program():
    code = ("import os\nfor d in ('/tmp', '/dev/shm'):\n"
            "    open(os.path.join(d, 'rlvr-answer-cache'), 'w').write('42')\n"
            "    os.makedirs(os.path.join(d, 'rlvr-cache-dir', 'sub'), exist_ok=True)\n")
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

    a, b = (json.loads(run_program(code).stdout) for _ in range(2))
    assert a[0] != b[0] and a[1] == ["solution.py"]
    assert "RLVR_TEST_SECRET" not in a[2] and "hunter2" not in json.dumps(a[2])
    assert not os.path.exists(a[0])  # removed afterwards


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
