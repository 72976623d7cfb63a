"""The measurement policy end to end on tiny-dense: rows say how their repetitions were taken and whether their
interval reached the target, and the console says which figures did not converge."""

import pytest
import yaml

from harness.cli import main
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
