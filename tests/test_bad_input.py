"""Bad input is refused clearly: every YAML loader (suite, task, profile) and `bench run`'s command line, fuzzed with
hypothesis, answer with a BenchError (one line, exit code 2) or a valid spec, never a traceback, and nothing already
written changes. Results files cut short or corrupted are reported with the bad line; the rest still loads."""

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.cli import SUITE_OPTIONS, main
from harness.config import load_suite_file
from harness.errors import BenchError, ConfigError
from harness.profiles import PROFILE_DIR, load_profile
from harness.quality.tasks import TASKS_DIR, load_task
from harness.results.schema import make_row
from harness.results.store import read_rows

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = (st.none() | st.booleans() | st.integers(-5, 10**9) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=10), inner, max_size=3), max_leaves=8)

SUITE = {"name": "fuzz", "models": ["tiny-dense"], "device": "cpu", "measure": {"warmup": 0, "repetitions": 2},
         "scenarios": [{"name": "latency", "prompt_tokens": 8}, {"name": "quality", "task": "mmlu", "limit": 2}]}
SUITE_KEYS = [*SUITE, "backends", "dtype", "cell_timeout_s", "cell_memory_limit_mib", "profile_models",
              "report_claims", "description"]
SCENARIO_KEYS = ["name", "models", "prompt_tokens", "output_tokens", "batch_sizes", "task", "limit", "seed", "engine"]


def mutations(base: dict, keys: list, nested: str | None = None, nested_keys: list = ()):
    """`base` with one field (or one field of its first `nested` item) set to anything, or removed."""
    top = st.builds(lambda key, value: {**base, key: value}, st.sampled_from(keys), values)
    dropped = st.builds(lambda key: {k: v for k, v in base.items() if k != key}, st.sampled_from(sorted(base)))
    if nested is None:
        return top | dropped
    inner = st.builds(lambda key, value: {**base, nested: [{**base[nested][0], key: value}, *base[nested][1:]]},
                      st.sampled_from(nested_keys), values)
    return top | dropped | inner


def documents(base: dict, keys: list, nested: str | None = None, nested_keys: list = ()):
    """YAML text: a mutated valid document, or arbitrary text."""
    return mutations(base, keys, nested, nested_keys).map(yaml.safe_dump) | st.text(max_size=200)


def refuses_or_loads(load, path: Path, text: str) -> None:
    path.write_text(text)
    try:
        load(path)
    except BenchError as exc:
        assert exc.message and "\n" not in exc.message
        assert exc.message.startswith(str(path))  # names the file (and the line and field where there is one)


@FUZZ
@given(text=documents(SUITE, SUITE_KEYS, "scenarios", SCENARIO_KEYS))
def test_fuzzed_suites_load_or_are_refused_with_one_line(tmp_path, text):
    refuses_or_loads(load_suite_file, tmp_path / "suite.yaml", text)


TASK = yaml.safe_load((TASKS_DIR / "arithmetic.yaml").read_text())
PROFILE = yaml.safe_load((PROFILE_DIR / "rtx4090.yaml").read_text())


@FUZZ
@given(text=documents(TASK, sorted({*TASK, "fewshot", "choices", "stop", "extract", "limit", "source"}),
                      None))
@example(text=yaml.safe_dump({**TASK, "fewshot": {"\n": None}}))  # found by hypothesis: a key that is a line break
def test_fuzzed_tasks_load_or_are_refused_with_one_line(tmp_path, text):
    refuses_or_loads(load_task, tmp_path / "task.yaml", text)


@FUZZ
@given(text=documents(PROFILE, sorted(PROFILE)))
def test_fuzzed_profiles_load_or_are_refused_with_one_line(tmp_path, text):
    refuses_or_loads(load_profile, tmp_path / "profile.yaml", text)


RUN_VALUES = {"suite": st.sampled_from(["quick", "nope", "missing.yaml"]), "model": st.text(max_size=10),
              "backend": st.sampled_from(["transformers", "warp"]), "device": st.sampled_from(["cpu", "tpu", ""]),
              "dtype": st.sampled_from(["fp32", "int3"]), "profile": st.sampled_from(["cpu", "rtx9090"]),
              "resume": st.text(max_size=10), "trust-remote-code": st.text(max_size=10)}
NUMBERS = ["repetitions", "warmup", "min-seconds", "cell-timeout", "memory-limit"]
FLAGS = ["force", "find-max", "allow-pickle", "online"]
numbers = (st.integers(-10, 10**6).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(repr)
           | st.text(max_size=6))
option = (st.sampled_from(sorted(RUN_VALUES)).flatmap(lambda name: st.tuples(st.just(name), RUN_VALUES[name]))
          | st.tuples(st.sampled_from(NUMBERS), numbers) | st.tuples(st.sampled_from(FLAGS), st.none()))


@pytest.fixture
def finished_run(tmp_path):
    """A run folder that already holds a run: every command line below names it, and none may change it."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "rows.jsonl").write_text(json.dumps(make_row({"cell_id": "c"}, metric="ttft_ms", unit="ms",
                                                           formula="ttft.v1", value=1.0, params={})) + "\n")
    (folder / "resolved_config.yaml").write_text("run_id: x\n")
    return folder


def digest(folder: Path) -> str:
    """Every file of the run but its lock (.lock, which each attempt takes and records its pid in)."""
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.rglob("*"))
                                   if p.is_file() and p.name != ".lock")).hexdigest()


@FUZZ
@given(options=st.lists(option, max_size=5))
def test_fuzzed_run_command_lines_exit_2_with_one_line_and_harm_nothing(finished_run, capsys, options):
    argv = ["run"]
    for name, value in options:
        argv += [f"--{name}"] if value is None else [f"--{name}", value]
    before = digest(finished_run)
    assert main([*argv, "--out", str(finished_run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith(("bench: error: ", "usage: bench run")), err
    assert digest(finished_run) == before


def test_every_option_that_resume_refuses_is_a_run_option():
    from harness.cli import _parser

    assert set(SUITE_OPTIONS) <= set(vars(_parser().parse_args(["run"])))


def test_non_finite_numbers_are_refused(capsys):
    for flag in ("--min-seconds", "--cell-timeout"):
        for value in ("nan", "inf"):
            assert main(["run", flag, value]) == 2
            assert capsys.readouterr().err.startswith(f"bench: error: {flag} must be")


def test_truncated_and_corrupt_result_lines_are_reported_and_the_rest_loads(tmp_path):
    rows = [make_row({"cell_id": f"c{i}"}, metric="ttft_ms", unit="ms", formula="ttft.v1", value=float(i),
                     params={}) for i in range(4)]
    lines = [json.dumps(row) for row in rows]
    lines[1] = lines[1][: len(lines[1]) // 2]  # a row cut in the middle
    lines[2] = "\x00\x00garbage"
    text = "\n".join(lines) + "\n" + json.dumps(rows[3])[:-7]  # and a last line cut short by a kill
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    bad = []
    loaded = read_rows(path, on_bad_line=bad.append)
    assert [row["cell_id"] for row in loaded] == ["c0", "c3"]
    assert [line.split(": ")[0] for line in bad] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert all("skipped" in line for line in bad)


def test_an_unexpected_exception_is_one_line_with_its_traceback_in_a_file(tmp_path, monkeypatch, capsys):
    """A bug (any exception that is not a BenchError) ends as one line saying so and the path of a file that holds
    its traceback; a BenchError still ends as the user's one-line error with exit code 2."""
    from harness import cli

    def broken(args):
        return {}["no such key"]  # a bug, as a command would have one

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "suites", broken)
    assert cli.main(["suites"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "bench: internal error (a bug in bench): KeyError: 'no such key'" and len(err) == 2
    [crash] = (tmp_path / "crashes").iterdir()
    assert err[1] == f"hint: the traceback is in {crash}; please report it with the command you ran"
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "KeyError" in text

    def refused(args):
        raise ConfigError("a value the user can fix", hint="fix it")

    monkeypatch.setitem(cli.COMMANDS, "suites", refused)
    assert cli.main(["suites"]) == 2
    assert capsys.readouterr().err.splitlines() == ["bench: error: a value the user can fix", "hint: fix it"]
    assert len(list((tmp_path / "crashes").iterdir())) == 1
