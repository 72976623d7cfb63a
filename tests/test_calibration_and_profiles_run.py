"""Calibration on this device, and `bench run` held against hardware profiles: detected, refused, forced."""

import csv
import os
import subprocess
import sys

import pytest
import yaml

from harness.cli import main
from harness.measure import calibration
from harness.measure.calibration import (
    CONTENDED_SHARE,
    cached_stability,
    calibrate,
    calibrate_stability,
    measure_stability,
)
from harness.results.store import read_rows

pytestmark = pytest.mark.slow


def test_calibration_measures_positive_figures_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    first, cached = calibrate("cpu", "fp32")
    assert not cached
    assert first.bandwidth_gbps > 0 and first.matmul_tflops > 0
    assert first.bandwidth_stats["n"] >= 5 and first.matmul_stats["n"] >= 5
    assert 0 <= first.other_cpu_share <= CONTENDED_SHARE  # this test runs alone: the machine was quiet
    again, cached = calibrate("cpu", "fp32")
    assert cached and again == first  # its measured_at included: a cached calibration keeps its own time


def test_a_calibration_beside_busy_processes_is_refused_and_a_run_goes_on_without_it(tmp_path, monkeypatch, capsys,
                                                                                      tiny_dense):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    # As many processes spinning as the machine has CPUs: about half of its CPU time is theirs.
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        assert main(["calibrate", "--device", "cpu", "--dtype", "fp32"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("bench: error: calibration measured while other processes took ")
        assert err[0].endswith("; neither used nor cached") and "bench calibrate` when the machine is quiet" in err[1]
        out = tmp_path / "run"
        suite = _suite(tmp_path, "tiny-dense", [{"name": "latency", "prompt_tokens": 8, "output_tokens": 4}])
        assert main(["run", "--suite", suite, "--out", str(out), "--no-progress"]) == 0
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert not list((tmp_path / "cache").glob("calibration/cpu-*.json"))
    metrics = {row["metric"] for row in _rows(out)}
    assert "decode_tok_s" in metrics and not {"calibrated_bandwidth_gbps", "mbu_calibrated", "mfu_calibrated"} & metrics
    machine = yaml.safe_load((out / "resolved_config.yaml").read_text())["machine"]
    assert machine["calibration"] is None and "other processes took" in machine["calibration_error"]
    from harness.measure.metrics import METRICS  # the definitions state the same limit

    assert all(f"at most {CONTENDED_SHARE:.0%} of its time" in METRICS[name].definition
               for name in ("calibrated_bandwidth_gbps", "calibrated_tflops"))


def test_stability_times_blocks_of_a_product_and_is_cached_for_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    for seconds in ("39", "nan", "inf"):  # the command line refuses what would be too few blocks, or never end
        assert main(["calibrate", "--device", "cpu", "--stability", "--stability-seconds", seconds]) == 2
        assert capsys.readouterr().err.startswith("bench: error: --stability-seconds: must be a finite number")
    monkeypatch.setattr(calibration, "STABILITY_BLOCK_SECONDS", 0.05)  # 40 blocks in 2 s
    assert cached_stability("cpu") is None
    found = calibrate_stability("cpu", 2.0)
    assert found.blocks == 40 and found.block_ratio_low <= 1.0 <= found.block_ratio_high
    assert found.drift_factor == max(found.block_ratio_high, 1 / found.block_ratio_low) >= 1.0
    assert cached_stability("cpu") == found
    path = next((tmp_path / "calibration").glob("cpu-stability-*.json"))
    path.write_text(path.read_text()[:40])  # cut short: read as no stability, not a crash of every run
    assert cached_stability("cpu") is None
    with pytest.raises(ValueError, match="at least 2 s"):
        measure_stability("cpu", 1.9)


def _suite(tmp_path, model, scenarios):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "models": [model], "scenarios": scenarios, "device": "cpu",
                                    "measure": {"warmup": 1, "repetitions": 3}}))
    return str(path)


def _rows(out):
    return read_rows(out / "rows.jsonl")


def test_a_run_on_this_cpu_detects_cpu_and_carries_calibrated_bandwidth_and_mbu(tmp_path, smollm2):
    out = tmp_path / "run"
    suite = _suite(tmp_path, "smollm2-135m", [{"name": "latency", "prompt_tokens": 32, "output_tokens": 12}])
    assert main(["run", "--suite", suite, "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out)
    by_metric = {row["metric"]: row for row in rows}
    assert {row["profile"] for row in rows} == {"cpu"} and not any(row["off_profile"] for row in rows)
    assert by_metric["calibrated_bandwidth_gbps"]["value"] > 0
    # The row says when the calibration was measured and whether this run took it from the cache.
    calibration = by_metric["calibrated_bandwidth_gbps"]["stats"]
    assert isinstance(calibration["cached"], bool) and calibration["measured_at"] <= rows[0]["time"]
    assert 0 < by_metric["mbu_calibrated"]["value"] <= 1
    assert 0 < by_metric["mfu_calibrated"]["value"] <= 1
    # The generic profile has no datasheet figures or price: those figures are absent, not invented.
    assert not {"mbu", "mfu", "usd_per_mtok"} & set(by_metric)
    [energy_source] = {row["energy_source"] for row in rows}
    if energy_source == "none":  # no readable counter: no figure, and the reason beside it
        assert not {"energy_j", "j_per_tok"} & set(by_metric) and rows[0]["energy_unavailable"]
    else:
        assert energy_source.startswith("rapl:") and by_metric["energy_j"]["value"] > 0
    with open(out / "summary.csv") as handle:
        [line] = list(csv.DictReader(handle))
    assert line["profile"] == "cpu" and float(line["mbu_calibrated"]) > 0 and line["mbu"] == ""


def test_a_profile_that_does_not_match_is_refused_in_one_line(tmp_path, capsys):
    suite = _suite(tmp_path, "tiny-dense", [{"name": "latency"}])
    assert main(["run", "--suite", suite, "--profile", "rtx4090", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("bench: error: this machine does not match profile rtx4090: ")
    assert "--force" in err[1]
    assert not (tmp_path / "r").exists()  # refused before anything was written or run


def test_force_runs_off_profile_and_marks_every_row(tmp_path, tiny_dense):
    out = tmp_path / "run"
    suite = _suite(tmp_path, "tiny-dense", [{"name": "latency", "prompt_tokens": 8, "output_tokens": 4}])
    assert main(["run", "--suite", suite, "--profile", "rtx4090", "--force", "--out", str(out),
                 "--no-progress"]) == 0
    rows = _rows(out)
    assert rows and all(row["profile"] == "rtx4090" and row["off_profile"] for row in rows)
    by_metric = {row["metric"]: row for row in rows}
    # Held against the RTX 4090's datasheet (1008 GB/s, 165.2 bf16 TFLOP/s, $0.34/h), in its default dtype bf16.
    assert by_metric["decode_tok_s"]["dtype"] == "bf16"
    assert by_metric["mbu"]["params"]["peak_gbps"] == 1008
    assert by_metric["mfu"]["params"]["peak_tflops"] == 165.2
    assert by_metric["usd_per_mtok"]["params"]["price_usd_per_hour"] == 0.34
    config = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert config["machine"]["profile"] == "rtx4090" and config["machine"]["off_profile"] is True


def test_profiles_detect_names_this_machines_profile(capsys):
    assert main(["profiles", "detect", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.split(":")[0] in {"cpu", "epyc-9654", "xeon-8480", "apple-m1-max", "apple-m2-max", "apple-m2-ultra",
                                 "apple-m3-max", "apple-m4-max"}
