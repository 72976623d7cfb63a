"""The measurement policy end to end on tiny-dense: rows say how their repetitions were taken and whether their
interval reached the target, and the console says which figures did not converge."""

import dataclasses
import json

import pytest
import yaml

from harness import zoo
from harness.cli import main
from harness.measure.calibration import Stability, _cache_file
from harness.measure.intervals import interval, median_interval
from harness.results.store import read_rows

pytestmark = pytest.mark.slow

SHAPE = {"prompt_tokens": 8, "output_tokens": 16}


def test_rows_carry_repetitions_half_width_and_whether_they_converged(tmp_path, tiny_dense, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "policy", "models": ["tiny-dense"], "device": "cpu", "dtype": "fp32",
        "measure": {"warmup": 0, "repetitions": 3},
        "scenarios": [
            {"name": "latency", **SHAPE},  # the suite's fixed protocol
            # Within +-99%: reached as soon as the order statistics bound an interval (6 samples) on any machine.
            {"name": "latency", **SHAPE, "measure": {"warmup": 0, "target_ci": 0.99, "max_seconds": 120}},
            # Within +-0.01%: out of reach on a CPU, so the time cap stops it.
            {"name": "latency", **SHAPE, "measure": {"warmup": 0, "target_ci": 0.0001, "max_seconds": 3}},
        ]}))
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    decode = [row for row in read_rows(tmp_path / "run" / "rows.jsonl") if row["metric"] == "decode_tok_s"]
    fixed, loose, tight = (row["stats"] for row in decode)

    assert fixed["stopped"] == "repetitions" and fixed["repetitions"] == fixed["n"] + fixed["warmup_dropped"]
    assert fixed["n"] >= 3 and fixed["converged"] is None and fixed["target_ci"] is None
    assert fixed["half_width"] is None  # 3 samples bound no 95% interval of a median

    assert loose["stopped"] == "converged" and loose["converged"] is True and loose["n"] >= 6
    assert loose["half_width"] <= 0.99

    assert tight["stopped"] == "max_seconds" and tight["converged"] is False
    assert tight["half_width"] is None or tight["half_width"] > 0.0001

    out = capsys.readouterr().out
    assert out.count("not converged") == 1, out


def test_a_machine_with_a_measured_drift_widens_every_timed_interval_and_stops_where_the_drift_exceeds_the_target(
        tmp_path, tiny_dense, monkeypatch, capsys):
    # A cache of its own holding this machine's stability as `bench calibrate --stability` writes it (a drift factor
    # of 1.5, as a very noisy machine would measure), and the shared cache's models.
    models = zoo.cache_dir() / "models"
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(models)
    stability = Stability("cpu", "this machine", 60.0, 1.0, 60, 0.8, 1.5, 1.5, 256, "2026-12-03T00:00:00+00:00")
    _cache_file("cpu", None).parent.mkdir(parents=True)
    _cache_file("cpu", None).write_text(json.dumps(dataclasses.asdict(stability)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "drift", "models": ["tiny-dense"], "device": "cpu", "dtype": "fp32",
        "scenarios": [
            # +-99% is within reach of a factor 1.5 (+-50% at the least).
            {"name": "latency", **SHAPE, "measure": {"warmup": 0, "target_ci": 0.99, "max_seconds": 120}},
            # +-20% is not: no number of repetitions can narrow the drift, so it stops at the minimum of 6.
            {"name": "latency", **SHAPE, "measure": {"warmup": 0, "target_ci": 0.2, "max_seconds": 120}},
        ]}))
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    decode = [row for row in read_rows(tmp_path / "run" / "rows.jsonl") if row["metric"] == "decode_tok_s"]
    reachable, unreachable = decode
    for row in decode:
        alone = median_interval(row["samples"])
        assert row["stats"]["drift_factor"] == 1.5
        assert (interval(row).low, interval(row).high) == (pytest.approx(alone[0] / 1.5), pytest.approx(alone[1] * 1.5))
    assert reachable["stats"]["stopped"] == "converged" and reachable["stats"]["converged"] is True
    assert unreachable["stats"]["stopped"] == "drift" and unreachable["stats"]["converged"] is False
    # It stops at the first repetition that leaves 6 kept after the warm-up drop, which drops at most a third: by
    # the 9th at the latest, where the time cap would have let it run some 900 (about 0.13 s each here).
    assert unreachable["stats"]["n"] >= 6 and unreachable["stats"]["repetitions"] <= 9
    assert unreachable["stats"]["half_width"] >= 0.5
    assert "speed drift factor 1.500" in capsys.readouterr().out
