"""Rows of many run folders as one table: found, checked against the schema, exact duplicates dropped; exported as
long rows (JSONL, CSV, Parquet) and as the wide summary view (CSV, Parquet)."""

import json
from pathlib import Path

from harness.errors import ConfigError
from harness.results.schema import upgrade
from harness.results.store import read_rows, write_atomic, write_jsonl_atomic
from harness.results.tables import SUMMARY_COLUMNS, csv_text, summary_rows


def rows_files(paths: list[str]) -> list[Path]:
    """The rows.jsonl of each path: the file itself, a run folder, or every run folder below a folder."""
    found = []
    for name in paths:
        path = Path(name)
        if path.is_file():
            found.append(path)
        elif (path / "rows.jsonl").is_file():
            found.append(path / "rows.jsonl")
        elif path.is_dir() and (below := sorted(path.rglob("rows.jsonl"))):
            found += below
        else:
            raise ConfigError(f"{name}: no rows.jsonl there", hint="name run folders (they hold rows.jsonl)")
    return list(dict.fromkeys(found))


def load(paths: list[str]) -> tuple[list[dict], int]:
    """Every row of the named runs, in the current schema, exact duplicates (the same run merged twice) dropped;
    returns the rows and how many duplicates were dropped. Distinct measurements are all kept."""
    rows, seen, duplicates = [], set(), 0
    for file in rows_files(paths):
        for number, row in enumerate(read_rows(file), 1):
            row = upgrade(row, f"{file}: row {number}")
            identity = json.dumps(row, sort_keys=True, default=str)
            if identity in seen:
                duplicates += 1
                continue
            seen.add(identity)
            rows.append(row)
    return rows, duplicates


def summary_lines(rows: list[dict]) -> list[dict]:
    """The wide view (one line per cell and batch size) of rows from any number of runs, run by run."""
    runs: dict = {}
    for row in rows:
        runs.setdefault(row.get("run_id"), []).append(row)
    return [line for run_rows in runs.values() for line in summary_rows(run_rows)]


def flat(row: dict) -> dict:
    """A long row as flat cells: statistics as stats_* columns, nested values (params, key, samples, fingerprint)
    as JSON text."""
    cells = {}
    for name, value in row.items():
        if name == "stats":
            cells.update({f"stats_{k}": v for k, v in value.items()})
        elif isinstance(value, dict | list):
            cells[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            cells[name] = value
    return cells


def columns_of(lines: list[dict]) -> list[str]:
    return list(dict.fromkeys(name for line in lines for name in line))


def write_parquet(path: Path, lines: list[dict], columns: list[str]) -> None:
    """A Parquet file with one typed column per name: numbers as float64 (int64 where all are integers), booleans,
    everything else as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name in columns:
        values = [line.get(name) for line in lines]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            kind = pa.bool_()
        elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            kind = pa.int64()
        elif present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            kind = pa.float64()
        else:
            kind = pa.string()
            values = [None if v is None else str(v) for v in values]
        arrays[name] = pa.array(values, type=kind)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(arrays), tmp)
    tmp.replace(path)


def write_tables(out_dir: Path, rows: list[dict]) -> list[Path]:
    """rows.jsonl, rows.csv, rows.parquet (long) and summary.csv, summary.parquet (wide) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    long = [flat(row) for row in rows]
    long_columns = columns_of(long)
    wide = summary_lines(rows)
    write_jsonl_atomic(out_dir / "rows.jsonl", rows)
    write_atomic(out_dir / "rows.csv", csv_text(long_columns, long))
    write_parquet(out_dir / "rows.parquet", long, long_columns)
    write_atomic(out_dir / "summary.csv", csv_text(SUMMARY_COLUMNS, wide))
    write_parquet(out_dir / "summary.parquet", wide, SUMMARY_COLUMNS)
    return [out_dir / name for name in ("rows.jsonl", "rows.csv", "rows.parquet", "summary.csv", "summary.parquet")]
