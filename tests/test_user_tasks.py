"""A user's own task files work wherever a shipped task does: named by path from a suite (relative to the suite
file), found by name in a suite's `tasks_dirs` or a `--tasks-dir`, and run like a shipped one."""

import json

import pytest

from harness.cli import main
from harness.config import load_suite
from harness.errors import ConfigError
from harness.results.store import read_rows

TASK = """\
name: capitals
version: 1
source: {jsonl: capitals.jsonl}
format: records
scoring: multiple_choice
prompt: "Question: {question}\\nAnswer:"
choices: [" {choices[0]}", " {choices[1]}"]
limit: 2
"""
RECORDS = [{"question": "Capital of France?", "choices": ["Paris", "Rome"], "answer": 0},
           {"question": "Capital of Italy?", "choices": ["Paris", "Rome"], "answer": 1}]
SUITE = """\
name: mine
models: [tiny-dense]
device: cpu
measure: {{warmup: 0, repetitions: 1}}
{extra}scenarios:
  - name: quality
    task: {task}
"""


def write_task(folder):
    """A task file written by the README's rules, beside its JSONL data."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    (folder / "capitals.yaml").write_text(TASK)
    return folder / "capitals.yaml"


def write_suite(folder, task: str, extra: str = ""):
    path = folder / "suite.yaml"
    path.write_text(SUITE.format(task=task, extra=extra))
    return path


def test_a_task_named_by_path_resolves_from_the_suite_files_folder(tmp_path, monkeypatch):
    task_file = write_task(tmp_path / "suites" / "tasks")
    suite_file = write_suite(tmp_path / "suites", "./tasks/capitals.yaml")
    monkeypatch.chdir(tmp_path)  # not the suite's folder: the path is the suite file's, not the shell's
    scenario = load_suite(str(suite_file)).scenarios[0]
    assert scenario.params["task"] == str(task_file)
    assert scenario.task_and_version == ("capitals", 1)


def test_a_task_named_by_name_is_found_in_tasks_dirs_or_a_tasks_dir(tmp_path):
    write_task(tmp_path / "mytasks")
    from_suite = load_suite(str(write_suite(tmp_path, "capitals", "tasks_dirs: [mytasks]\n")))
    assert from_suite.scenarios[0].task_and_version == ("capitals", 1)
    from_option = load_suite(str(write_suite(tmp_path, "capitals")), tasks_dirs=(str(tmp_path / "mytasks"),))
    assert from_option.scenarios[0].params["task"] == str(tmp_path / "mytasks" / "capitals.yaml")


def test_an_unknown_task_or_a_missing_task_file_is_refused_with_its_line(tmp_path):
    path = write_suite(tmp_path, "capitals")
    with pytest.raises(ConfigError, match=r"suite.yaml:7: scenarios.0.task: unknown task 'capitals'") as caught:
        load_suite(str(path))
    assert "tasks_dirs" in caught.value.hint
    path = write_suite(tmp_path, "./nowhere/capitals.yaml")
    with pytest.raises(ConfigError, match=r"suite.yaml:7: scenarios.0.task: task file ./nowhere/capitals.yaml not"):
        load_suite(str(path))


def test_a_broken_task_file_is_refused_with_its_own_file_and_line(tmp_path):
    task_file = write_task(tmp_path)
    task_file.write_text(TASK.replace("scoring: multiple_choice", "scoring: vibes"))
    with pytest.raises(ConfigError, match=rf"^{task_file}:5: scoring: must be one of"):
        load_suite(str(write_suite(tmp_path, "./capitals.yaml")))


@pytest.mark.slow
@pytest.mark.parametrize("by", ["path", "tasks-dir"])
def test_a_suite_with_its_own_task_file_runs_and_scores_it(tmp_path, tiny_dense, by):
    write_task(tmp_path / "suites" / "mine")
    task, options = ("./mine/capitals.yaml", []) if by == "path" else ("capitals", ["--tasks-dir", str(tmp_path /
                                                                                     "suites" / "mine")])
    suite_file = write_suite(tmp_path / "suites", task)
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite_file), *options, "--out", str(out), "--no-progress"]) == 0
    rows = [r for r in read_rows(out / "rows.jsonl") if r["metric"] == "accuracy"]
    assert [(r["task"], r["task_version"], r["status"], r["stats"]["n"]) for r in rows] == [("capitals", 1, "ok", 2)]


def test_a_missing_tasks_dir_is_refused_in_one_line(tmp_path, capsys):
    assert main(["run", "--tasks-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"bench: error: --tasks-dir {tmp_path / 'nowhere'}: no such folder"]
    assert not (tmp_path / "run").exists()
