"""Where rows go: rows.jsonl, appended and flushed to disk as each figure is measured; files replaced atomically.

A rows file holds each environment fingerprint once, as a line {"record": "environment", "fingerprint_id",
"fingerprint"} written before the first row that names it; a row carries only its `fingerprint_id`, and its
`key_id` without the key itself (the key is made of the row's own fields). Readers give every row its `fingerprint`
and its `key` back."""

import collections
import contextlib
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from harness.errors import ConfigError
from harness.results.schema import comparability_key, fingerprint_id

# What every result row has (schema.make_row); a JSON object without them is not a row.
ROW_KEYS = ("schema_version", "cell_id", "status")
ENVIRONMENT = "environment"  # the `record` of a line that holds a fingerprint


def stored_lines(record: dict, written: set[str]) -> str:
    """The JSON lines that store `record`: a row with a fingerprint becomes its environment record (unless `written`
    holds its id already) and the row naming it, without its key; any other record is one line as it is."""
    if "fingerprint" not in record:
        return json.dumps(record, default=str) + "\n"
    ident = record.get("fingerprint_id") or fingerprint_id(record["fingerprint"])
    environment = ""
    if ident not in written:
        written.add(ident)
        environment = json.dumps({"record": ENVIRONMENT, "fingerprint_id": ident,
                                  "fingerprint": record["fingerprint"]}, default=str) + "\n"
    row = {name: value for name, value in record.items() if name not in ("fingerprint", "key")}
    row["fingerprint_id"] = ident
    return environment + json.dumps(row, default=str) + "\n"


class RowWriter:
    """Appends one JSON object per line and makes it durable before returning, so a crash loses no finished row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._environments = {record.get("fingerprint_id") for record in read_jsonl(self.path, lambda _: None)
                              if record.get("record") == ENVIRONMENT} if self.path.exists() else set()
        self._file = self.path.open("a", encoding="utf-8")
        self.written = 0  # rows written by this writer

    def write(self, row: dict) -> None:
        self._file.write(stored_lines(row, self._environments))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.written += 1

    def close(self) -> None:
        self._file.close()


def _warn(problem: str) -> None:
    print(f"bench: warning: {problem}", file=sys.stderr)


def read_jsonl(path: Path, on_bad_line: Callable[[str], None] = _warn) -> list[dict]:
    """Every line of `path` that is a JSON object. A line that is not (a row cut short by a kill, a corrupt byte)
    is reported as FILE:LINE with the reason, and skipped: the rest still loads."""
    records = []
    with Path(path).open(encoding="utf-8", errors="replace") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                on_bad_line(f"{path}:{number}: not a complete JSON line ({exc.msg}, column {exc.colno}); skipped")
                continue
            if not isinstance(record, dict):
                on_bad_line(f"{path}:{number}: a {type(record).__name__}, not a JSON object; skipped")
                continue
            records.append(record)
    return records


def read_rows(path: Path, on_bad_line: Callable[[str], None] = _warn) -> list[dict]:
    """The result rows of a rows.jsonl, each with its fingerprint; a line that is not a row is reported with its
    line number and skipped, and a row whose environment record is missing keeps an empty fingerprint, reported."""
    rows, environments = [], {}
    for number, record in enumerate(read_jsonl(path, on_bad_line), 1):
        if record.get("record") == ENVIRONMENT:
            environments[record.get("fingerprint_id")] = record.get("fingerprint") or {}
            continue
        missing = [key for key in ROW_KEYS if key not in record]
        if missing:
            on_bad_line(f"{path}: record {number} is not a result row (no {', '.join(missing)}); skipped")
            continue
        if "key" not in record:
            record["key"] = comparability_key(record, record.get("params") or {})
        if "fingerprint" not in record:
            record["fingerprint"] = environments.get(record.get("fingerprint_id"))
            if record["fingerprint"] is None:
                on_bad_line(f"{path}: record {number} names environment {record.get('fingerprint_id')}, which no "
                            "earlier line holds; its fingerprint is unknown")
                record["fingerprint"] = {}
        rows.append(record)
    return rows


def stored_text(records) -> str:
    """`records` (rows or any other JSON objects) as the text of a rows file, each fingerprint stored once."""
    written: set[str] = set()
    return "".join(stored_lines(record, written) for record in records)


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    write_atomic(path, stored_text(records))


@contextlib.contextmanager
def locked_run_dir(run_dir: Path):
    """Holds an exclusive lock on the run folder while a run writes it; a second `bench run` on the same folder is
    refused at once. The kernel drops the lock when the process ends, however it ends (kill -9 included). A run
    refused before it wrote anything leaves no folder behind when it made the folder itself."""
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _held(run_dir):
            yield
    except BaseException:
        if made and os.listdir(run_dir) == [".lock"]:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def _held(run_dir: Path):
    with open(run_dir / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise ConfigError(f"run folder {run_dir} is in use by another bench run (pid {holder})",
                              hint="wait for it to finish, or give this run another --out") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def write_atomic(path: Path, text: str) -> None:
    """Writes a temporary file beside `path`, then renames it over `path`: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class _Dumper(yaml.SafeDumper):
    """Safe YAML, with tuples (as specs hold lists) written as lists."""


_Dumper.add_representer(tuple, yaml.SafeDumper.represent_list)


def write_yaml(path: Path, data: dict) -> None:
    write_atomic(path, yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True))


def completed_cells(run_dir: Path) -> set[str]:
    """The cells whose rows are all on disk: recorded in cells.jsonl, with as many rows in rows.jsonl as recorded.
    Rows of every other cell (cut short by a kill) and any torn line are dropped, both files rewritten atomically,
    so that running those cells again duplicates nothing."""
    rows_file, cells_file = run_dir / "rows.jsonl", run_dir / "cells.jsonl"
    rows = read_rows(rows_file) if rows_file.exists() else []
    counts = collections.Counter(row["cell_id"] for row in rows)
    records = read_jsonl(cells_file) if cells_file.exists() else []
    done = {r["cell_id"]: r for r in records if r.get("cell_id") in counts and counts[r["cell_id"]] == r.get("rows")}
    write_jsonl_atomic(rows_file, [row for row in rows if row["cell_id"] in done])
    write_jsonl_atomic(cells_file, list(done.values()))
    return set(done)
