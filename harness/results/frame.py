"""Rows as columns: rows files read into one Arrow table by pyarrow's JSON reader (exact duplicates dropped), and
pandas frames of its columns for the summary pivot and the leaderboard's group-bys.

A file in the current layout, whole, is parsed as it is; any other (an older schema version, a torn or corrupt line,
a blank line) goes through the tolerant reader (store.read_rows, which reports each bad line as FILE:LINE), is
upgraded and stored anew, then parsed the same way. Struct fields are flattened to dotted columns (params.batch_size,
stats.n); lists (samples) stay lists.
"""

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from harness.errors import ConfigError
from harness.results.schema import SCHEMA_VERSION, upgrade
from harness.results.store import ENVIRONMENT, ROW_KEYS, read_rows, stored_text

# A row is an exact duplicate of another (the same run merged twice) when all of these are equal.
IDENTITY = ("run_id", "cell_id", "key_id", "metric", "time", "value", "status", "error", "fingerprint_id")
# Read as text whatever they look like (pyarrow would make timestamps of ISO times); the figure is always a number.
TYPES = pa.schema([("time", pa.string()), ("value", pa.float64()), ("error", pa.string())])


@dataclass
class Loaded:
    table: pa.Table  # every row, flattened, duplicates dropped (no environment records)
    environments: dict[str, dict]  # fingerprint_id -> fingerprint
    duplicates: int
    sources: list[tuple[Path, bytes | None]]  # each file, and its stored text where it was not used as it is
    kept: list[np.ndarray]  # per file: which of its lines the merged rows.jsonl keeps
    folders: dict[str, Path]  # run_id -> the folder of the (first) file that holds its rows


@dataclass
class _File:
    rows: pa.Table | None  # the file's rows, flattened (None once load() has concatenated them)
    environments: list[tuple[str, dict]]  # its environment records, in order
    is_environment: np.ndarray  # per line
    stored: bytes | None  # its text stored anew, where it was not used as it is
    first: np.ndarray = field(init=False)  # per row: the first of its IDENTITY in this file
    runs: tuple = field(init=False)  # the run ids of its rows
    count: int = field(init=False)  # how many rows (kept when `rows` is let go)

    def __post_init__(self):
        self.count = self.rows.num_rows
        self.first = _first_of_each(self.rows)
        self.runs = tuple(pc.unique(self.rows["run_id"]).to_pylist()) if "run_id" in self.rows.column_names else ()


def _read(text: bytes) -> pa.Table:
    """One file's lines, parsed in one block on this thread (load() reads files in parallel instead)."""
    return pj.read_json(io.BytesIO(text), read_options=pj.ReadOptions(use_threads=False, block_size=len(text) + 1),
                        parse_options=pj.ParseOptions(explicit_schema=TYPES, unexpected_field_behavior="infer"))


def _parse(text: bytes, where: str) -> pa.Table:
    try:
        return _read(text)
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{where}: rows whose fields change type from line to line ({exc})",
                          hint="a row file written by hand or by another tool: fix the named field") from None


def _current(table: pa.Table, text: bytes) -> bool:
    """Whether every line of `text` is in `table` and is a current row (a version, a cell and a status) or an
    environment record."""
    names = table.column_names
    if table.num_rows != text.count(b"\n") + (not text.endswith(b"\n")) or any(k not in names for k in ROW_KEYS):
        return False
    row = pc.invert(pc.fill_null(pc.equal(table["record"], ENVIRONMENT), False)) if "record" in names else None
    if row is not None and pc.any(pc.and_(pc.is_valid(table["record"]), row)).as_py():
        return False  # a record of a kind this bench does not know
    for name in ROW_KEYS:
        lacking = pc.is_null(table[name]) if name != "schema_version" else pc.fill_null(pc.not_equal(
            table[name], SCHEMA_VERSION), True)
        if pc.any(lacking if row is None else pc.and_(lacking, row)).as_py():
            return False
    return True


def _stored_anew(path: Path) -> bytes:
    rows = read_rows(path)
    return stored_text(upgrade(row, f"{path}: row {number}") for number, row in enumerate(rows, 1)).encode()


def _split(table: pa.Table, stored: bytes | None) -> _File:
    """A parsed file as its flattened rows and its environment records."""
    inline = [name for name in ("record", "fingerprint") if name in table.column_names]
    if "record" not in table.column_names:  # a row holding its own fingerprint keeps only its id here
        return _File(_flat(table.drop_columns(inline)), [], np.zeros(table.num_rows, dtype=bool), stored)
    is_environment = pc.fill_null(pc.equal(table["record"], ENVIRONMENT), False).to_numpy(zero_copy_only=False)
    lines = np.flatnonzero(is_environment)
    records = table.take(lines).select(["fingerprint_id", "fingerprint"]).to_pylist()
    # The rows between environment records as slices: no copy (a filter would copy every list of samples).
    bounds = [-1, *lines, table.num_rows]
    pieces = [table.slice(start + 1, end - start - 1) for start, end in zip(bounds, bounds[1:], strict=False)
              if end - start > 1]
    rows = pa.concat_tables(pieces or [table.slice(0, 0)]).drop_columns(inline)
    return _File(_flat(rows), [(r["fingerprint_id"], r["fingerprint"]) for r in records], is_environment, stored)


def _flat(table: pa.Table) -> pa.Table:
    """Struct fields as dotted columns."""
    while any(pa.types.is_struct(field.type) for field in table.schema):
        table = table.flatten()
    return table


def _compact(table: pa.Table) -> pa.Table:
    """Text as dictionary columns: rows repeat their context (model, device, messages) thousands of times, so each
    chunk's distinct texts are stored once (a third of the memory). Column by column, each plain one freed as its
    encoded one replaces it."""
    for index, column in enumerate(table.schema):
        if pa.types.is_string(column.type):
            table = table.set_column(index, column.name, pc.dictionary_encode(table[column.name]))
    return table


def text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text column as plain strings (undoing the dictionary encoding)."""
    return column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column


def _file(path: Path) -> _File:
    text = path.read_bytes()
    if text.strip() and b"\n\n" not in text and not text.startswith(b"\n"):
        try:
            table = _read(text)
        except pa.ArrowInvalid:
            table = None
        if table is not None and _current(table, text):
            return _split(table, None)
    stored = _stored_anew(path)
    return _split(_parse(stored, str(path)) if stored else pa.table({"cell_id": pa.array([], pa.string())}), stored)


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table of many, columns missing from some filled with nulls and numbers widened (int to float); a column
    of text in one file and numbers in another becomes text."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        kinds: dict[str, set] = {}
        for table in tables:
            for field in table.schema:
                if not pa.types.is_null(field.type):
                    kinds.setdefault(field.name, set()).add(field.type)
        common = {name: pa.float64() if all(pa.types.is_integer(k) or pa.types.is_floating(k) for k in seen)
                  else pa.string() for name, seen in kinds.items() if len(seen) > 1}
        return pa.concat_tables([table.cast(pa.schema(
            [pa.field(f.name, common[f.name]) if f.name in common and not pa.types.is_null(f.type) else f
             for f in table.schema])) for table in tables], promote_options="permissive")


def load(files: list[Path]) -> Loaded:
    """Every row of `files` as one table, exact duplicates dropped (IDENTITY), with the environments they name.
    Files are parsed on a thread per core (pyarrow parses without the GIL)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        parsed = list(pool.map(_file, files))
    table = _concat([file.rows for file in parsed]) if parsed else pa.table({"cell_id": pa.array([], pa.string())})
    for file in parsed:
        file.rows = None  # the table holds them now; the encoding below then frees their plain text
    table = _compact(table)
    unique = _unique(table, parsed)
    environments: dict[str, dict] = {}
    kept, offset, folders = [], 0, {}
    for path, file in zip(files, parsed, strict=True):
        keep = np.zeros(len(file.is_environment), dtype=bool)
        keep[~file.is_environment] = unique[offset:offset + file.count]
        for line, (ident, fingerprint) in zip(np.flatnonzero(file.is_environment), file.environments, strict=True):
            keep[line] = ident not in environments
            environments.setdefault(ident, fingerprint)
        kept.append(keep)
        offset += file.count
        for run_id in file.runs:
            folders.setdefault(run_id, path.parent)
    body = table if unique.all() else table.filter(pa.array(unique))
    return Loaded(body, environments, int((~unique).sum()), [(path, file.stored) for path, file in
                                                             zip(files, parsed, strict=True)], kept, folders)


def _unique(table: pa.Table, parsed: list[_File]) -> np.ndarray:
    """Which rows of the concatenated table are the first of their IDENTITY. Duplicates across files can only be
    rows of a run that more than one file holds (IDENTITY has the run id), so only those are hashed together; the
    rest keep their file's own answer."""
    unique = np.concatenate([file.first for file in parsed]) if parsed else np.zeros(0, dtype=bool)
    counts: dict = {}
    for file in parsed:
        for run_id in file.runs:
            counts[run_id] = counts.get(run_id, 0) + 1
    shared = [run_id for run_id, count in counts.items() if count > 1]
    if shared:
        in_shared = pc.fill_null(pc.is_in(text(table["run_id"]), pa.array(shared)), False).to_numpy(
            zero_copy_only=False)
        rows = np.flatnonzero(in_shared)
        first = _first_of_each(table.take(rows))
        unique[rows] = first
    return unique


def _first_of_each(table: pa.Table) -> np.ndarray:
    """Which rows are the first of their IDENTITY (Arrow's hash group-by)."""
    names = [name for name in IDENTITY if name in table.column_names]
    first = np.zeros(table.num_rows, dtype=bool)
    if not names or not table.num_rows:
        return first
    keyed = pa.table({name: text(table[name]) for name in names}).append_column(
        "_index", pa.array(np.arange(table.num_rows)))
    first[keyed.group_by(names, use_threads=False).aggregate([("_index", "min")])["_index_min"].to_numpy()] = True
    return first


def lines(loaded: Loaded) -> Iterator[bytes]:
    """The kept lines of every source, in order, each environment record once (the merged rows.jsonl), a file's
    worth at a time."""
    for (path, stored), kept in zip(loaded.sources, loaded.kept, strict=True):
        text = stored if stored is not None else path.read_bytes()
        if not text.endswith(b"\n"):
            text += b"\n"
        ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("\n")) + 1
        starts = np.concatenate([[0], ends[:-1]])
        # Each run of kept lines as one slice of the file.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], kept.astype(np.int8), [0]])))
        for first, last in zip(edges[::2], edges[1::2], strict=True):
            yield text[starts[first]:ends[last - 1]]


def from_rows(rows: list[dict]) -> pa.Table:
    """Rows in memory (one run's) as a flattened table, the same as load() makes of their file."""
    text = stored_text(rows).encode()
    return _split(_parse(text, "rows"), None).rows if text else pa.table({})


def columns(table: pa.Table, names: list[str]) -> pd.DataFrame:
    """The named columns as a pandas frame (a name the table lacks is a column of nulls); numbers as float64 or
    pandas' nullable integers, text as pandas' own (Arrow-backed from pandas 3), everything else as Python objects
    (booleans, lists)."""
    frame = {}
    for name in names:
        if name not in table.column_names:
            frame[name] = pd.Series([None] * table.num_rows, dtype=object)
            continue
        column = text(table[name])
        kind = column.type
        if pa.types.is_floating(kind):
            frame[name] = column.to_pandas()
        elif pa.types.is_integer(kind):
            frame[name] = column.to_pandas(types_mapper={kind: pd.Int64Dtype()}.get)
        else:
            frame[name] = column.to_pandas() if pa.types.is_string(kind) else pd.Series(column.to_pylist(),
                                                                                         dtype=object)
    return pd.DataFrame(frame)
