"""Wide views of the long rows: summary.csv (one line per cell and batch size) and the console table."""

import csv
import io
from pathlib import Path

from harness.results.store import write_atomic

CONTEXT_COLUMNS = ["run_id", "model", "backend", "device", "device_name", "dtype", "profile", "off_profile", "task",
                   "scenario", "model_revision", "energy_source"]
FIGURE_COLUMNS = [
    "ttft_ms", "tpot_ms", "e2e_latency_ms", "prefill_tok_s", "decode_tok_s", "peak_rss_mib", "weights_mib",
    "kv_cache_mib", "peak_allocated_mib", "accuracy", "acc_norm", "exact_match", "pass_at_1", "perplexity",
    "bits_per_byte", "eval_s", "total_params", "active_params", "mbu", "mbu_calibrated",
    "mfu", "mfu_calibrated", "expert_imbalance", "calibrated_bandwidth_gbps", "calibrated_tflops", "energy_j",
    "j_per_tok", "tok_per_j",
    "usd_per_mtok", "itl_ms", "output_tok_s", "request_s", "goodput_req_s", "failed_requests",
]
# The figure a quality line is headed by in the console, with its standard error.
QUALITY_HEADLINE = ("accuracy", "exact_match", "pass_at_1", "perplexity")
# Whether a multiple-choice headline means anything (harness.quality.scoring.choice_score), from its row's stats.
DEGENERACY_FIELDS = ("majority_baseline", "top_choice_share", "degenerate")
SUMMARY_COLUMNS = [
    *CONTEXT_COLUMNS[:6], "task", "scenario", "engine_step", "batch_size", "load", "prompt_tokens", "output_tokens",
    *FIGURE_COLUMNS,
    "quality_metric", "quality_stderr", *DEGENERACY_FIELDS, "samples", "status", "error", "profile", "off_profile",
    "energy_source",
    "model_revision", "key_id",
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


CONSOLE_COLUMNS = [
    ("model", "model"), ("scenario", "scenario"), ("task", "task"), ("engine_step", "engine"),
    ("batch_size", "batch"), ("ttft_ms", "ttft_ms"),
    ("tpot_ms", "tpot_ms"), ("prefill_tok_s", "prefill_tok/s"), ("decode_tok_s", "decode_tok/s"),
    ("peak_rss_mib", "peak_rss_MiB"), ("mbu_calibrated", "mbu_cal"), ("mbu", "mbu_sheet"),
    ("usd_per_mtok", "$/Mtok"), ("quality_metric", "quality"), ("degenerate", "degenerate"),
    ("status", "status"),
]


def console_table(lines: list[dict]) -> str:
    """The summary as aligned text; columns that no line fills (e.g. cost without a price) are left out."""
    columns = [(key, title) for key, title in CONSOLE_COLUMNS if any(line.get(key) is not None for line in lines)]
    header = [title for _, title in columns]
    body = []
    for line in lines:
        cells = []
        for key, _ in columns:
            value = line.get(key)
            if key == "quality_metric" and value is not None:
                cells.append(f"{value} {line[value]:.3f}±{line['quality_stderr']:.3f}")
            elif isinstance(value, float):
                cells.append(f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}")
            else:
                cells.append("" if value is None else str(value))
        body.append(cells)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in body]
    errors = [f"  {line['model']} {line['scenario']}: {line['error']}" for line in lines if line.get("error")]
    degenerate = [f"  {line['model']} {line['task']}: {line['quality_metric']} {line[line['quality_metric']]:.3f}, "
                  f"always the most frequent right choice {line['majority_baseline']:.3f}, "
                  f"{line['top_choice_share']:.0%} of picks on one choice" for line in lines if line.get("degenerate")]
    return "\n".join(out + (["failed cells:", *dict.fromkeys(errors)] if errors else [])
                     + (["degenerate (the score says little about the model):", *degenerate] if degenerate else []))
