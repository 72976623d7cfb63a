"""Rows files as one Arrow table (harness.results.frame): the whole-file reader and the tolerant one agree, bad
lines are reported and skipped, duplicates dropped, environments kept once, and types that differ between files
meet."""

import json
import shutil
from pathlib import Path

from harness.results import frame
from harness.results.schema import make_row
from harness.results.store import read_rows, write_jsonl_atomic

FIXTURES = Path(__file__).parent / "fixtures"


def _values(table) -> list:
    return sorted(zip(table["metric"].to_pylist(), table["value"].to_pylist(), strict=True), key=str)


def test_a_file_read_whole_and_line_by_line_gives_the_same_table(tmp_path, capsys):
    whole = tmp_path / "whole.jsonl"
    shutil.copy(FIXTURES / "rows_v3.jsonl", whole)
    lines = whole.read_text().splitlines()
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n" + lines[-1][:40] + "\n")
    fast, tolerant = frame.load([whole]), frame.load([torn])
    assert fast.sources[0][1] is None and tolerant.sources[0][1] is not None  # which reader each took
    assert f"{torn}:{len(lines) + 2}: not a complete JSON line" in capsys.readouterr().err
    assert fast.table.num_rows == tolerant.table.num_rows == len(lines) - 1
    assert _values(fast.table) == _values(tolerant.table)
    assert set(fast.table.column_names) == set(tolerant.table.column_names)
    assert fast.environments == tolerant.environments and len(fast.environments) == 1


def test_every_schema_version_loads_into_one_table_and_a_second_copy_is_all_duplicates(tmp_path):
    files = [FIXTURES / f"rows_v{version}.jsonl" for version in (1, 2, 3)]
    copy = tmp_path / "copy.jsonl"
    shutil.copy(files[2], copy)
    loaded = frame.load([*files, copy])
    expected = sum(len(read_rows(path)) for path in files)
    assert loaded.table.num_rows == expected and loaded.duplicates == len(read_rows(copy))
    assert set(loaded.table["schema_version"].to_pylist()) == {3}  # older rows upgraded as they are read
    merged = [json.loads(line) for line in b"".join(frame.lines(loaded)).splitlines()]
    environments = [line["fingerprint_id"] for line in merged if line.get("record") == "environment"]
    assert len(environments) == len(set(environments)) == len(loaded.environments) == 3
    assert sum("record" not in line for line in merged) == expected
    assert all(line["schema_version"] == 3 for line in merged if "record" not in line)


def test_columns_whose_types_differ_between_files_meet(tmp_path):
    context = {"run_id": "r", "cell_id": "c", "model": "m", "scenario": "quality", "fingerprint": {"python": "3"}}
    number = make_row(context, metric="accuracy", unit="", formula="acc.v1", value=1, params={"shots": 0},
                      stats={"stderr": 0})
    text = make_row({**context, "cell_id": "d"}, metric="accuracy", unit="", formula="acc.v1", value=0.5,
                    params={"shots": "five"}, stats={"stderr": 0.25})
    write_jsonl_atomic(tmp_path / "a.jsonl", [number])
    write_jsonl_atomic(tmp_path / "b.jsonl", [text])
    table = frame.load([tmp_path / "a.jsonl", tmp_path / "b.jsonl"]).table
    assert table["value"].to_pylist() == [1.0, 0.5] and table["stats.stderr"].to_pylist() == [0.0, 0.25]
    assert table["params.shots"].to_pylist() == ["0", "five"]
