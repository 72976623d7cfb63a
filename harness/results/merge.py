"""Rows of many run folders as one table: found, checked against the schema, exact duplicates dropped; exported as
long rows (JSONL with each environment once, Parquet) and as the wide summary view (CSV, Parquet)."""

from pathlib import Path

import pyarrow.parquet as pq

from harness.errors import ConfigError
from harness.results import frame
from harness.results.schema import upgrade
from harness.results.store import read_rows
from harness.results.tables import SUMMARY_COLUMNS, csv_text, summary, with_none


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
    """Every row of the named runs as dicts (for compare and the claims, which read a few runs), in the current
    schema, exact duplicates (frame.IDENTITY) dropped; returns the rows and how many duplicates were dropped."""
    rows, seen, duplicates = [], set(), 0
    for file in rows_files(paths):
        for number, row in enumerate(read_rows(file), 1):
            row = upgrade(row, f"{file}: row {number}")
            identity = tuple(str(row.get(name)) for name in frame.IDENTITY)
            if identity in seen:
                duplicates += 1
                continue
            seen.add(identity)
            rows.append(row)
    return rows, duplicates


def load_table(paths: list[str]) -> frame.Loaded:
    """Every row of the named runs as one Arrow table (for merge and the leaderboard, which read many)."""
    return frame.load(rows_files(paths))


def write_tables(out_dir: Path, loaded: frame.Loaded) -> list[Path]:
    """rows.jsonl, rows.parquet (long) and summary.csv, summary.parquet (wide) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("rows.jsonl", "rows.parquet", "summary.csv", "summary.parquet")
    temporary = {name: out_dir / f".{name}.tmp" for name in names}
    with temporary["rows.jsonl"].open("wb") as file:
        file.writelines(frame.lines(loaded))
    pq.write_table(loaded.table, temporary["rows.parquet"])
    wide = summary(loaded.table)
    temporary["summary.csv"].write_text(csv_text(SUMMARY_COLUMNS, wide), encoding="utf-8")
    with_none(wide.reindex(columns=SUMMARY_COLUMNS)).to_parquet(temporary["summary.parquet"], index=False)
    for name in names:
        temporary[name].replace(out_dir / name)
    return [out_dir / name for name in names]
