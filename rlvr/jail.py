"""The launcher that puts one sandboxed program in a jail: run as `python -I -S jail.py FD`.

`rlvr.sandbox` starts this file as a script (stdlib only, so it starts fast)
and writes its settings, JSON, to the pipe FD. What it builds, the way
bubblewrap and nsjail do, without needing root:

  launcher (the trainer's user, own session)
    |- judge (only for rlvr.judge's function tests): forked first, so it stays
    |  outside every namespace below, wired to the program's fds 3 and 4
    unshare(user [not when root], mount, pid, ipc, uts, net)
    `- init: pid 1 of the new pid namespace
         builds a new root on a tmpfs: read-only binds of /usr, /bin, /lib*, /etc and
         the interpreter's prefixes; /dev with null, zero, full, random, urandom; a
         fresh /proc; empty /tmp, /var/tmp, /dev/shm, /run; /sandbox holding
         solution.py. Then pivot_root: $HOME, the run directory, the repo, other
         users' files and every unix socket on the host are simply not there.
         `- the program: rlimits, then no privilege at all (as root: an unused uid
            of its own; as a user: uid 0 of the user namespace with every capability
            dropped), no_new_privs, exec python.
  When the program exits, init exits, and the kernel kills every process left in
  the pid namespace: no daemon outlives the run. kill(-1) from inside reaches
  only the namespace. The network namespace has no interface up (not even
  loopback), the ipc namespace has its own SysV shared memory and message
  queues, and everything written lives on the tmpfs, which goes with the run.

Memory: RLIMIT_AS per process, RLIMIT_NPROC processes (threads count too), so
memory_mb bounds the whole tree when the caller divides it (see rlvr.sandbox).
RLIMIT_NPROC is counted per user namespace (Linux >= 5.14), or per sandbox uid
as root, so other processes of the trainer's user do not use it up.

Without namespaces (`jail: false`, some containers forbid them) it runs the
program the old way: a network namespace if it can, a subreaper, a process
group, rlimits, an own uid when root; rlvr.sandbox says what is missing.
"""

import ctypes
import json
import os
import platform
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 24, 36, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280}
KEYCTL_JOIN_SESSION_KEYRING = 1
# seccomp: the program may create no namespace (nested user namespaces give back every capability,
# and with them mounts of its own), join none, mount nothing. clone3 answers ENOSYS so that libc falls
# back to clone, whose flags the filter can read. Other architectures' calls (x86's int 0x80, x32) are
# refused. Numbers per architecture: AUDIT_ARCH, then unshare, setns, mount, clone, clone3.
SECCOMP = {"x86_64": (0xC000003E, 272, 308, 165, 56, 435), "aarch64": (0xC00000B7, 97, 268, 40, 220, 435)}
CLONE_NEW_ANY = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
DEVICES = ("null", "zero", "full", "random", "urandom")
RC_SETUP = 97

libc = ctypes.CDLL(None, use_errno=True)


def _b(s):
    return None if s is None else os.fsencode(s)


def _ok(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def mount(src, dst, fstype, flags, data=None):
    _ok(libc.mount(_b(src), _b(dst), _b(fstype), ctypes.c_ulong(flags), _b(data)), "mount %s" % dst)


def _locked_flags(path):
    """Mount flags a remount must keep: inside a user namespace the kernel refuses to clear them."""
    f = os.statvfs(path).f_flag
    pairs = (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
        (getattr(os, "ST_NOATIME", 1024), 1024),
        (getattr(os, "ST_NODIRATIME", 2048), 2048),
        (getattr(os, "ST_RELATIME", 4096), 1 << 21),
    )
    return sum(ms for st, ms in pairs if f & st)


def bind_ro(src, dst):
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | _locked_flags(src))


def build_root(new, a, report):
    """A fresh root on a tmpfs at `new`, then pivot_root into it; cwd /sandbox."""
    with open(os.path.join(new, "solution.py"), "rb") as f:
        code = f.read()
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,nr_inodes=16384,mode=0755" % a["tmpfs_mb"])
    os.umask(0o022)
    for d in SYSTEM_DIRS:
        src = "/" + d
        if os.path.islink(src):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(src), new + src)
        elif os.path.isdir(src):
            bind_ro(src, new + src)
    covered = tuple("/" + d + "/" for d in SYSTEM_DIRS)
    for p in a["binds"]:  # the interpreter's prefixes (a venv, a pyenv under $HOME): only those
        if p != "/" and not (p + "/").startswith(covered) and os.path.exists(p):
            bind_ro(os.path.realpath(p), new + p)
    for d in ("tmp", "var/tmp", "dev/shm", "run/lock", "sandbox"):
        os.makedirs(os.path.join(new, d), exist_ok=True)
        os.chmod(os.path.join(new, d), 0o1777 if d != "sandbox" else 0o755)
    for d in DEVICES:
        open(new + "/dev/" + d, "w").close()
        mount("/dev/" + d, new + "/dev/" + d, None, MS_BIND)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, new + "/dev/" + name)
    os.makedirs(new + "/proc")
    try:
        mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        report["proc"] = "own"
    except OSError as e:  # some containers mask parts of /proc; a new one is then refused
        report["proc"] = "none (%s)" % e.strerror
    with open("/proc/self/uid_map") as f:
        own_userns = f.read().split()[:3] != ["0", "0", "4294967295"]  # not the host's (identity) map
    if own_userns and a["uid"] is None and report["proc"] == "own":
        # No user namespace inside this one: in one of its own the program would hold every capability
        # again and could mount a tmpfs of its own and fill it, memory no rlimit counts. The limit is
        # per user namespace (Linux >= 4.9), and this init, uid 0 of the jail's own, may set it. NEVER
        # as root: there this would be the host's limit (root's jail has no user namespace; the
        # program's seccomp filter refuses new namespaces there, and here too).
        try:
            with open(new + "/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
        except OSError:
            pass
    with open(new + "/sandbox/solution.py", "wb") as f:
        f.write(code)
    if a["uid"] is not None:
        os.chown(new + "/sandbox", a["uid"], a["uid"])
        os.chown(new + "/sandbox/solution.py", a["uid"], a["uid"])
    os.chdir(new)
    nr = SYS_PIVOT_ROOT.get(platform.machine())
    if nr is not None and libc.syscall(nr, b".", b".") == 0:
        _ok(libc.umount2(b".", MNT_DETACH), "umount old root")  # the old root was stacked on top
        report["root"] = "pivot_root"
    else:
        _ok(libc.chroot(b"."), "chroot")
        report["root"] = "chroot"
    os.chdir("/sandbox")


def seccomp_filter():
    """Install the filter described at SECCOMP (after no_new_privs); nothing where the architecture is unknown
    (the launcher reports `seccomp: none` and rlvr.sandbox lists it as missing)."""
    arch = SECCOMP.get(platform.machine())
    if arch is None:
        return
    audit, unshare, setns, mnt, clone, clone3 = arch
    LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JSET|K, BPF_RET|K
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ALLOW, RET_ERRNO | errno
    prog = [
        (LD, 0, 0, 4),
        (JEQ, 1, 0, audit),
        (RET, 0, 0, EPERM),  # another architecture's calls
        (LD, 0, 0, 0),
        (JSET, 0, 1, 0x40000000),
        (RET, 0, 0, EPERM),  # x32 calls
        (JEQ, 0, 1, clone3),
        (RET, 0, 0, ENOSYS),
        (JEQ, 2, 0, unshare),
        (JEQ, 1, 0, setns),
        (JEQ, 0, 1, mnt),
        (RET, 0, 0, EPERM),
        (JEQ, 0, 3, clone),
        (LD, 0, 0, 16),
        (JSET, 0, 1, CLONE_NEW_ANY),
        (RET, 0, 0, EPERM),
        (RET, 0, 0, ALLOW),
    ]

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
    _ok(libc.prctl(22, 2, ctypes.byref(Prog(len(prog), insns)), 0, 0), "seccomp")  # PR_SET_SECCOMP, MODE_FILTER


def drop_privileges(a):
    if a["uid"] is not None:  # root: become a uid of its own, which clears every capability
        os.setgroups([])
        os.setgid(a["uid"])
        os.setuid(a["uid"])
    elif a["jail"]:  # uid 0 of a user namespace: drop every capability, for good
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        for cap in range(last + 1):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        _ok(libc.capset(header, data), "capset")
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    seccomp_filter()


def exec_program(a, in_jail):
    """In the forked child: limits, privileges, file descriptors, then exec the interpreter."""
    try:
        os.setpgid(0, 0)
        L = a["limits"]
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (L["as"], L["as"]))
        resource.setrlimit(resource.RLIMIT_CPU, (L["cpu"], L["cpu"] + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (L["fsize"], L["fsize"]))
        resource.setrlimit(resource.RLIMIT_NPROC, (L["nproc"], L["nproc"]))
        nr = SYS_KEYCTL.get(platform.machine())  # a new, empty session keyring, not the trainer's
        if nr is None or libc.syscall(nr, KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
            raise OSError(ctypes.get_errno(), "could not leave the trainer's session keyring")
        drop_privileges(a)
        if not in_jail:
            os.chdir(a["workdir"])
        fds = [os.dup(fd) for fd in a["fds"]]  # the program's own channels become 3, 4, ...
        for i, fd in enumerate(fds):
            os.dup2(fd, 3 + i)
            os.set_inheritable(3 + i, True)  # dup2(fd, fd) keeps close-on-exec
        os.closerange(3 + len(fds), 1 << 16)
        code = "import sys; sys.path[:] = %r\n%s" % (a["path"], a["harness"])  # site's path, not its cost
        os.execve(a["python"], [a["python"], "-I", "-S", "-c", code], a["env"])
    except BaseException as e:
        os.write(2, ("rlvr sandbox: could not start the program: %r\n" % (e,)).encode())
    os._exit(RC_SETUP)


def wait_status(st):
    return {"signal": os.WTERMSIG(st)} if os.WIFSIGNALED(st) else {"exit": os.WEXITSTATUS(st)}


def init(a, out):
    """pid 1 of the jail: build the root, start the program, report how it ended, then go."""
    report = {}
    try:
        build_root(a["workdir"], a, report)
    except OSError as e:
        os.write(2, ("rlvr sandbox: could not build the jail: %s\n" % e).encode())
        os.write(out, json.dumps({"setup_error": str(e)}).encode())
        os._exit(RC_SETUP)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        exec_program(a, True)
    for fd in a["fds"]:
        os.close(fd)
    while True:
        try:
            w, st = os.wait()
        except ChildProcessError:
            report["exit"] = RC_SETUP
            break
        if w == pid:
            report.update(wait_status(st))
            break
    os.write(out, json.dumps(report).encode())
    os._exit(0)  # the kernel now kills whatever the program left in the namespace


def enter_namespaces(a, report):
    root = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET
    _ok(libc.unshare(flags | (0 if root else CLONE_NEWUSER)), "unshare")
    if not root:
        for name, text in (("setgroups", "deny"), ("uid_map", "0 %d 1" % uid), ("gid_map", "0 %d 1" % gid)):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
    report.update(
        network="namespace",
        jail="namespaces",
        user="uid %d" % a["uid"] if a["uid"] is not None else "user namespace (uid %d as 0)" % uid,
    )


_INTERPRETERS = {}


def interpreter(python: str) -> dict:
    """What an interpreter needs in the jail: its prefixes and import path (a venv, a pyenv), probed once.

    Programs run with `-I -S` and this import path (the one site would make), so
    they see the interpreter's packages without paying site's start-up (~25 ms).
    """
    import subprocess

    if python not in _INTERPRETERS:
        code = (
            "import json, os, sys; print(json.dumps([[sys.prefix, sys.base_prefix, sys.exec_prefix, "
            "sys.base_exec_prefix], [p for p in sys.path if os.path.isabs(p) and os.path.exists(p)]]))"
        )
        try:
            prefixes, path = json.loads(
                subprocess.run([python, "-I", "-c", code], capture_output=True, timeout=60).stdout
            )
        except (OSError, ValueError, subprocess.SubprocessError, TypeError):
            prefixes, path = [], []
        # prefixes only: a path entry elsewhere (an old-style editable install: the repo) stays outside
        wanted = prefixes + [os.path.dirname(python), os.path.dirname(os.path.realpath(python))]
        binds = []
        for p in sorted({os.path.abspath(p) for p in wanted if p}):
            if not any(p == b or p.startswith(b + "/") for b in binds):
                binds.append(p)
        _INTERPRETERS[python] = {"binds": binds, "path": path}
    return _INTERPRETERS[python]


def start_judge(a):
    """Fork rlvr.judge's judge here, before the namespaces: outside the jail, wired to the program's fds 3, 4."""
    calls_r, calls_w = os.pipe()
    answers_r, answers_w = os.pipe()
    j = a["judge"]
    if os.fork() == 0:
        try:
            os.close(a["status_fd"])
            for fd in (calls_r, answers_w):
                os.close(fd)
            import importlib.util

            spec = importlib.util.spec_from_file_location("rlvr_judge", j["module"])
            judge = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(judge)
            judge.serve(j, calls_w, answers_r, j["verdict_fd"])
        except BaseException as e:
            os.write(2, ("rlvr judge: %r\n" % (e,)).encode())
        os._exit(0)
    for fd in (calls_w, answers_r, j["verdict_fd"]):
        os.close(fd)
    a["fds"] = [calls_r, answers_w] + a["fds"]
    a["judge"] = j = None  # the tests stay with the judge, not in the jail's init


def main():
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        a = json.loads(f.read())
    out = a["status_fd"]
    report = {
        "network": "python-guard",
        "user": "none",
        "jail": "none",
        "seccomp": "on" if platform.machine() in SECCOMP else "none (unknown architecture)",
    }
    state = {"pid": None, "jail": a["jail"]}

    def kill_tree():
        pid = state["pid"]
        if pid is None:
            return
        if state["jail"]:
            os.kill(pid, signal.SIGKILL)  # init: the kernel takes the whole namespace with it
        elif a["uid"] is not None:
            k = os.fork()
            if k == 0:  # as the sandbox uid, kill(-1) reaches exactly the sandbox's processes
                try:
                    os.setgid(a["uid"])
                    os.setuid(a["uid"])
                    os.kill(-1, signal.SIGKILL)
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

    if a.get("judge"):
        start_judge(a)
    if a["jail"]:
        try:
            enter_namespaces(a, report)
        except OSError as e:
            os.write(2, ("rlvr sandbox: %s\n" % e).encode())
            os.write(out, json.dumps({"setup_error": str(e)}).encode())
            os._exit(RC_SETUP)
        r, w = os.pipe()
    else:
        flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWNET | CLONE_NEWUSER
        if libc.unshare(flags) == 0:
            report["network"] = "namespace"
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans are reaped here
        if a["uid"] is not None:
            report["user"] = "uid %d" % a["uid"]
        if report["network"] != "namespace":
            a["env"]["RLVR_SANDBOX_NO_NETWORK"] = "1"
    signal.signal(signal.SIGALRM, on_timeout)
    signal.signal(signal.SIGTERM, on_timeout)
    pid = os.fork()
    if pid == 0:
        os.close(out)
        if a["jail"]:
            os.close(r)
            init(a, w)
        exec_program(a, False)
    state["pid"] = pid
    for fd in a["fds"]:  # only the program keeps its channels: the judge must see them close when it ends
        os.close(fd)
    if a["jail"]:
        os.close(w)
    signal.setitimer(signal.ITIMER_REAL, a["timeout"])
    st = None
    while True:
        try:
            w_pid, w_st = os.wait()
        except ChildProcessError:
            break
        if w_pid == pid:
            st = w_st
            break
    signal.setitimer(signal.ITIMER_REAL, 0)
    if a["jail"]:
        inner = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            inner += chunk
        try:
            report.update(json.loads(inner or b"{}"))
        except ValueError:
            pass
        if "exit" not in report and "signal" not in report and "setup_error" not in report and st is not None:
            report.update(wait_status(st))  # init itself died (killed at the timeout)
    elif st is not None:
        report.update(wait_status(st))
        kill_tree()
    while True:  # reap every descendant (killed above, or the kill helper)
        try:
            os.wait()
        except ChildProcessError:
            break
    os.write(out, json.dumps(report).encode())


if __name__ == "__main__":
    main()
