"""Containment attacks on rlvr.sandbox, run as a script by test_sandbox.py (as root, and as an unused uid).

    python sandbox_attacks.py REPO_ROOT [--kill]

imports rlvr.sandbox from REPO_ROOT, runs each attack as a sandboxed program and
prints one JSON line per attack, {"attack", "escaped", "detail"}, flushed at
once (the kill attack runs last: under a weak sandbox it kills this script; without
the jail and not root it is skipped unless --kill is given, since it would kill
every process of the user, the test runner too).
Stdlib only, so the system python3 runs it for a uid that cannot read the venv.
"""

import json
import os
import secrets
import socket
import stat
import sys
import tempfile
import time

sys.path.insert(0, sys.argv[1])
from rlvr.sandbox import isolation, run_program  # noqa: E402

TOKEN = "rlvr-attack-" + secrets.token_hex(6)
HOME = os.environ.get("HOME") or tempfile.mkdtemp()
RUN_DIR = tempfile.mkdtemp(prefix="rlvr-run-")  # stands for the trainer's run directory
WORLD = os.path.join(tempfile.mkdtemp(prefix="rlvr-ww-"), "nested")  # a nested world-writable directory
os.makedirs(WORLD)
for d in (os.path.dirname(WORLD), WORLD):
    os.chmod(d, 0o1777)


CLEANUP = []


def report(attack, escaped, detail=""):
    print(json.dumps({"attack": attack, "escaped": bool(escaped), "detail": str(detail)[-300:]}), flush=True)


def files_left():
    places = [HOME, "/tmp", "/var/tmp", "/dev/shm", "/run/lock", WORLD]
    return [os.path.join(d, TOKEN) for d in places if os.path.lexists(os.path.join(d, TOKEN))]


def processes_with_token():
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if TOKEN.encode() in f.read():
                        found.append(int(d))
            except OSError:
                pass
    return found


def main():
    iso = isolation()
    print(json.dumps({"isolation": iso, "uid": os.getuid()}), flush=True)

    # files anywhere writable: nothing may persist outside
    places = [HOME, "/tmp", "/var/tmp", "/dev/shm", "/run/lock", WORLD]
    code = (
        f"import os\nfor d in {places!r}:\n    try:\n        open(os.path.join(d, {TOKEN!r}), 'w').write('x')\n"
        f"    except OSError as e:\n        print(d, e)\n"
    )
    r = run_program(code, timeout=10)
    left = files_left()
    report("files persist ($HOME, /tmp, /var/tmp, /dev/shm, /run/lock, nested 1777 dir)", left, left or r.stdout)
    for p in left:
        os.unlink(p)

    # private files of the trainer's user: a 0600 file in $HOME and in the run directory
    secret = secrets.token_hex(8)
    paths = [os.path.join(HOME, TOKEN + ".key"), os.path.join(RUN_DIR, "secret.txt")]
    for p in paths:
        with open(p, "w") as f:
            f.write(secret)
        os.chmod(p, 0o600)
    code = f"for p in {paths!r}:\n    try:\n        print(open(p).read())\n    except OSError as e:\n        print(e)\n"
    r = run_program(code, timeout=10)
    report("read a private file in $HOME / the run dir", secret in r.stdout, r.stdout)
    for p in paths:
        os.unlink(p)

    # a double-forked daemon must be gone once the run ends
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {TOKEN!r}])\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
    )
    r = run_program(code, timeout=10)
    time.sleep(0.3)
    alive = processes_with_token()
    report("double-forked daemon outlives the run", alive, f"pids {alive}; {r.status} {r.stderr[-200:]}")
    for pid in alive:
        os.kill(pid, 9)

    # one memory bound for the whole tree: 6 processes x 200 MiB under 256 MiB
    code = (
        "import os\n"
        "r, w = os.pipe()\n"
        "for _ in range(5):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            break\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        "    b = bytearray(200 << 20)\n"
        "    b[::4096] = b'x' * len(b[::4096])\n"
        "    os.write(w, b'1')\n"
        "except MemoryError:\n"
        "    pass\n"
        "import time; time.sleep(1.5)\n"
        "os.set_blocking(r, False)\n"
        "try:\n"
        "    print(len(os.read(r, 100)))\n"
        "except BlockingIOError:\n"
        "    print(0)\n"
    )
    r = run_program(code, timeout=15, memory_mb=256)
    n = max([int(x) for x in r.stdout.split() if x.isdigit()] or [0])  # every process prints; the first read wins
    report("6 x 200 MiB under a 256 MiB bound", n * 200 > 256, f"{n} of 6 got 200 MiB; {r.status}")

    # SysV shared memory must not outlive the run
    key = secrets.randbelow(1 << 30) + 1
    code = f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.shmget({key}, 4096, 0o1000 | 0o666))\n"
    r = run_program(code, timeout=10)
    with open("/proc/sysvipc/shm") as f:
        keys = {int(line.split()[0]) for line in list(f)[1:] if line.split()}
    report("SysV shared memory outlives the run", key in keys, r.stdout)
    if key in keys:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmctl(libc.shmget(key, 0, 0), 0, None)  # IPC_RMID

    # a filesystem unix socket the trainer's side listens on
    sock_path = os.path.join(tempfile.mkdtemp(prefix="rlvr-sock-"), "s")
    CLEANUP.append(os.path.dirname(sock_path))
    os.chmod(os.path.dirname(sock_path), 0o755)
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    os.chmod(sock_path, stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)
    server.listen(4)
    server.settimeout(0.3)
    code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({sock_path!r})\ns.sendall(b'hi')\n"
    r = run_program(code, timeout=10)
    try:
        server.accept()[0].close()
        connected = True
    except socket.timeout:
        connected = False
    server.close()
    report("connect to a host unix socket", connected, r.stderr[-200:])

    # the network, even localhost
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    tcp.settimeout(0.3)
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=2).sendall(b'x')\n"
    r = run_program(code, timeout=10)
    try:
        tcp.accept()[0].close()
        connected = True
    except socket.timeout:
        connected = False
    tcp.close()
    report("network connection to localhost", connected, r.stderr[-200:])

    # memory outside the bound: a nested user + mount namespace mounting its own tmpfs and filling it
    # (tmpfs pages count against no rlimit). 192 MiB in files of 8 MiB, under a 128 MiB bound.
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "uid, gid = os.getuid(), os.getgid()\n"
        "if libc.unshare(0x10000000 | 0x00020000) == 0:\n"
        "    for name, text in (('setgroups', 'deny'), ('uid_map', f'0 {uid} 1'), ('gid_map', f'0 {gid} 1')):\n"
        "        try:\n"
        "            open('/proc/self/' + name, 'w').write(text)\n"
        "        except OSError:\n"
        "            pass\n"
        "os.makedirs('/tmp/big', exist_ok=True)\n"
        "print('mount', libc.mount(b'none', b'/tmp/big', b'tmpfs', 0, b'size=1g'))\n"
        "n = 0\n"
        "try:\n"
        "    for i in range(24):\n"
        "        with open(f'/tmp/big/f{i}', 'wb') as f:\n"
        "            for _ in range(8):\n"
        "                f.write(b'x' * (1 << 20))\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print(e)\n"
        "print('MiB', n * 8)\n"
    )
    r = run_program(code, timeout=20, memory_mb=128, max_processes=2, file_size_mb=16)
    mib = max([int(x) for line in r.stdout.splitlines() if line.startswith("MiB") for x in line.split()[1:]] or [0])
    report("files on a tmpfs of its own, past the memory bound (nested namespaces)", mib > 128, r.stdout[-200:])

    # the trainer's session keyring (ssh/kerberos/ecryptfs keys live in keyrings) must not be inherited
    nr = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
    if nr is not None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        mine = libc.syscall(nr, 0, -3, 0, 0, 0)  # KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, no create
        code = f"import ctypes\nprint('KR', ctypes.CDLL(None).syscall({nr}, 0, -3, 0, 0, 0))\n"
        r = run_program(code, timeout=10)
        theirs = [int(x) for line in r.stdout.splitlines() if line.startswith("KR") for x in line.split()[1:]]
        report("the trainer's session keyring is the program's", mine > 0 and mine in theirs, f"{mine} {theirs}")

    # last: kill every process the program may signal; this script must survive it
    if not iso.get("jail") and os.getuid() != 0 and "--kill" not in sys.argv:
        print(json.dumps({"skipped": "kill(-1): without the jail it reaches every process of this user"}), flush=True)
        print(json.dumps({"done": True}), flush=True)
        return
    r = run_program("import os, signal\nos.kill(-1, signal.SIGKILL)\n", timeout=10)
    time.sleep(0.2)
    report("kill(-1, SIGKILL) reaches the trainer", False, r.status)  # still here to say so
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil

        for d in (RUN_DIR, os.path.dirname(WORLD), *CLEANUP):
            shutil.rmtree(d, ignore_errors=True)
