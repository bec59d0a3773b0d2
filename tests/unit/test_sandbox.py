"""adaptlab.sandbox: generated code runs in a separate, limited, network-less process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptlab import sandbox
from adaptlab.sandbox import run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def leftovers(work: str) -> list[str]:
    """Processes still running in the sandbox directory `work`."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "cwd").startswith(work):
                    pids.append(d.name)
            except OSError:
                pass
    return pids


@pytest.fixture(params=["namespaces", "no namespaces"])
def mode(request, monkeypatch):
    """Each test runs with the namespaces this machine allows, and again without them."""
    if request.param == "namespaces":
        if not sandbox._launcher():
            pytest.skip("user namespaces are not available here")
    else:
        monkeypatch.setattr(sandbox, "_launcher", lambda: ())
    return request.param


def test_normal_output_stdin_and_exit_code(mode):
    r = run_python("import sys\nprint('hi', sys.stdin.read().upper())\n"
                   "print('warn', file=sys.stderr)\nsys.exit(3)", stdin="abc")
    assert (r.stdout, r.stderr, r.returncode) == ("hi ABC\n", "warn\n", 3)
    assert not r.timed_out and r.killed_reason is None and not r.ok
    assert run_python("print(6 * 7)").ok


def test_exception_gives_a_traceback_of_the_code(mode):
    r = run_python("def f():\n    return 1 / 0\nf()")
    assert r.returncode == 1 and r.killed_reason is None
    assert 'File "main.py", line 2, in f' in r.stderr and r.stderr.endswith("ZeroDivisionError: division by zero\n")


def test_infinite_loop_times_out(mode):
    t0 = time.monotonic()
    r = run_python("import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    pass", timeout_s=1)
    assert r.timed_out and r.killed_reason == "timeout" and r.returncode != 0
    assert time.monotonic() - t0 < 4
    assert leftovers(r.stdout.strip()) == []


def test_memory_bomb_is_stopped(mode):
    r = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))", memory_mb=128)
    assert r.killed_reason == "memory limit" and r.returncode != 0
    assert "memory limit (128 MB)" in r.stderr
    r = run_python("x = [0] * 10**9")
    assert r.killed_reason == "memory limit"


def test_huge_output_is_truncated(mode):
    t0 = time.monotonic()
    r = run_python("while True:\n    print('x' * 1000)", max_output=10_000)
    assert r.killed_reason == "output limit" and not r.timed_out
    assert r.stdout.startswith("x" * 1000) and len(r.stdout) < 10_100
    assert r.stdout.endswith("[output truncated at 10000 bytes]")
    assert time.monotonic() - t0 < 4




def test_no_network_even_to_host_loopback(mode, listener):
    port = listener.getsockname()[1]
    code = ("import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n"
            "except OSError as e:\n    print('refused', type(e).__name__)")
    r = run_python(code)
    assert r.stdout.startswith("refused") and "connected" not in r.stdout
    with pytest.raises(socket.timeout):
        listener.accept()


def test_network_namespace_alone_blocks_host_loopback(listener):
    """Without the audit hook: the namespace by itself leaves nothing to connect to."""
    if not sandbox._launcher():
        pytest.skip("user namespaces are not available here")
    port = listener.getsockname()[1]
    code = f"import socket; s = socket.socket(); print(s.connect_ex(('127.0.0.1', {port})))"
    r = subprocess.run([*sandbox._launcher(), sys.executable, "-I", "-c", code], env={},
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.strip() not in ("", "0"), r.stderr
    with pytest.raises(socket.timeout):
        listener.accept()


def test_parent_environment_is_not_visible(mode, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_SANDBOX_SENTINEL", "s3cret-value")
    r = run_python("import os\nprint(sorted(os.environ))\nprint(os.environ.get('PATH'), os.environ.get('HOME'))")
    assert "ADAPTLAB_SANDBOX_SENTINEL" not in r.stdout and "s3cret-value" not in r.stdout
    assert r.stdout.splitlines()[1] == "None None"
    assert set(eval(r.stdout.splitlines()[0])) <= set(sandbox.ENV) | {"LC_CTYPE"}


def test_relative_writes_land_in_a_temporary_directory_that_is_removed(mode, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = ("import os\nopen('out.txt', 'w').write('data')\nos.mkdir('sub')\n"
            "open('sub/x.txt', 'w').write('more')\nprint(os.path.abspath('out.txt'))")
    r = run_python(code)
    assert r.ok, r.stderr
    written = Path(r.stdout.strip())
    assert written.name == "out.txt" and written.parent.name.startswith("adaptlab-sandbox-")
    assert not written.parent.exists()
    assert not (tmp_path / "out.txt").exists()


def test_writing_outside_the_sandbox_is_refused(mode, tmp_path):
    target = tmp_path / "escape.txt"
    code = ("import os, shutil\nout = []\n"
            f"for f in (lambda: open({str(target)!r}, 'w'), lambda: open('../escape.txt', 'a'),\n"
            f"          lambda: os.remove({str(target)!r}), lambda: os.mkdir({str(tmp_path / 'd')!r}),\n"
            f"          lambda: os.symlink('/', 'root'), lambda: open('root/tmp/escape.txt', 'w')):\n"
            "    try:\n        f()\n        out.append('allowed')\n"
            "    except PermissionError:\n        out.append('refused')\n"
            "print(out)")
    target.write_text("keep")
    r = run_python(code)
    assert r.stdout.strip() == str(["refused", "refused", "refused", "refused", "allowed", "refused"]), r.stderr
    assert target.read_text() == "keep" and not (tmp_path / "d").exists()


def test_fork_bomb_is_contained(mode):
    # Bounded (at most 2**6 processes) should every layer fail; the processes would then sleep.
    code = ("import os, time\nprint(os.getcwd(), flush=True)\n"
            "for _ in range(6):\n    os.fork()\ntime.sleep(30)")
    t0 = time.monotonic()
    r = run_python(code, timeout_s=2)
    assert time.monotonic() - t0 < 5
    assert "os.fork is not allowed" in r.stderr and r.returncode != 0 and not r.timed_out
    assert leftovers(r.stdout.strip().splitlines()[0]) == []


@pytest.mark.parametrize("code", [
    "import subprocess\nsubprocess.run(['true'])",
    "import os\nos.system('true')",
    "import _posixsubprocess\n_posixsubprocess.fork_exec()",
    "import ctypes\nctypes.CDLL(None).fork()",
    "import ctypes\nctypes.CDLL('libc.so.6')",
    "import os\nos.kill(1, 9)",
])
def test_process_and_native_escapes_are_refused(code):
    r = run_python(code)
    assert r.returncode == 1 and "PermissionError: sandbox:" in r.stderr, r.stderr


def test_limits_are_set():
    code = ("import resource as r\n"
            "print([r.getrlimit(getattr(r, n)) for n in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', "
            "'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_CORE')])")
    r = run_python(code, timeout_s=3, memory_mb=256)
    cpu, mem, fsize, nofile, nproc, core = eval(r.stdout)
    assert cpu == (4, 5) and mem == (256 << 20,) * 2 and core == (0, 0)
    assert fsize == (sandbox.FILE_SIZE_MB << 20,) * 2 and nofile == (sandbox.OPEN_FILES,) * 2
    assert nproc == (sandbox.PROCESSES,) * 2


def test_file_size_limit():
    r = run_python("f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 2**20)")
    assert r.returncode != 0 and ("File too large" in r.stderr or r.killed_reason == "file size limit")


def test_isolation_report():
    info = sandbox.isolation()
    assert info["audit_hook"] and info["rlimits"]
    assert info["namespaces"] == bool(sandbox._launcher())
