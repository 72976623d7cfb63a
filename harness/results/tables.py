"""Wide views of the long rows: summary.csv (one line per cell and batch size) and the console table."""

import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from harness.measure.metrics import METRICS, console_columns, headlines
from harness.results import frame
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
    "quality_metric", "quality_stderr", "quality_uniform", *DEGENERACY_FIELDS, "samples", "half_width", "converged",
    "status", "error", "profile",
    "off_profile", "energy_source", "model_revision", "key_id",
]


# What the summary reads of every long row (frame.columns of the flattened table); the context (CONTEXT_COLUMNS) it
# reads of each cell's first row only.
ROW_COLUMNS = [*dict.fromkeys(["run_id", "cell_id", "metric", "value", "status", "error", "key_id",
                               "params.batch_size", "params.load", "params.prompt_tokens", "params.output_tokens",
                               "params.engine_step", "stats.n", "stats.stderr", "stats.uniform", "stats.half_width",
                               "stats.converged",
                               *(f"stats.{name}" for name in DEGENERACY_FIELDS)])]
LINE_PARAMS = ["params.prompt_tokens", "params.output_tokens", "params.engine_step", "params.load"]
CELL = ["run_id", "cell_id"]
LINE = [*CELL, "batch"]


def summary_rows(rows: list[dict]) -> list[dict]:
    """The summary lines of rows in memory (one run's), as dicts with None for what a line lacks."""
    return records(summary(frame.from_rows(rows)))


def with_none(values):
    """A frame or series as Python objects, None where a value is missing (NaN, NA)."""
    return values.astype(object).where(values.notna(), None)


def records(lines: pd.DataFrame) -> list[dict]:
    return with_none(lines).to_dict("records")


def summary(table) -> pd.DataFrame:
    """The wide view of a flattened rows table: a line per run, cell and batch size (or load point of served load).
    Figures without a batch size (the cell's memory) go on every line of their cell, a batch's own figure before
    them; a cell without batch sizes (quality) has one line, with its headline figure's parameters; a failed row
    marks every line of its cell failed, with the error."""
    rows = frame.columns(table, ROW_COLUMNS)
    rows["batch"] = rows["params.batch_size"].astype(object).where(rows["params.batch_size"].notna(),
                                                                   rows["params.load"])
    figures = _where(rows, rows["metric"].notna())
    has_batch = figures["batch"].notna()
    batched, shared = _where(figures, has_batch), _where(figures, ~has_batch)
    lines = _lines(table, rows, batched, figures)
    lines = lines.join(_values(lines, batched, shared))
    quality = _pick(lines, batched, shared, QUALITY_HEADLINE)
    lines["quality_metric"], lines["quality_stderr"] = quality["metric"], quality["stats.stderr"]
    lines["quality_uniform"] = quality["stats.uniform"]  # what a model that knew nothing would score
    for name in DEGENERACY_FIELDS:
        lines[name] = quality[f"stats.{name}"]
    timed = _pick(lines, batched, shared, ["decode_tok_s", "ttft_ms", *QUALITY_HEADLINE])
    lines["samples"], lines["key_id"] = timed["stats.n"], timed["key_id"]
    # How precisely the line's speed is known (the relative half-width of its 95% interval), and whether that met the
    # policy's target (None: a fixed protocol).
    lines["half_width"], lines["converged"] = timed["stats.half_width"], timed["stats.converged"]
    failure = _aligned(rows[rows["status"] != "ok"].drop_duplicates(CELL).set_index(CELL)[["status", "error"]],
                       lines, CELL)
    lines["status"] = failure["status"].where(failure["status"].notna(), "ok")
    lines["error"] = failure["error"]
    lines["batch_size"] = lines["batch"].where(lines["batch"].map(lambda b: not isinstance(b, str)), None)
    return lines.reindex(columns=list(dict.fromkeys([*SUMMARY_COLUMNS, *lines.columns]))).drop(columns="batch")


def _where(rows: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    return rows if mask.all() else rows[mask]


def _aligned(indexed: pd.DataFrame, lines: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """`indexed` (indexed by `on`) reindexed to the lines, one entry per line."""
    return indexed.reindex(pd.MultiIndex.from_frame(lines[on])).set_axis(lines.index)


def _values(lines: pd.DataFrame, batched: pd.DataFrame, shared: pd.DataFrame) -> pd.DataFrame:
    """Each line's figures: its batch's own value, else its cell's shared one (the last row of a metric wins)."""
    def wide(rows: pd.DataFrame, on: list[str]) -> pd.DataFrame:
        if rows.empty:
            return pd.DataFrame(index=lines.index)
        return _aligned(rows.pivot_table(index=on, columns="metric", values="value", aggfunc="last"), lines, on)

    values = wide(batched, LINE).combine_first(wide(shared, CELL))
    return values.reindex(columns=[name for name in FIGURE_COLUMNS if name in values.columns])


def _lines(table, rows: pd.DataFrame, batched: pd.DataFrame, figures: pd.DataFrame) -> pd.DataFrame:
    """The line of each run, cell and batch (sorted within the cell, cells in the order they ran), with the context
    of the cell's first row and the parameters of the batch's first row (of a line without a batch: its headline
    figure's)."""
    first = rows.drop_duplicates(CELL).index.to_numpy()
    cells = frame.columns(table.take(pa.array(first)), [*CONTEXT_COLUMNS, "cell_id"])
    cells["_cell"] = range(len(cells))
    per_batch = batched.drop_duplicates(LINE)[[*LINE, *LINE_PARAMS]]
    headline = figures[figures["metric"].isin(QUALITY_HEADLINE)].drop_duplicates(CELL)[[*CELL, *LINE_PARAMS]]
    unbatched = cells[CELL].merge(headline, how="left", on=CELL)
    unbatched = unbatched[~pd.MultiIndex.from_frame(unbatched[CELL]).isin(
        pd.MultiIndex.from_frame(per_batch[CELL]))].assign(batch=None)
    lines = pd.concat([per_batch, unbatched], ignore_index=True).merge(cells, on=CELL)
    lines["_order"] = lines["batch"].map(lambda b: (isinstance(b, str), b if b is not None else 0))
    lines = lines.sort_values(["_cell", "_order"], kind="stable").drop(columns=["_cell", "_order"])
    return lines.rename(columns={name: name[len("params."):] for name in LINE_PARAMS}).reset_index(drop=True)


def _pick(lines: pd.DataFrame, batched: pd.DataFrame, shared: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """For each line, the row of the first metric of `order` among its figures (the batch's own row before a
    shared one), aligned with `lines`; a line with none of them gets nulls."""
    keyed = lines[LINE].reset_index(names="_line")
    own = batched[batched["metric"].isin(order)].merge(keyed, on=LINE).assign(_mine=0)
    common = shared[shared["metric"].isin(order)].drop(columns="batch").merge(keyed, on=CELL).assign(_mine=1)
    found = pd.concat([own, common], ignore_index=True)
    found["_rank"] = found["metric"].map({name: place for place, name in enumerate(order)})
    found = found.sort_values(["_line", "_rank", "_mine"], kind="stable").drop_duplicates("_line")
    return found.set_index("_line").reindex(lines.index)


def write_summary_csv(path: Path, lines: list[dict]) -> None:
    write_atomic(path, csv_text(SUMMARY_COLUMNS, lines))


def csv_text(columns: list[str], lines: list[dict] | pd.DataFrame) -> str:
    """CSV of `lines` under `columns` (other keys ignored), written by pyarrow: the one CSV writer of every table
    bench writes. Numbers are written exactly (shortest round-trip form, whole numbers without a point), booleans as
    true/false, text quoted and guarded against spreadsheet formulas."""
    lines = lines if isinstance(lines, pd.DataFrame) else pd.DataFrame(list(lines))
    lines = lines.reindex(columns=columns)
    out = io.BytesIO()
    pa_csv.write_csv(pa.table({name: _arrow_column(lines[name]) for name in columns}), out)
    return out.getvalue().decode()


# A text cell starting with one of these is a formula to a spreadsheet (CSV injection): a quote in front makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _arrow_column(column: pd.Series):
    """A column as one Arrow type: numbers as float64 (int64 where pandas holds integers), booleans, else text with
    any formula start quoted."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return pa.array(column, from_pandas=True)
    if isinstance(column.dtype, pd.StringDtype):  # text already (pandas 3 reads Arrow text so)
        return _guarded(pa.array(column, from_pandas=True, type=pa.string()))
    present = column[column.notna()]
    kinds = set(present.map(type))
    if kinds and kinds <= {bool}:
        return pa.array(with_none(column), type=pa.bool_())
    if kinds and kinds <= {int, float}:
        return pa.array(with_none(column), type=pa.float64())
    return _guarded(pa.array(column.map(lambda v: None if v is None or v is pd.NA or v != v else str(v)),
                             type=pa.string()))


def _guarded(text):
    """Text cells, each that starts like a formula quoted."""
    formula = pc.or_(pc.starts_with(text, FORMULA_STARTS[0]), pc.starts_with(text, FORMULA_STARTS[1]))
    for start in FORMULA_STARTS[2:]:
        formula = pc.or_(formula, pc.starts_with(text, start))
    return pc.if_else(pc.fill_null(formula, False), pc.binary_join_element_wise("'", text, ""), text)


CONSOLE_COLUMNS = [("model", "model"), ("scenario", "scenario"), ("task", "task"), ("engine_step", "engine"),
                   ("batch_size", "batch"), ("load", "load"), *console_columns().items(), ("quality_metric", "quality"),
                   ("degenerate", "degenerate"), ("precision", "±95%"), ("status", "status")]


def console_table(lines: list[dict]) -> str:
    """The summary as an aligned table; columns that no line fills (e.g. cost without a price) are left out."""
    lines = [{**line, "precision": _precision(line)} for line in lines]
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


def _precision(line: dict) -> str | None:
    """The line's speed to within what (its 95% interval's relative half-width), and whether that missed the target."""
    half, missed = line.get("half_width"), line.get("converged") is False
    text = f"±{half:.1%}" if half is not None else ("unbounded" if missed else None)
    return f"{text} not converged" if missed else text


def run_report(result) -> str:
    """What `bench run` prints when a run (a runner.RunResult) is over: the machine, the table, the claims, where."""
    claims = f"\n\nclaims (claims.md, claims.csv):\n{result.claims_text}" if result.claims_text else ""
    return (f"{result.machine.describe()}\n\n{console_table(result.lines)}{claims}\n\nrun folder: {result.run_dir}  "
            f"(rows.jsonl, summary.csv, resolved_config.yaml)\nwall time: {result.wall_s:.1f} s")
