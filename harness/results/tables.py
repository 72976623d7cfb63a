"""Wide views of the long rows: summary.csv (one line per cell and batch size) and the console table."""

import csv
import io
from pathlib import Path

from harness.measure.metrics import METRICS, console_columns, headlines
from harness.results.console import table
from harness.results.store import write_atomic

CONTEXT_COLUMNS = ["run_id", "model", "backend", "device", "device_name", "dtype", "profile", "off_profile", "task",
                   "scenario", "model_revision", "model_source", "energy_source"]
# Every figure of the metric dictionary, in its order; the figure a quality line is headed by, best first.
FIGURE_COLUMNS = list(METRICS)
QUALITY_HEADLINE = headlines()
# Whether a multiple-choice headline means anything (harness.quality.scoring.choice_score), from its row's stats.
DEGENERACY_FIELDS = ("majority_baseline", "top_choice_share", "degenerate")
SUMMARY_COLUMNS = [
    *CONTEXT_COLUMNS[:6], "task", "scenario", "engine_step", "batch_size", "load", "prompt_tokens", "output_tokens",
    *FIGURE_COLUMNS,
    "quality_metric", "quality_stderr", "quality_uniform", *DEGENERACY_FIELDS, "samples", "status", "error", "profile",
    "off_profile", "energy_source", "model_revision", "key_id",
]


def summary_rows(rows: list[dict]) -> list[dict]:
    """Groups rows by cell and batch size. Figures without a batch size (the cell's memory) go on every line of
    their cell; a failed row marks every line of its cell failed, with the error."""
    cells: dict[str, dict] = {}
    for row in rows:
        cells.setdefault(row["cell_id"], {"rows": [], "first": row})["rows"].append(row)
    lines = []
    for cell in cells.values():
        per_batch: dict = {}
        shared: dict = {}
        failure = next((r for r in cell["rows"] if r["status"] != "ok"), None)
        for row in cell["rows"]:
            if row["metric"] is None:
                continue
            # Served load has a line per load point (concurrency or rate) instead of a batch size.
            batch = row["params"].get("batch_size", row["params"].get("load"))
            target = shared if batch is None else per_batch.setdefault(batch, {"_params": row["params"]})
            target[row["metric"]] = row
        # A cell without batch sizes (quality) takes its line's parameters from its headline figure.
        cell_params = next((r["params"] for r in cell["rows"] if r["metric"] in QUALITY_HEADLINE), {})
        for batch, figures in (sorted(per_batch.items()) or [(None, {"_params": cell_params})]):
            line = _line(cell["first"], figures.pop("_params"), {**shared, **figures})
            line["batch_size"] = None if isinstance(batch, str) else batch
            if failure:
                line["status"], line["error"] = failure["status"], failure["error"]
            lines.append(line)
    return lines


def _line(first: dict, params: dict, figures: dict) -> dict:
    line = {col: first.get(col) for col in CONTEXT_COLUMNS}
    line.update(prompt_tokens=params.get("prompt_tokens"), output_tokens=params.get("output_tokens"),
                engine_step=params.get("engine_step"), load=params.get("load"))
    for name, row in figures.items():
        if name in FIGURE_COLUMNS:
            line[name] = row["value"]
    quality = next((figures[m] for m in QUALITY_HEADLINE if m in figures), None)
    if quality:
        line["quality_metric"], line["quality_stderr"] = quality["metric"], quality["stats"].get("stderr")
        line["quality_uniform"] = quality["stats"].get("uniform")  # what a model that knew nothing would score
        line.update({name: quality["stats"].get(name) for name in DEGENERACY_FIELDS})
    timed = figures.get("decode_tok_s") or figures.get("ttft_ms") or quality
    line["samples"] = timed["stats"].get("n") if timed else None
    line["key_id"] = timed["key_id"] if timed else None
    line["status"], line["error"] = "ok", None
    return line


def write_summary_csv(path: Path, lines: list[dict]) -> None:
    write_atomic(path, csv_text(SUMMARY_COLUMNS, lines))


def csv_text(columns: list[str], lines: list[dict]) -> str:
    """CSV of `lines` under `columns` (other keys ignored); the one CSV writer of every table bench writes."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for line in lines:
        writer.writerow({k: _cell(v) for k, v in line.items()})
    return out.getvalue()


# A text cell starting with one of these is a formula to a spreadsheet (CSV injection): a quote in front makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


CONSOLE_COLUMNS = [("model", "model"), ("scenario", "scenario"), ("task", "task"), ("engine_step", "engine"),
                   ("batch_size", "batch"), *console_columns().items(), ("quality_metric", "quality"),
                   ("degenerate", "degenerate"), ("status", "status")]


def console_table(lines: list[dict]) -> str:
    """The summary as an aligned table; columns that no line fills (e.g. cost without a price) are left out."""
    columns = [(key, title) for key, title in CONSOLE_COLUMNS if any(line.get(key) is not None for line in lines)]
    body = [[_console_cell(line, key) for key, _ in columns] for line in lines]
    out = [table([title for _, title in columns], body)]
    errors = [f"  {line['model']} {line['scenario']}: {line['error']}" for line in lines if line.get("error")]
    degenerate = [f"  {line['model']} {line['task']}: {line['quality_metric']} {line[line['quality_metric']]:.3f}, "
                  f"always the most frequent right choice {line['majority_baseline']:.3f}, "
                  f"{line['top_choice_share']:.0%} of picks on one choice" for line in lines if line.get("degenerate")]
    return "\n".join(out + (["failed cells:", *dict.fromkeys(errors)] if errors else [])
                     + (["degenerate (the score says little about the model):", *degenerate] if degenerate else []))


def _console_cell(line: dict, key: str) -> str:
    value = line.get(key)
    if key == "quality_metric" and value is not None:
        uniform = f" (uniform {line['quality_uniform']:.4g})" if line.get("quality_uniform") else ""
        return f"{value} {line[value]:.3f}±{line['quality_stderr']:.3f}{uniform}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return "" if value is None else str(value)
