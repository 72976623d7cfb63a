"""The `bench` command line (typer): help for every command and option, each command with its own examples; usage
errors as one line and exit code 2; shell completion; options reaching the suite; a fast, torch-free --help."""

import os
import subprocess
import sys

import pytest
import typer

from harness import runner
from harness.cli import SUITE_OPTIONS, app, main
from harness.errors import ConfigError

COMMAND = typer.main.get_command(app)


def leaves(group=COMMAND, path=("bench",)):
    """(command path, command) of every command that does something (not a group)."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from leaves(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


LEAVES = dict(leaves())


def test_help_and_models_list_do_not_import_torch_or_transformers():
    """`bench --help` stays fast: the heavy libraries are imported by the commands that use them, when they run."""
    helps = "; ".join(f"main({path.split()[1:] + ['--help']!r})" for path in LEAVES)
    code = (f"import sys; from harness.cli import main; main(['--help']); {helps}; main(['models', 'list']); "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert done.stdout.splitlines()[-1] == "[]"
    assert "smollm2-135m" in done.stdout


def test_every_command_and_option_has_help():
    groups = [COMMAND, *(c for c in COMMAND.commands.values() if hasattr(c, "commands"))]
    for path, command in [*LEAVES.items(), *((g.name, g) for g in groups)]:
        assert command.help, path
        for param in command.params:
            assert getattr(param, "help", None), f"{path} {param.name}: no help"


@pytest.mark.parametrize("path", sorted(LEAVES))
def test_each_command_shows_its_own_examples(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no example line wrapped
    assert main([*path.split()[1:], "--help"]) == 0
    shown = [line.strip() for line in capsys.readouterr().out.splitlines()]
    examples = [line for line in shown if line.startswith("bench ")]
    assert examples and all(line.startswith(f"{path} ") or line == path for line in examples), examples
    assert shown[shown.index("Examples") + 2].startswith("# ")  # each example says what it does, above it


def test_plain_bench_shows_the_help_and_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "Usage: bench" in out and all(name in out for name in COMMAND.commands)


@pytest.mark.parametrize("argv", [
    ["--nope"], ["run", "--devic", "cpu"], ["run", "--device", "tpu"], ["run", "--repetitions"],
    ["run", "--repetitions", "many"], ["run", "extra"], ["models"], ["models", "lst"], ["profiles"],
    ["profiles", "show"], ["leaderboard"], ["merge", "x"], ["merge", "--out", "x"], ["compare", "a"],
    ["serve-bench", "--model", "m"], ["serve-bench", "--base-url", "u", "--model", "m", "--endpoint", "grpc"],
    ["serve-bench", "--base-url", "u", "--model", "m", "--search-rates", "1"], ["nope"],
])
def test_usage_errors_are_one_line_and_a_hint_with_exit_code_2(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2, err
    assert lines[0].startswith("bench: error: ") and lines[1].startswith("hint: "), err
    assert "Traceback" not in err and "╭" not in err


def test_a_command_group_without_its_action_names_the_actions(capsys):
    assert main(["profiles"]) == 2
    assert capsys.readouterr().err.splitlines()[1] == "hint: bench profiles takes one of: list, show, detect"


def test_shell_completion():
    # --show-completion is a flag: it prints the script of the shell it runs under, here bash, as a user's would
    # (a second command keeps bash from exec'ing the first, which would leave no shell to detect).
    command = f"{sys.executable} -m harness --show-completion; exit $?"
    shown = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "_BENCH_COMPLETE=complete_bash" in shown.stdout, shown.stderr
    env = {**os.environ, "_BENCH_COMPLETE": "complete_bash", "COMP_WORDS": "bench run --device ", "COMP_CWORD": "3"}
    done = subprocess.run([sys.executable, "-m", "harness"], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["auto", "cuda", "mps", "cpu"]


@pytest.fixture
def started(monkeypatch):
    """What `bench run` and `serve-bench` hand the runner: start_run's arguments; the run refused there."""
    calls = []

    def start_run(suite, **options):
        calls.append({"suite": suite, **options})
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(runner, "start_run", start_run)
    return calls


def test_run_options_reach_the_suite_and_the_runner(started):
    from harness.config import scenario

    assert main(["run", "--find-max", "--model", "a", "--model", "b", "--backend", "transformers", "--backend",
                 "vllm", "--repetitions", "3", "--warmup", "0", "--min-seconds", "1.5", "--cell-timeout", "60",
                 "--memory-limit", "2048", "--device", "cpu", "--dtype", "fp32", "--trust-remote-code", "a",
                 "--trust-remote-code", "b", "--allow-pickle", "--online", "--no-progress", "--profile", "cpu",
                 "--force", "--out", "o"]) == 2
    [call] = started
    suite = call.pop("suite")
    assert suite.models == ("a", "b") and suite.backends == ("transformers", "vllm")
    assert (suite.device, suite.dtype, suite.cell_timeout_s, suite.cell_memory_limit_mib) == ("cpu", "fp32", 60, 2048)
    assert (suite.measure.repetitions, suite.measure.warmup, suite.measure.min_seconds) == (3, 0, 1.5)
    assert suite.scenarios == (scenario("find_max"),)
    assert call == {"out_dir": "o", "profile": "cpu", "force": True, "online": True, "progress": False,
                    "trust_remote_code": ("a", "b"), "allow_pickle": True}


def test_run_without_suite_options_runs_the_suite_as_written(started):
    from harness.config import load_suite

    assert main(["run"]) == 2
    assert started[0]["suite"] == load_suite("quick") and started[0]["profile"] is None


def test_serve_bench_repeatable_options_sweep(started):
    assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", "--concurrency", "1", "--concurrency", "8",
                 "--rate", "0.5", "--rate", "4", "--slo-ttft-ms", "500", "--search-rates", "0.5", "16"]) == 2
    [scenario] = started[0]["suite"].scenarios
    assert (scenario.concurrency, scenario.rates, scenario.search_rates) == ([1, 8], [0.5, 4.0], [0.5, 16.0])
    assert started[0]["suite"].models == ("m",) and started[0]["suite"].server.base_url == "http://h:1"


def test_serve_bench_options_make_the_workloads(started, capsys):
    assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", "--prompt-tokens", "64",
                 "--shared-prefix-tokens", "48", "--shared-prefix-share", "0.5", "--prefix-cache", "on",
                 "--prefix-cache", "off", "--prompt-salt", "7", "--metrics-interval", "0.25"]) == 2
    [scenario] = started[0]["suite"].scenarios
    assert (scenario.shared_prefix.tokens, scenario.shared_prefix.share) == (48, 0.5)
    assert (scenario.prefix_cache, scenario.prompt_salt, scenario.metrics_interval_s) == (["on", "off"], 7, 0.25)
    started.clear()
    assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", "--trace", "mooncake_sample",
                 "--time-scale", "2"]) == 2
    [scenario] = started[0]["suite"].scenarios
    assert scenario.trace.endswith("tasks/traces/mooncake_sample.jsonl") and scenario.time_scale == 2.0
    started.clear()
    assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", "--endpoint", "chat", "--users", "3",
                 "--turns", "4", "--think-time", "0.5"]) == 2
    [scenario] = started[0]["suite"].scenarios
    assert scenario.conversation.model_dump() == {"users": 3, "turns": 4, "think_time_s": 0.5}
    started.clear()
    thinking = '{"chat_template_kwargs": {"enable_thinking": true}}'
    assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", "--request-fields", thinking]) == 2
    [scenario] = started[0]["suite"].scenarios
    assert scenario.params["request_fields"] == {"chat_template_kwargs": {"enable_thinking": True}}
    capsys.readouterr()
    for line, says in ((["--users", "2"], "--users: needs endpoint: chat"),
                       (["--users", "2", "--endpoint", "chat", "--rate", "1"], "--users: sends each user's turns"),
                       (["--users", "2", "--endpoint", "chat", "--think-time", "-1"], "--think-time: "),
                       (["--request-fields", "{x"], "--request-fields: not JSON"),
                       (["--request-fields", "[1]"], "--request-fields: must be a JSON object"),
                       (["--request-fields", '{"max_tokens": 3}'], "--request-fields: 'max_tokens' is set by bench")):
        assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", *line]) == 2
        assert capsys.readouterr().err.startswith(f"bench: error: {says}")
    for share, says in (("0.5", "needs --shared-prefix-tokens"), ("1.5", "needs --shared-prefix-tokens")):
        assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", "--shared-prefix-share", share]) == 2
        assert says in capsys.readouterr().err
    assert main(["serve-bench", "--base-url", "http://h:1", "--model", "m", "--shared-prefix-tokens", "8",
                 "--shared-prefix-share", "1.5"]) == 2
    assert "--shared-prefix-share: " in capsys.readouterr().err


def test_a_suite_s_bare_on_and_off_are_the_prefix_cache_settings(tmp_path):
    from harness.config import load_suite

    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nmodels: [tiny-dense]\nbackends: [openai]\nserver: {base_url: 'http://h:1'}\n"
                     "scenarios:\n  - {name: served, prefix_cache: [on, off]}\n")
    assert load_suite(str(suite)).scenarios[0].prefix_cache == ["on", "off"]
    suite.write_text(suite.read_text().replace("[on, off]", "[on, maybe]"))
    with pytest.raises(ConfigError, match="prefix_cache.1: must be one of on, off"):
        load_suite(str(suite))


@pytest.mark.parametrize("name", SUITE_OPTIONS)
def test_resume_refuses_each_suite_option(name, capsys):
    option = next(p for p in LEAVES["bench run"].params if p.name == name)
    given = [option.opts[0]] if option.is_flag else [option.opts[0], {"device": "cpu", "dtype": "fp32"}.get(name, "1")]
    assert main(["run", "--resume", "somewhere", *given]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        f"bench: error: --resume takes the suite from the run folder; {option.opts[0]} cannot change it")


def test_resume_takes_trust_options_afresh(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path), "--online", "--allow-pickle", "--no-progress",
                 "--trust-remote-code", "m"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
