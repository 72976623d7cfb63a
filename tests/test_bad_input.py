"""Bad input is refused clearly: every YAML loader (suite, task, profile) and the command lines of `bench run`,
`serve-bench`, `compare`, `merge`, `leaderboard`, `models` and `profiles`, fuzzed with hypothesis, answer with a
BenchError (one line, exit code 2) or a valid spec, never a traceback, and nothing is written. Results files cut
short or corrupted are reported with the bad line; the rest still loads."""

import collections
import contextlib
import json
import re
import sys
import tempfile
from pathlib import Path

import pytest
import typer
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.cli import SUITE_OPTIONS, app, main
from harness.config import load_suite_file
from harness.errors import BenchError, ConfigError
from harness.profiles import PROFILE_DIR, load_profile, profile_names
from harness.quality.tasks import TASKS_DIR, load_task
from harness.results.schema import make_row
from harness.results.store import read_rows
from harness.zoo import ALIASES

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = (st.none() | st.booleans() | st.integers(-5, 10**9) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=10), inner, max_size=3), max_leaves=8)

SUITE = {"name": "fuzz", "models": ["tiny-dense"], "device": "cpu", "measure": {"warmup": 0, "repetitions": 2},
         "scenarios": [{"name": "latency", "prompt_tokens": 8}, {"name": "quality", "task": "mmlu", "limit": 2}]}
SUITE_KEYS = [*SUITE, "backends", "dtype", "cell_timeout_s", "cell_memory_limit_mib", "profile_models",
              "model_backends", "report_claims", "description"]
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


# The command lines below are fuzzed through to validation, each in a fresh folder (its working directory, so that
# relative paths land there too); nothing heavy runs. The machine probe (a subprocess that imports torch and
# calibrates) is replaced by one that only checks the device; and every run line ends with a model that does not
# exist, so that a line whose every option is valid is refused at model resolution, the last check before anything
# runs or is written. Each option is fuzzed on its own: lines of valid options and one faulty form of it, which the
# refusal must name; each of its faulty forms (typer's parse, bench's checks) is reached; and valid lines get through
# to the end with each flag.
SENTINEL = "no-such-model"
CLI_FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def cheap_probe(monkeypatch):
    """The machine as the runner sees it, without the subprocess: the requested device checked, nothing calibrated."""
    from harness import machine
    from harness.hardware import detect_device
    from harness.measure.calibration import Probe

    def probe(device: str, dtype: str) -> Probe:
        return Probe(detect_device(device), "fuzz device", 16.0, "fp32" if dtype == "auto" else dtype, None, False,
                     "not calibrated in this test")

    monkeypatch.setattr(machine, "_probe_in_subprocess", probe)


@contextlib.contextmanager
def fresh_folder():
    """A new folder as the working directory, holding a folder that is not a run and one whose config is broken."""
    with tempfile.TemporaryDirectory() as name, contextlib.chdir(name):
        folder = Path(name)
        (folder / "empty").mkdir()
        (folder / "broken").mkdir()
        (folder / "broken" / "resolved_config.yaml").write_text("run_id: [unclosed\n")
        yield folder


def snapshot(folder: Path) -> dict:
    """Every file and folder under `folder` with its content, but run locks (.lock, which each attempt takes)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
            if p.name != ".lock"}


def refused(capfd, argv: list[str]) -> str:
    """`bench argv` refused as a usage error: exit code 2, one line on stderr and at most a hint line (so no
    traceback and no box), nothing on stdout. Returns what the line says."""
    code = main(argv)
    out, err = capfd.readouterr()
    lines = re.split(r"\r\n|\r|\n", err.removesuffix("\n"))  # as a terminal or a log shows them
    assert code == 2 and out == "", (argv, code, out, err)
    assert 1 <= len(lines) <= 2 and lines[0].startswith("bench: error: "), (argv, err)
    assert len(lines) == 1 or lines[1].startswith("hint: "), (argv, err)
    return lines[0].removeprefix("bench: error: ")


# What a refusal that does not start with an option's name blames, by what it says (first match).
BLAMED = (("unknown model", "--model"), ("missing.yaml", "--suite"), ("unknown suite", "--suite"),
          ("profile", "--profile"), ("device", "--device"), ("run folder", "--resume"), ("cannot resume", "--resume"),
          ("no rows.jsonl there", "paths"))


def blamed(message: str) -> str:
    """The option a refusal blames: '--x (parse)' where typer refused the value's form, '--x' where bench's checks
    refused it, 'none' for the sentinel model (every option was valid)."""
    if f"unknown model '{SENTINEL}'" in message:
        return "none"
    form = re.match(r"Invalid value for '(--[a-z0-9-]+)'", message)
    if form:
        return f"{form[1]} (parse)"
    named = re.match(r"--[a-z0-9-]+", message)
    return named[0] if named else next((option for words, option in BLAMED if words in message), message)


def command_line(command: list[str], options: list[tuple], tail: list[str]) -> list[str]:
    argv = list(command)
    for name, value in options:
        argv += [f"--{name}", *([] if value is None else [value] if isinstance(value, str) else value)]
    return [*argv, *tail]


def _option(table: dict):
    return st.sampled_from(sorted(table)).flatmap(lambda name: st.tuples(st.just(name), table[name]))


def one_fault(command: list[str], valid: dict, name: str | None, faulty, tail: list[str]):
    """(command line, the option its refusal must blame): up to four options of `valid` and a form of option `name`
    that `faulty` draws among them (a valid option of that name, which would override it, left out); with no `name`,
    valid options only (blame: none)."""
    def build(options, value, at):
        if name is None:
            return command_line(command, options, tail), "none"
        options = [option for option in options if option[0] != name]
        return command_line(command, [*options[:at], (name, value), *options[at:]], tail), f"--{name}"
    return st.builds(build, st.lists(_option(valid), max_size=4), st.none() if faulty is None else faulty,
                     st.integers(0, 4))


def fuzz_command_lines(capfd, lines, expected: set[str], found: tuple[list[str], ...] = (), examples: int = 30) -> None:
    """Every (command line, blame) `lines` draws (and each line of `found`) is refused in a fresh folder, naming the
    option to blame (None: any), and leaves the folder as it was; between them, they blame each of `expected` (or
    get through, 'none+--flag', with each flag)."""
    seen = collections.Counter()

    @settings(CLI_FUZZ, max_examples=examples)
    @given(line=lines)
    def each(line):
        argv, blame = line
        with fresh_folder() as folder:
            before = snapshot(folder)
            culprit = blamed(refused(capfd, argv))
            assert snapshot(folder) == before, argv
        assert blame in (culprit.split(" (")[0], None), (argv, culprit)
        seen[culprit] += 1
        if culprit == "none":
            seen.update(f"none+{flag}" for flag in argv if flag in FLAGS)

    for argv in found:
        each = example(line=(argv, None))(each)  # found by hypothesis
    each()
    assert expected <= set(seen), f"never blamed: {sorted(expected - set(seen))}; blamed: {dict(seen)}"


def _no_digit(text: str) -> bool:
    return not any(c.isdigit() or c.isnumeric() for c in text)


garbage = st.text(max_size=4).filter(_no_digit)  # not a number (or a non-finite one): typer or the checks refuse it
non_finite = st.sampled_from(["nan", "inf", "-inf", "1e400"])
finite = st.floats(0, 1e6, exclude_min=True).map(repr)


def counts(low: int):
    """Valid and faulty forms of an integer option that must be >= `low`: out of bounds, or not an integer."""
    return st.integers(low, 10**6).map(str), st.integers(-10**6, low - 1).map(str) | garbage | st.just("0.5")


def amounts(high: float = 1e6):
    """Valid and faulty forms of a number that must be > 0 and <= `high`: out of bounds, or not a finite number."""
    beyond = st.floats(high, 1e9, exclude_min=True).map(repr) if high < 1e6 else st.nothing()
    return finite.filter(lambda v: float(v) <= high), st.floats(-1e6, 0).map(repr) | beyond | non_finite | garbage


# Model names that are no alias, Hugging Face id, home folder or folder here: none can resolve to weights.
names = st.text(max_size=8).filter(lambda name: name not in {*ALIASES, SENTINEL, ".", "..", "empty", "broken", "out"}
                                   and "/" not in name and name[:1] not in "-~")
FLAGS = ["--force", "--find-max", "--allow-pickle", "--online", "--no-progress"]
RUN_NUMBERS = {"repetitions": counts(1), "warmup": counts(0), "memory-limit": counts(1),
               "min-seconds": (st.just("0") | finite, st.floats(-1e6, 0, exclude_max=True).map(repr) | non_finite
                               | garbage),
               "cell-timeout": amounts()}
RUN_VALID = {"suite": st.just("quick"), "backend": st.sampled_from(["transformers", "vllm"]),
             "device": st.sampled_from(["cpu", "auto"]), "dtype": st.sampled_from(["auto", "fp32", "bf16", "fp16"]),
             "profile": st.just("cpu") | st.tuples(st.sampled_from(["rtx4090", "h100-sxm"]), st.just("--force")),
             "trust-remote-code": st.just(SENTINEL), **{flag[2:]: st.none() for flag in FLAGS if flag != "--force"},
             **{name: forms[0] for name, forms in RUN_NUMBERS.items()}}
RUN_FAULTY = {"suite": st.sampled_from(["nope", "missing.yaml"]), "model": names | st.just(""),
              "backend": st.sampled_from(["warp", ""]),
              "device": st.sampled_from(["tpu", "", *(["mps"] if sys.platform == "linux" else [])]),
              "dtype": st.sampled_from(["int3", ""]), "profile": st.sampled_from(["rtx9090", "rtx4090"]),
              "trust-remote-code": names, **{name: forms[1] for name, forms in RUN_NUMBERS.items()}}
SERVE_NUMBERS = {"prompt-tokens": counts(1), "output-tokens": counts(1), "requests": counts(1),
                 "concurrency": counts(1), "seed": counts(0), "warmup": counts(0), "rate": amounts(),
                 "burstiness": amounts(), "slo-ttft-ms": amounts(), "slo-tpot-ms": amounts(), "slo-e2e-ms": amounts(),
                 "slo-percentile": amounts(100), "timeout": amounts(), "prompt-salt": counts(0),
                 "time-scale": amounts(), "block-tokens": counts(1), "metrics-interval": amounts()}
SERVE_VALID = {"base-url": st.just("http://127.0.0.1:9"), "model": st.just("m"),
               "endpoint": st.sampled_from(["chat", "completions"]), "prompts": st.sampled_from(["synthetic", "mmlu"]),
               "no-progress": st.none(), **{name: forms[0] for name, forms in SERVE_NUMBERS.items()}}
SERVE_FAULTY = {"base-url": st.just(""), "model": st.just(""), "endpoint": st.sampled_from(["grpc", ""]),
                "prompts": st.sampled_from(["nope", ""]), "prefix-cache": st.sampled_from(["maybe", ""]),
                "trace": st.sampled_from(["nope", "missing.jsonl"]),
                "search-rates": st.tuples(st.sampled_from(["0", "-1", "x"]), st.sampled_from(["1", "nan"])),
                **{name: forms[1] for name, forms in SERVE_NUMBERS.items()}}


RUN_TAIL = ["--model", SENTINEL, "--out", "out"]
# Faulty forms each option has: typer's parse (a value of the wrong type or choice), bench's checks, or both.
PARSED, BOTH = {"dtype", "endpoint"}, {*RUN_NUMBERS, "device", "search-rates", *SERVE_NUMBERS}


def forms(name: str) -> set[str]:
    return {f"--{name} (parse)"} if name in PARSED else {f"--{name}", f"--{name} (parse)"} if name in BOTH \
        else {f"--{name}"}


@pytest.mark.parametrize("name", sorted(RUN_FAULTY))
def test_fuzzed_run_lines_with_a_faulty_option_are_refused_naming_it_in_one_line(cheap_probe, capfd, name):
    found = {"trust-remote-code": (["run", "--trust-remote-code", "\n", *RUN_TAIL],)}  # a value with a line break
    fuzz_command_lines(capfd, one_fault(["run"], RUN_VALID, name, RUN_FAULTY[name], RUN_TAIL), forms(name),
                       found.get(name, ()))


def test_fuzzed_valid_run_lines_get_through_to_model_resolution(cheap_probe, capfd):
    fuzz_command_lines(capfd, one_fault(["run"], RUN_VALID, None, None, RUN_TAIL),
                       {"none", *(f"none+{flag}" for flag in FLAGS)}, examples=100)


def test_fuzzed_resume_lines_are_refused_naming_it_in_one_line(capfd):
    """--resume with a folder that holds no run (or a broken one), or with a suite option it would not use."""
    lines = st.builds(lambda options, folder: (command_line(["run"], options, ["--resume", folder]), "--resume"),
                      st.lists(st.sampled_from([("model", "x"), ("out", "x"), ("force", None), ("suite", "quick")]),
                               max_size=1),
                      st.sampled_from(["missing", "empty", "broken"]))
    fuzz_command_lines(capfd, lines, {"--resume"}, (["run", "--resume", "broken"],))  # YAML's error, several lines


SERVE_HEAD = ["serve-bench", "--base-url", "http://127.0.0.1:9", "--model", "m"]
SERVE_TAIL = ["--tokenizer", SENTINEL, "--out", "out"]


@pytest.mark.parametrize("name", sorted(SERVE_FAULTY))
def test_fuzzed_serve_bench_lines_with_a_faulty_option_are_refused_naming_it_in_one_line(cheap_probe, capfd, name):
    fuzz_command_lines(capfd, one_fault(SERVE_HEAD, SERVE_VALID, name, SERVE_FAULTY[name], SERVE_TAIL), forms(name))


def test_fuzzed_valid_serve_bench_lines_get_through_to_model_resolution(cheap_probe, capfd):
    fuzz_command_lines(capfd, one_fault(SERVE_HEAD, SERVE_VALID, None, None, SERVE_TAIL),
                       {"none", "none+--no-progress"}, examples=100)


def test_fuzzed_results_command_lines_are_refused_in_one_line_and_write_nothing(capfd):
    """compare, merge and leaderboard build on folders that hold no run; compare's --threshold and --ignore."""
    folders = st.lists(st.sampled_from(["missing", "empty", "."]), min_size=1, max_size=3)
    compare = st.builds(lambda pair, options: command_line(["compare", *pair], options, []),
                        st.lists(st.sampled_from(["missing", "empty"]), min_size=2, max_size=2),
                        st.lists(st.tuples(st.just("threshold"), st.floats().map(repr) | garbage)
                                 | st.tuples(st.just("ignore"), st.sampled_from(["dtype", "colour", ""])), max_size=3))
    merge = st.builds(lambda dirs, out: ["merge", *dirs, *out], folders, st.sampled_from([["--out", "out"], []]))
    leaderboard = st.builds(lambda dirs: ["leaderboard", "build", *dirs, "--out", "out"], folders)
    expected = {"--threshold", "--threshold (parse)", "--ignore", "paths", "Missing option '--out'."}
    fuzz_command_lines(capfd, st.tuples(compare | merge | leaderboard, st.none()), expected, examples=150)


@settings(CLI_FUZZ, max_examples=100)
@given(argv=st.builds(lambda name: ["models", "pull", name], names)
    | st.builds(lambda name: ["profiles", "show", name], st.text(max_size=8).filter(
        lambda name: name not in profile_names()))
    | st.builds(lambda device: ["profiles", "detect", "--device", device], st.text(max_size=5).filter(
        lambda device: device not in ("auto", "cpu"))))
def test_fuzzed_models_and_profiles_command_lines_are_refused_in_one_line(capfd, argv):
    with fresh_folder() as folder:
        before = snapshot(folder)
        refused(capfd, argv)
        assert snapshot(folder) == before


def test_every_option_that_resume_refuses_is_a_run_option():
    run = typer.main.get_command(app).commands["run"]
    assert set(SUITE_OPTIONS) <= {param.name for param in run.params}


def test_non_finite_numbers_are_refused(capsys):
    for flag in ("--min-seconds", "--cell-timeout"):
        for value in ("nan", "inf"):
            assert main(["run", flag, value]) == 2
            assert capsys.readouterr().err.startswith(f"bench: error: {flag}: must be")


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
    from harness import config

    def broken():
        return {}["no such key"]  # a bug, as a command would have one

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(config, "suite_names", broken)
    assert main(["suites"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "bench: internal error (a bug in bench): KeyError: 'no such key'" and len(err) == 2
    [crash] = (tmp_path / "crashes").iterdir()
    assert err[1] == f"hint: the traceback is in {crash}; please report it with the command you ran"
    text = crash.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "KeyError" in text

    def refused():
        raise ConfigError("a value the user can fix", hint="fix it")

    monkeypatch.setattr(config, "suite_names", refused)
    assert main(["suites"]) == 2
    assert capsys.readouterr().err.splitlines() == ["bench: error: a value the user can fix", "hint: fix it"]
    assert len(list((tmp_path / "crashes").iterdir())) == 1
