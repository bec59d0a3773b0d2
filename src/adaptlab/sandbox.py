"""Run untrusted Python (model-generated code) in a separate, limited process.

`run_python(code)` runs `code` with `python -I -B -u` (isolated mode: no PYTHON* variables, no
user site, no script directory on sys.path) in a fresh temporary directory (its cwd, deleted
afterwards), in its own session, and returns what it printed.

What it protects against (the accidents of generated code, e.g. a wrong answer to a coding task):
- running forever: a wall-clock timeout kills the whole process group; RLIMIT_CPU backs it up;
- eating memory: RLIMIT_AS (`memory_mb`); the allocation fails with MemoryError, reported as
  killed_reason "memory limit";
- flooding output: stdout and stderr are capped (`max_output` bytes each) and the process is
  killed when it goes over; RLIMIT_FSIZE caps each file it writes, RLIMIT_NOFILE the open files;
  no core dumps;
- the caller's secrets in environment variables: the environment holds only fixed thread-count
  settings (`ENV`), nothing of the caller's;
- leaving files behind: relative paths land in the temporary directory, which is removed;
- the network and other processes, by the kernel where it allows it: under `unshare` (util-linux)
  the code runs in new user, network, PID and IPC namespaces, which unprivileged users get on
  most Linux systems. There is no network interface but a loopback that is down, so not even the
  host's 127.0.0.1 is reachable; outside processes can be neither seen nor signalled; and every
  process the code starts dies with it. `isolation()` says which layers are active here;
- the same, in-process, always on: an audit hook (PEP 578) installed before the code runs refuses
  sockets, starting processes (fork, exec, spawn, system, subprocess), loading native libraries
  or looking up their symbols through ctypes, importing cffi, signals to other processes, and
  writing, creating, deleting or renaming anything outside the temporary directory. Inside the
  namespace RLIMIT_NPROC caps the sandbox's processes and threads (`PROCESSES`).

What it does NOT protect against:
- deliberate escape. The audit hook is not a security boundary (PEP 578 says so): code written
  to defeat it (ctypes pointer tricks, loading an extension module by hand, an interpreter bug)
  can. Where namespaces are unavailable (no `unshare`, user namespaces disabled), the hook is
  then all that keeps the code off the network and away from other processes;
- reading: whatever the caller's user may read, the code may read and print;
- filling the disk with many files under the RLIMIT_FSIZE cap (there is no quota);
- running as root: the kernel does not apply RLIMIT_NPROC to uid 0, and root, even inside a user
  namespace, may write root-owned files once past the hook. Run it as an ordinary user;
- CPU contention: the code gets a full core until it ends or times out.
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MAX_OUTPUT = 64 * 1024
FILE_SIZE_MB = 16
OPEN_FILES = 64
PROCESSES = 16
"""Processes and threads of the sandbox (RLIMIT_NPROC counts both)."""
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The whole environment of the sandboxed process: nothing of the caller's."""
MEMORY_EXIT = 121
"""Exit status the bootstrap uses when the code ran out of memory."""
UNSHARE_FLAGS = ("--user", "--map-root-user", "--net", "--pid", "--ipc", "--fork", "--kill-child")


@dataclass(frozen=True)
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int
    """Exit status; negative: killed by that signal."""
    timed_out: bool
    killed_reason: str | None
    """Why it was stopped: timeout, cpu limit, memory limit, output limit, file size limit,
    signal NAME; None when it ended on its own."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None


# The bootstrap runs in the sandboxed interpreter before the code. argv: status fd, process
# limit, memory limit (MB). As PID 1 of a new PID namespace it cannot be killed by its own
# signals, so it forks: the child runs the code, PID 1 reaps and reports the child's status.
_BOOTSTRAP = r'''
import os, sys
_fd, _nproc, _mem = (int(a) for a in sys.argv[1:4])
if os.getpid() == 1:
    _child = os.fork()
    if _child:
        while True:
            try:
                _pid, _status = os.waitpid(-1, 0)
            except ChildProcessError:
                os._exit(0)
            if _pid == _child:
                os.write(_fd, b"%d" % _status)
                os._exit(0)
os.close(_fd)
import resource
resource.setrlimit(resource.RLIMIT_NPROC, (_nproc, _nproc))

def _install(root, os=os, sys=sys):
    deny = frozenset(("os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn",
                      "os.posix_spawnp", "os.spawn", "subprocess.Popen", "pty.spawn",
                      "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function"))
    no_import = frozenset(("cffi", "_cffi_backend"))
    paths = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
             "os.link": (0, 1), "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,),
             "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,), "os.mkfifo": (0,),
             "os.mknod": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
             "os.chflags": (0,), "os.lchflags": (0,)}
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    realpath, join, sep, me = os.path.realpath, os.path.join, os.sep, os.getpid()

    def inside(p):
        if isinstance(p, int):
            return True  # an already open descriptor
        full = realpath(join(os.getcwd(), os.fsdecode(p)))
        return full == root or full.startswith(root + sep) or full == "/dev/null"

    def hook(event, args):
        if event in deny or event.startswith("socket."):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].partition(".")[0] in no_import:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "ctypes.dlopen" and args[0] is not None:  # ctypes itself opens None
            raise PermissionError(f"sandbox: loading {args[0]!r} is not allowed")
        if event == "open":
            mode, flags = args[1] or "", args[2] or 0
            if (flags & writing or any(c in mode for c in "wax+")) and not inside(args[0]):
                raise PermissionError(f"sandbox: writing {args[0]!r} (outside the sandbox) is not allowed")
        elif event in paths:
            if any(not inside(args[i]) for i in paths[event]):
                raise PermissionError(f"sandbox: {event} outside the sandbox is not allowed")
        elif event in ("os.kill", "os.killpg") and args[0] not in (0, me):
            raise PermissionError(f"sandbox: {event} of another process is not allowed")

    sys.addaudithook(hook)
    # fork_exec raises no audit event of its own: subprocess goes through "subprocess.Popen",
    # a direct call goes nowhere.
    import _posixsubprocess

    def fork_exec(*args, **kwargs):
        raise PermissionError("sandbox: starting processes is not allowed")
    _posixsubprocess.fork_exec = fork_exec

with open("main.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "main.py", "exec")
_install(os.path.realpath(os.getcwd()))
del _install, _f, _fd, _nproc
sys.argv = ["main.py"]
try:
    exec(_code, {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__})
except MemoryError:
    sys.stderr.write(f"MemoryError: the sandbox's memory limit ({_mem} MB) was reached\n")
    os._exit(__MEMORY_EXIT__)
except (SystemExit, KeyboardInterrupt):
    raise
except BaseException as e:
    import traceback
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    sys.exit(1)
'''.replace("__MEMORY_EXIT__", str(MEMORY_EXIT))


def _limits(cpu_s: int, memory_mb: int) -> None:
    """preexec_fn: resource limits for the launcher and everything it starts (RLIMIT_NPROC is
    set later, inside the namespace, where it counts only the sandbox's own processes)."""
    import resource as r

    # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL a second later.
    for which, soft, hard in ((r.RLIMIT_CPU, cpu_s, cpu_s + 1),
                              (r.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
                              (r.RLIMIT_FSIZE, FILE_SIZE_MB << 20, FILE_SIZE_MB << 20),
                              (r.RLIMIT_NOFILE, OPEN_FILES, OPEN_FILES), (r.RLIMIT_CORE, 0, 0)):
        now = r.getrlimit(which)[1]
        if now != r.RLIM_INFINITY:  # never above what this process may have
            soft, hard = min(soft, now), min(hard, now)
        r.setrlimit(which, (soft, hard))
    os.umask(0o077)


@lru_cache(maxsize=1)
def _launcher() -> tuple[str, ...]:
    """`unshare` with new namespaces if this machine allows them (checked once), else ()."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return ()
    argv = (exe, *UNSHARE_FLAGS, "--")
    try:
        probe = subprocess.run([*argv, sys.executable, "-I", "-c", "pass"], env={}, timeout=20,
                               stdin=subprocess.DEVNULL, capture_output=True)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return argv if probe.returncode == 0 else ()


def isolation() -> dict:
    """Which protection layers are active on this machine."""
    namespaces = bool(_launcher())
    return {"namespaces": namespaces, "network": "namespace" if namespaces else "audit hook only",
            "audit_hook": True, "rlimits": True, "process_limit_enforced": os.geteuid() != 0}


class _Output:
    """Reads one pipe to the end, keeping the first `cap` bytes; calls `over()` once past it."""

    def __init__(self, pipe, cap: int, over):
        self.buf, self.cap, self.over, self.truncated = bytearray(), cap, over, False
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe) -> None:
        with pipe:
            while chunk := pipe.read1(1 << 16):
                room = self.cap - len(self.buf)
                self.buf += chunk[:max(room, 0)]
                if len(chunk) > room and not self.truncated:
                    self.truncated = True
                    self.over()

    def text(self) -> str:
        text = self.buf.decode("utf-8", errors="replace")
        return text + f"\n[output truncated at {self.cap} bytes]" if self.truncated else text


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _feed(pipe, data: bytes) -> None:
    try:
        with pipe:
            pipe.write(data)
    except (BrokenPipeError, OSError):
        pass  # the code did not read all of its input


def run_python(code: str, *, stdin: str = "", timeout_s: float = 5, memory_mb: int = 512,
               max_output: int = MAX_OUTPUT) -> SandboxResult:
    """Run `code` in a sandboxed Python process (see the module docstring for what that means)."""
    if timeout_s <= 0 or memory_mb < 32 or max_output < 1:
        raise ValueError("timeout_s must be > 0, memory_mb >= 32 and max_output >= 1")
    cpu_s = math.ceil(timeout_s) + 1
    with tempfile.TemporaryDirectory(prefix="adaptlab-sandbox-", ignore_cleanup_errors=True) as work:
        Path(work, "main.py").write_text(code, encoding="utf-8")
        status_r, status_w = os.pipe()
        argv = [*_launcher(), sys.executable, "-I", "-B", "-u", "-c", _BOOTSTRAP,
                str(status_w), str(PROCESSES), str(memory_mb)]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, cwd=work, env=ENV, pass_fds=(status_w,),
                                    start_new_session=True,
                                    preexec_fn=lambda: _limits(cpu_s, memory_mb))
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        return _supervise(proc, status_r, stdin.encode(), timeout_s, max_output)


def _supervise(proc, status_r: int, stdin: bytes, timeout_s: float, cap: int) -> SandboxResult:
    killed: list[str] = []

    def over() -> None:
        killed.append("output limit")
        if proc.returncode is None:  # not reaped yet, so its group id is still ours
            _killpg(proc.pid)

    out, err = _Output(proc.stdout, cap, over), _Output(proc.stderr, cap, over)
    threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _killpg(proc.pid)  # the group leader is not reaped yet: its group id is still ours
        proc.wait()
    for o in (out, err):
        o.thread.join(2)
    if out.thread.is_alive() or err.thread.is_alive():  # a descendant still holds the pipes
        _killpg(proc.pid)
    with os.fdopen(status_r, "rb") as f:
        raw = f.read()
    code = os.waitstatus_to_exitcode(int(raw)) if raw else proc.returncode
    reason = "timeout" if timed_out else (killed[0] if killed else _reason(code))
    return SandboxResult(out.text(), err.text(), code, timed_out, reason)


def _reason(code: int) -> str | None:
    if code == MEMORY_EXIT:
        return "memory limit"
    if code >= 0:
        return None
    known = {signal.SIGXCPU: "cpu limit", signal.SIGXFSZ: "file size limit"}
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"signal {-code}"
    return known.get(sig, f"signal {sig.name}")
