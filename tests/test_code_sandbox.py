"""HumanEval checking and the sandbox: real processes, real sockets, real limits."""

import socket
import time
import uuid
from pathlib import Path

import pytest

from harness.quality import code


@pytest.fixture(scope="module")
def problems():
    return code.load(code.data_path(progress=False))


@pytest.mark.slow
def test_canonical_solutions_pass_and_wrong_ones_fail(problems):
    assert len(problems) == 164
    for problem in problems[:8]:
        assert code.check(problem, problem.canonical_solution) == code.Outcome(True, "passed")
    wrong = code.check(problems[0], "    return None\n")
    assert not wrong.passed and wrong.reason.startswith("failed: ")


def test_truncate_cuts_at_the_next_top_level_statement():
    completion = "    return x + 1\n\ndef helper():\n    pass\n"
    assert code.truncate(completion) == "    return x + 1\n"
    assert code.truncate("    return 1\n\nif __name__ == '__main__':\n    main()") == "    return 1\n"
    assert code.truncate("    return 1\n") == "    return 1\n"


def test_an_infinite_loop_is_killed_at_the_time_limit():
    start = time.perf_counter()
    outcome = code.run_untrusted("while True:\n    pass\n", timeout_s=2)
    assert outcome == code.Outcome(False, "timeout")
    assert time.perf_counter() - start < 7


def test_background_children_die_with_the_program(tmp_path):
    marker = tmp_path / "still-alive"
    child = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    source = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {child!r}])\n"
    assert code.run_untrusted(source, timeout_s=5).passed
    time.sleep(4)
    assert not marker.exists()


@pytest.fixture
def listener():
    """A socket listening on this machine's loopback; the test checks that nothing ever connected to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    yield server
    with pytest.raises(TimeoutError):
        server.accept()  # nothing ever connected
    server.close()


def test_a_network_call_is_refused(listener):
    port = listener.getsockname()[1]
    source = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    outcome = code.run_untrusted(source, timeout_s=5)
    assert not outcome.passed and ("OSError" in outcome.reason or "refused" in outcome.reason.lower())


def test_a_memory_hog_fails_without_harming_the_caller():
    outcome = code.run_untrusted("block = bytearray(4 * 1024 ** 3)\n", timeout_s=10, memory_mib=512)
    assert not outcome.passed and "MemoryError" in outcome.reason


def test_files_land_in_a_scratch_directory_that_is_removed():
    source = "import os\nopen('out.txt', 'w').write('x')\nprint(os.getcwd())\nraise SystemExit(os.getcwd())\n"
    outcome = code.run_untrusted(source, timeout_s=5)
    scratch = outcome.reason.removeprefix("failed: ")
    assert "bench-sandbox-" in scratch
    import os

    assert not os.path.exists(scratch)


namespaces = pytest.mark.skipif(code.isolation() != "namespaces",
                                reason=f"this machine allows sandbox isolation '{code.isolation()}' only")


@namespaces
def test_generated_code_cannot_write_outside_its_scratch_folder(tmp_path):
    targets = [tmp_path / "escape.txt", tmp_path / "escape-from-child.txt"]
    source = (f"import os, subprocess\nopen('inside.txt', 'w').write('x')\nassert open('inside.txt').read() == 'x'\n"
              f"subprocess.run(['touch', {str(targets[1])!r}])\nopen({str(targets[0])!r}, 'w')\n")
    outcome = code.run_untrusted(source, timeout_s=10)
    assert not outcome.passed and "Read-only file system" in outcome.reason, outcome
    assert not any(target.exists() for target in targets)  # neither the program nor its child wrote a byte
    assert list(tmp_path.iterdir()) == []


@namespaces
def test_the_network_is_unreachable_even_below_the_guard(listener):
    port = listener.getsockname()[1]
    # _socket is the C module under socket: the guard does not cover it, the network namespace does.
    source = f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
    outcome = code.run_untrusted(source, timeout_s=5)
    assert not outcome.passed and "Network is unreachable" in outcome.reason, outcome


@namespaces
def test_a_child_in_a_new_session_does_not_outlive_the_time_limit():
    tag = f"bench-test-{uuid.uuid4().hex}"
    # The child leaves the program's process group (killpg cannot reach it); the PID namespace still can.
    child = f"import os, time; os.setsid(); time.sleep(600)  # {tag}"
    source = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(600)\n"
    assert code.run_untrusted(source, timeout_s=3) == code.Outcome(False, "timeout")

    def alive() -> list[Path]:
        return [p for p in Path("/proc").glob("[0-9]*") if tag.encode() in _cmdline(p)]

    deadline = time.monotonic() + 10  # the kernel reaps the namespace asynchronously: allow it a moment
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive()


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
