"""Rows as columns: rows files read into one Arrow table by pyarrow's JSON reader (exact duplicates dropped), and
pandas frames of its columns for the summary pivot and the leaderboard's group-bys.

A file in the current layout, whole, is parsed as it is; any other (an older schema version, a torn or corrupt line,
a blank line) goes through the tolerant reader (store.read_rows, which reports each bad line as FILE:LINE), is
upgraded and stored anew, then parsed the same way. Struct fields are flattened to dotted columns (params.batch_size,
stats.n); lists (samples) stay lists.
"""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from harness.errors import ConfigError
from harness.results.schema import SCHEMA_VERSION, upgrade
from harness.results.store import ENVIRONMENT, ROW_KEYS, read_rows, stored_lines

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
    kept: list[np.ndarray]  # per file: which of its lines the table (or, for environments, the merge) keeps
    folders: dict[str, Path]  # run_id -> the folder of the (first) file that holds its rows


def _read(text: bytes) -> pa.Table:
    return pj.read_json(io.BytesIO(text), parse_options=pj.ParseOptions(explicit_schema=TYPES,
                                                                        unexpected_field_behavior="infer"))


def _flat(table: pa.Table) -> pa.Table:
    while any(pa.types.is_struct(field.type) for field in table.schema):
        table = table.flatten()
    return table


def _parse(text: bytes, where: str) -> pa.Table:
    try:
        return _flat(_read(text))
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{where}: rows whose fields change type from line to line ({exc})",
                          hint="a row file written by hand or by another tool: fix the named field") from None


def _as_is(text: bytes) -> pa.Table | None:
    """The file's table if every line is a current row or environment record, else None."""
    if not text.strip() or b"\n\n" in text or text.startswith(b"\n"):
        return None
    try:
        table = _read(text)
    except pa.ArrowInvalid:
        return None
    if table.num_rows != text.count(b"\n") + (not text.endswith(b"\n")) \
            or any(key not in table.column_names for key in ROW_KEYS):
        return None
    # Every line but the environment records is a row of this version, with a cell and a status.
    rows = _rows_mask(table)
    for name in ("schema_version", "cell_id", "status"):
        present = pc.is_valid(table[name]) if name != "schema_version" else pc.fill_null(
            pc.equal(table[name], SCHEMA_VERSION), False)
        if not pc.all(pc.or_(present, pc.invert(rows))).as_py():
            return None
    return _flat(table)


def _stored_anew(path: Path) -> bytes:
    written: set[str] = set()
    return "".join(stored_lines(upgrade(row, f"{path}: row {number}"), written)
                   for number, row in enumerate(read_rows(path), 1)).encode()


def _rows_mask(table: pa.Table) -> pa.BooleanArray:
    if "record" not in table.column_names:
        return pa.array(np.ones(table.num_rows, dtype=bool))
    return pc.invert(pc.fill_null(pc.equal(table["record"], ENVIRONMENT), False))


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
    """Every row of `files` as one table, exact duplicates dropped (IDENTITY), with the environments they name."""
    tables, sources, folders = [], [], {}
    for path in files:
        text = path.read_bytes()
        table = _as_is(text)
        stored = None
        if table is None:
            stored = _stored_anew(path)
            table = _parse(stored, str(path)) if stored else pa.table({"cell_id": pa.array([], pa.string())})
        tables.append(table)
        sources.append((path, stored))
        for run_id in pc.unique(table["run_id"]).to_pylist() if "run_id" in table.column_names else []:
            folders.setdefault(run_id, path.parent)
    table = _concat(tables) if tables else pa.table({"cell_id": pa.array([], pa.string())})
    rows = _rows_mask(table).to_numpy(zero_copy_only=False)
    unique = rows & ~columns(table, [name for name in IDENTITY if name in table.column_names]).duplicated().to_numpy()
    environments, first = _environments(table, rows)
    keep = unique | first
    offsets = np.cumsum([0] + [t.num_rows for t in tables])
    body = table.filter(pa.array(unique))
    body = body.drop_columns([c for c in body.column_names if c.startswith("fingerprint.") or c == "record"])
    return Loaded(body, environments, int(rows.sum() - unique.sum()), sources,
                  [keep[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)], folders)


def _environments(table: pa.Table, rows: np.ndarray) -> tuple[dict[str, dict], np.ndarray]:
    """The fingerprints of the environment records, and which line is the first record of each."""
    first = np.zeros(table.num_rows, dtype=bool)
    if rows.all():
        return {}, first
    ids = pd.Series(table["fingerprint_id"].to_numpy(zero_copy_only=False), dtype=object).where(~rows)
    first = ~rows & ids.notna().to_numpy() & ~ids.duplicated().to_numpy()
    names = [c for c in table.column_names if c.startswith("fingerprint.")]
    records = table.filter(pa.array(first)).select(["fingerprint_id", *names]).to_pylist()
    return {r["fingerprint_id"]: {name[len("fingerprint."):]: r[name] for name in names} for r in records}, first


def lines(loaded: Loaded) -> Iterator[bytes]:
    """The kept lines of every source, in order, each environment record once: the merged rows.jsonl."""
    for (path, stored), kept in zip(loaded.sources, loaded.kept, strict=True):
        text = stored if stored is not None else path.read_bytes()
        for line, keep in zip(text.splitlines(), kept, strict=True):
            if keep:
                yield line + b"\n"


def from_rows(rows: list[dict]) -> pa.Table:
    """Rows in memory (one run's) as a flattened table, the same as load() makes of their file."""
    written: set[str] = set()
    text = "".join(stored_lines(row, written) for row in rows).encode()
    table = _parse(text, "rows") if text else pa.table({})
    return table.filter(_rows_mask(table)) if table.num_rows else table


def columns(table: pa.Table, names: list[str]) -> pd.DataFrame:
    """The named columns as a pandas frame (a name the table lacks is a column of nulls); numbers as float64 or
    pandas' nullable integers, everything else as Python objects (text, booleans, lists)."""
    frame = {}
    for name in names:
        if name not in table.column_names:
            frame[name] = pd.Series([None] * table.num_rows, dtype=object)
            continue
        column = table[name]
        kind = column.type
        if pa.types.is_floating(kind):
            frame[name] = column.to_pandas()
        elif pa.types.is_integer(kind):
            frame[name] = column.to_pandas(types_mapper={kind: pd.Int64Dtype()}.get)
        else:
            frame[name] = pd.Series(column.to_pylist() if not pa.types.is_string(kind) else
                                    column.to_numpy(zero_copy_only=False), dtype=object)
    return pd.DataFrame(frame)
