"""HumanEval checking and the sandbox: real processes, real sockets, real limits."""

import socket
import time

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


def test_a_network_call_is_refused():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    source = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    outcome = code.run_untrusted(source, timeout_s=5)
    assert not outcome.passed and ("OSError" in outcome.reason or "refused" in outcome.reason.lower())
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing ever connected
    listener.close()


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
