"""Where rows go: rows.jsonl, appended and flushed to disk as each figure is measured; files replaced atomically."""

import json
import os
from pathlib import Path

import yaml


class RowWriter:
    """Appends one JSON object per line and makes it durable before returning, so a crash loses no finished row."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_rows(path: Path) -> list[dict]:
    rows = []
    with Path(path).open(encoding="utf-8") as file:
        for line in file:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def write_atomic(path: Path, text: str) -> None:
    """Writes a temporary file beside `path`, then renames it over `path`: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_yaml(path: Path, data: dict) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
