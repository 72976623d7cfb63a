"""bench merge, compare and leaderboard on real runs (the session's result_runs), and the row reader's versions."""

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import HOSTILE_MODEL

from harness.cli import main
from harness.errors import ConfigError
from harness.results.merge import load
from harness.results.schema import SCHEMA_VERSION, upgrade
from harness.results.store import read_rows

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.slow


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _verdicts(output: str) -> dict[tuple[str, str, str], str]:
    """(scenario, batch, metric) -> verdict of each tiny-dense line of `bench compare`'s table."""
    found = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == "tiny-dense" and len(cells) >= 8:
            batch = cells[3] if cells[3].isdigit() else ""
            metric = cells[4] if batch else cells[3]
            found[(cells[1], batch, metric)] = cells[-1]
    return found


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_reader_accepts_the_stored_sample_of_every_schema_version(version):
    rows, duplicates = load([str(FIXTURES / f"rows_v{version}.jsonl")])
    assert rows and duplicates == 0
    assert all(row["schema_version"] == SCHEMA_VERSION and row["key_id"] for row in rows)


def test_reader_refuses_a_row_from_a_newer_schema():
    row = read_rows(FIXTURES / "rows_v1.jsonl")[0]
    with pytest.raises(ConfigError, match="schema version 99"):
        upgrade({**row, "schema_version": 99}, "rows.jsonl: row 1")


def test_merge_keeps_every_measurement_once_in_every_format(result_runs, tmp_path, capsys):
    copy = tmp_path / "copy-of-base"
    shutil.copytree(result_runs["base"], copy)
    base, same = read_rows(result_runs["base"] / "rows.jsonl"), read_rows(result_runs["same"] / "rows.jsonl")
    out = tmp_path / "merged"
    assert main(["merge", str(result_runs["base"]), str(result_runs["same"]), str(copy), "--out", str(out)]) == 0
    assert f"({len(base)} exact duplicates dropped)" in capsys.readouterr().out
    merged = read_rows(out / "rows.jsonl")
    assert len(merged) == len(base) + len(same)
    long = pq.read_table(out / "rows.parquet")
    assert long.num_rows == len(merged) and sorted(long.column("value").to_pylist(), key=str) == sorted(
        (r["value"] for r in merged), key=str)
    # Each environment once in the merged file, and every row given its fingerprint back.
    lines = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    environments = [line["fingerprint_id"] for line in lines if line.get("record") == "environment"]
    assert len(environments) == len(set(environments)) == len({r["fingerprint_id"] for r in base + same})
    assert all("fingerprint" not in line for line in lines if "record" not in line)
    assert [r["fingerprint"] for r in merged] == [r["fingerprint"] for r in base + same]
    summary = _csv(out / "summary.csv")
    assert {line["run_id"] for line in summary} == {base[0]["run_id"], same[0]["run_id"]}
    table = pq.read_table(out / "summary.parquet")
    assert table.num_rows == len(summary)
    assert str(table.schema.field("decode_tok_s").type) == "double"
    decode = [r["value"] for r in merged if r["metric"] == "decode_tok_s"]
    assert sorted(v for v in table.column("decode_tok_s").to_pylist() if v is not None) == sorted(decode)


def test_merge_neutralises_formula_cells(result_runs, tmp_path):
    out = tmp_path / "merged"
    assert main(["merge", str(result_runs["slowed"]), "--out", str(out)]) == 0
    assert {line["model"] for line in _csv(out / "summary.csv")} == {"tiny-dense", "'" + HOSTILE_MODEL}
    # Parquet is no spreadsheet: it keeps the name as it is.
    assert set(pq.read_table(out / "rows.parquet").column("model").to_pylist()) == {"tiny-dense", HOSTILE_MODEL}


def _scaled_copy(run: Path, out: Path, factor: float) -> Path:
    """A copy of a run whose every time sample is `factor` times longer and every speed sample `factor` times lower."""
    shutil.copytree(run, out)
    rows = read_rows(run / "rows.jsonl")
    for row in rows:
        scale = factor if row["metric"].endswith("_ms") else 1 / factor if row["metric"].endswith("_tok_s") else 1
        row["samples"] = [sample * scale for sample in row["samples"]]
        row["value"] = row["value"] * scale if row["value"] is not None else None
    (out / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def _intervals(output: str) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(scenario, batch, metric) -> the 95% interval of the change, in percent, of each tiny-dense line with one."""
    found = {}
    for line in output.splitlines():
        if line.startswith("tiny-dense") and (interval := re.search(r"\[([-+][\d.]+)%, ([-+][\d.]+)%\]", line)):
            cells = re.split(r"\s{2,}", line.strip())
            found[(cells[1], cells[3], cells[4])] = (float(interval[1]), float(interval[2]))
    return found


def test_compare_finds_the_same_samples_within_noise_and_a_known_slowdown_beyond_the_gate(result_runs, tmp_path,
                                                                                       capsys):
    """Known answers from one run's own samples: two runs measured one after the other differ by this machine's
    drift (a CI rehearsal saw the second run 6-8% faster throughout, rightly called "faster"), so they are no test
    of "unchanged"."""
    base = result_runs["base"]
    assert main(["compare", str(base), str(_scaled_copy(base, tmp_path / "same", 1.0))]) == 0
    output = capsys.readouterr().out
    noise = {key: interval for key, interval in _intervals(output).items() if key[2].endswith(("_ms", "_tok_s"))}
    timed = {key: v for key, v in _verdicts(output).items() if key in noise}
    assert len(timed) >= 10 and set(timed.values()) == {"within noise"}
    assert all(low <= 0 <= high for low, high in noise.values())
    # Twice as slow: beyond the 10% gate wherever the samples' own spread leaves the interval's low end above it
    # (2 x (1 - 0.4) = 1.2); on this noisy machine some tiny-model figures spread wider.
    assert main(["compare", str(base), str(_scaled_copy(base, tmp_path / "slower", 2.0))]) == 1
    output = capsys.readouterr().out
    slowed = _verdicts(output)
    tight = [key for key, (low, _) in noise.items() if low > -40]
    assert len(tight) >= 3 and all(slowed[key] == "slower (beyond 10%)" for key in tight), output


def test_compare_flags_the_slowed_dtype_and_gates(result_runs, capsys):
    base, slowed = str(result_runs["base"]), str(result_runs["slowed"])
    assert main(["compare", base, slowed]) == 2  # the dtype differs: nothing pairs, nothing mixed silently
    refused = capsys.readouterr()
    assert "keys differ in dtype" in refused.out and "no comparable figures" in refused.err

    code = main(["compare", base, slowed, "--ignore", "dtype", "--threshold", "5"])
    output = capsys.readouterr().out
    assert output.startswith("PAIRED ACROSS DTYPE (--ignore dtype)")
    verdicts = _verdicts(output)
    assert any(v.startswith("slower (beyond 5%)") for v in verdicts.values()), output
    assert code == 1
    # Direction per figure: a speed and its time per token judge the same samples, so their verdicts agree.
    for (scenario, batch, metric), verdict in verdicts.items():
        partner = {"decode_tok_s": "tpot_ms", "prefill_tok_s": "ttft_ms"}.get(metric)
        if partner and verdict in ("faster", "slower"):
            assert verdicts[(scenario, batch, partner)].split(" (")[0] == verdict, output


def test_compare_refuses_bad_input_in_one_line(result_runs, tmp_path, capsys):
    assert main(["compare", str(result_runs["base"]), str(tmp_path)]) == 2
    assert main(["compare", str(result_runs["base"]), str(result_runs["same"]), "--ignore", "colour"]) == 2
    assert main(["compare", str(result_runs["base"]), str(result_runs["same"]), "--threshold", "-1"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in errors if not line.startswith("hint")] == ["bench"] * 3


def _median_order_statistics(n: int, level: float = 0.95) -> tuple[int, int]:
    """0-based indexes of the sorted samples bounding the exact equal-tailed interval of the median: the count of
    samples below the median is Binomial(n, 1/2), so [x(r), x(n + 1 - r)] (1-based) with r the largest whose tail
    P(count <= r - 1) is at most (1 - level) / 2. For n = 10: x(2) and x(9); for n = 11: x(2) and x(10)."""
    tail = 0.0
    r = 0
    while tail + math.comb(n, r) / 2 ** n <= (1 - level) / 2:
        tail += math.comb(n, r) / 2 ** n
        r += 1
    return r - 1, n - r


def test_leaderboard_aggregates_runs_of_one_configuration_with_stable_columns(result_runs, tmp_path):
    out = tmp_path / "leaderboard"
    runs = [str(result_runs[name]) for name in ("base", "same")]
    assert main(["leaderboard", "build", *runs, "--out", str(out)]) == 0
    (profile_csv,) = sorted(out.glob("leaderboard-*.csv"))
    [line] = _csv(profile_csv)  # the same suite, model, dtype and machine twice: one line of two runs
    rows = [read_rows(Path(run) / "rows.jsonl") for run in runs]
    assert line["run_id"].split() == sorted(r[0]["run_id"] for r in rows) and line["runs"] == "2"
    decode = [next(r for r in run_rows if r["metric"] == "decode_tok_s" and r["scenario"] == "latency")
              for run_rows in rows]
    accuracy = [next(r for r in run_rows if r["metric"] == "accuracy") for run_rows in rows]
    # The median of two runs is their mean; the interval is the exact one of the pooled samples.
    assert float(line["decode_tok_s"]) == pytest.approx(sum(d["value"] for d in decode) / 2, rel=1e-5)
    pooled = sorted(s for d in decode for s in d["samples"])  # 10 or more: a run may keep more than its 5
    low, high = _median_order_statistics(len(pooled))
    assert float(line["decode_tok_s_low"]) == pytest.approx(pooled[low], rel=1e-5)
    assert float(line["decode_tok_s_high"]) == pytest.approx(pooled[high], rel=1e-5)
    assert line["comparability_key"] == decode[0]["key_id"] == decode[1]["key_id"]  # one workload, one key
    assert float(line["quality_mmlu"]) == pytest.approx(sum(a["value"] for a in accuracy) / 2, rel=1e-5)
    assert line["model"] == "tiny-dense" and line["moe"] == "false"
    assert line["run_date"] == max(d["time"][:10] for d in decode)
    header = next(csv.reader(profile_csv.open()))
    for column in ("model", "model_revision", "total_params", "active_params", "backend", "dtype", "runs",
                   "decode_tok_s", "decode_tok_s_low", "decode_tok_s_high", "ttft_ms", "tpot_ms", "peak_rss_mib",
                   "j_per_tok", "usd_per_mtok", "quality_mmlu", "gap_to_best_closed_points", "run_date",
                   "comparability_key"):
        assert column in header
    assert (out / "index.html").is_file()


def test_leaderboard_rows_reach_the_page_as_inert_json(result_runs, tmp_path):
    out = tmp_path / "leaderboard"
    assert main(["leaderboard", "build", str(result_runs["slowed"]), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    data = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)[1]
    assert "<img" not in data and HOSTILE_MODEL in {row["model"] for row in json.loads(data)["rows"]}
    # Nothing to fetch: the page works offline. plotly.js is inline (its own text names URLs, of map tiles it
    # never loads here: the page test counts the requests the page makes, and its CSP allows none).
    library = re.search(r"<script>/\*\*\n\* plotly\.js v.*?</script>", page, re.S)
    assert library and 'default-src \'none\'' in page
    rest = page[:library.start()] + page[library.end():]
    assert "http://" not in rest and "https://" not in rest
