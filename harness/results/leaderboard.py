"""The leaderboard: one CSV per profile (stable columns, README "Leaderboard") and a static HTML page (a sortable
table, filters and interactive plotly plots, plotly.js inline) that works opened from disk, without a network.

One leaderboard line per run, model, backend and dtype: speed from the latency scenario (batch 1, the first latency
cell of the run), memory from the same cell, quality from each quality task, the gap to the best closed model where
the reference has the task's benchmark in the same setting.
"""

import html
import json
import math
import os
import statistics
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness import claims
from harness.measure.intervals import median_interval
from harness.measure.metrics import METRICS, leaderboard_columns
from harness.quality.tasks import task_names
from harness.results import frame
from harness.results.store import write_atomic
from harness.results.tables import QUALITY_HEADLINE, csv_text, records, summary

TEMPLATE = Path(__file__).with_name("leaderboard.html")
# What makes a configuration: its runs are aggregated into one line.
CONFIGURATION = ["profile", "model", "model_revision", "backend", "dtype", "device_name"]
# What a leaderboard line reads of the summary, besides its figures.
ENTRY_COLUMNS = ["run_id", "model", "model_source", "model_revision", "backend", "dtype", "profile", "device_name",
                 "scenario", "task", "batch_size", "engine_step", "total_params", "active_params", "quality_metric",
                 "degenerate", "key_id", "status"]
# Speed, memory, energy and cost from the latency line at batch 1: the registry's leaderboard figures.
SPEED_COLUMNS = leaderboard_columns()
HEAD_COLUMNS = ["profile", "model", "model_revision", "total_params", "active_params", "moe", "backend", "dtype",
                "device_name", "runs", *SPEED_COLUMNS, "decode_tok_s_low", "decode_tok_s_high", "decode_converged"]
TAIL_COLUMNS = ["degenerate", "gap_to_best_closed_points", "best_closed_model", "gap_task", "run_date", "run_id",
                "comparability_key"]


def columns(entries: list[dict]) -> list[str]:
    """The CSV columns: fixed ones, and `quality_<task>` for every shipped quality task (then any other task seen)."""
    seen = sorted({task for entry in entries for task in entry["_quality"]} - set(task_names()))
    return [*HEAD_COLUMNS, *(f"quality_{task}" for task in [*task_names(), *seen]), *TAIL_COLUMNS]


def entries(table: pa.Table) -> list[dict]:
    """Leaderboard lines: the runs of one configuration (profile, model and its weights, backend, dtype, device) as
    one line, each figure the median over its runs, with the run count and the runs' ids; decode speed with the
    95% interval of its pooled samples. `_batches` (batch size -> decode tok/s) and `_quality` (task -> figure) feed
    the plots."""
    found = _run_entries(table)
    if not found:
        return []
    runs = pd.DataFrame(found)
    figures = [name for name in runs.columns if not name.startswith("_") and name != "runs"
               and pd.api.types.is_numeric_dtype(runs[name]) and not pd.api.types.is_bool_dtype(runs[name])]
    grouped = runs.groupby(CONFIGURATION, sort=False, dropna=False)
    medians = records(grouped[figures].median().reset_index(drop=True))  # a line per group, in ngroup's order
    members: list[list[dict]] = [[] for _ in medians]
    for entry, group in zip(found, grouped.ngroup(), strict=True):
        members[group].append(entry)
    return [_aggregate(group, median) for group, median in zip(members, medians, strict=True)]


def _run_entries(table: pa.Table) -> list[dict]:
    """One line per run, model, backend and dtype (with its decode samples, for the interval)."""
    dates = frame.columns(table, ["run_id", "time"]).groupby("run_id", dropna=False)["time"].min().to_dict()
    decode = {(row["run_id"], row["key_id"]): row["samples"] for row in table.filter(
        pc.equal(frame.text(table["metric"]), "decode_tok_s")).select(["run_id", "key_id", "samples"]).to_pylist()} \
        if "samples" in table.column_names else {}
    lines = summary(table)
    # A step of an engine-settings ladder is no configuration; the lines' other figures are not the leaderboard's.
    lines = lines.loc[(lines["status"] == "ok") & lines["engine_step"].isna()
                      & lines["scenario"].isin(["latency", "throughput", "quality"]),
                      list(dict.fromkeys([*ENTRY_COLUMNS, *SPEED_COLUMNS, *QUALITY_HEADLINE]))]
    gaps = claims.leaderboard_gaps()
    found: dict = {}
    for line in records(lines):
        ident = (line["run_id"], line["model"], line["backend"], line["dtype"], line["profile"])
        entry = found.setdefault(ident, {
            "profile": line["profile"] or "none", "model": _model_label(line), "model_revision":
            line["model_revision"], "backend": line["backend"], "dtype": line["dtype"], "device_name":
            line["device_name"], "run_id": line["run_id"], "run_date": dates[line["run_id"]][:10], "_batches": {},
            "_quality": {}, "_quality_metric": {}, "_decode": [], "degenerate": None})
        for name in ("total_params", "active_params"):
            entry[name] = entry.get(name) or line.get(name)
        if line["scenario"] == "latency" and line["batch_size"] == 1 and "decode_tok_s" not in entry:
            entry.update({name: line.get(name) for name in SPEED_COLUMNS}, comparability_key=line["key_id"],
                         _converged=line.get("converged"))
            entry["_decode"] = decode.get((line["run_id"], line["key_id"]), [])
        elif line["scenario"] == "throughput" and line.get("decode_tok_s") is not None:
            entry["_batches"][line["batch_size"]] = line["decode_tok_s"]
        elif line["scenario"] == "quality" and line.get("quality_metric") in QUALITY_HEADLINE:
            entry["_quality"][line["task"]] = line[line["quality_metric"]]
            entry["_quality_metric"][line["task"]] = line["quality_metric"]
            entry[f"quality_{line['task']}"] = line[line["quality_metric"]]
            if line.get("degenerate"):  # the quality scorer's flag, where the summary has it
                entry["degenerate"] = " ".join(filter(None, [entry["degenerate"], line["task"]]))
            _gap(entry, line, gaps.get(line["task"]))
    for entry in found.values():
        total, active = entry.get("total_params"), entry.get("active_params")
        entry["moe"] = bool(total and active and active < total)
    return list(found.values())


def _model_label(line: dict) -> str:
    """A model from a local folder is shown by the folder's name (its weights hash is its own column); the rows keep
    the path, which a published page should not show."""
    return Path(line["model"]).name if line.get("model_source") == "local" else line["model"]


def _aggregate(group: list[dict], medians: dict) -> dict:
    """One configuration's line from its runs' lines: `medians` (each figure's median over the runs, pandas'), the
    nested figures' medians, the pooled decode interval, the run count and ids."""
    line = {**group[0], **medians}
    for nested in ("_batches", "_quality"):
        keys = {k for entry in group for k in entry[nested]}
        line[nested] = {k: statistics.median(e[nested][k] for e in group if k in e[nested]) for k in keys}
    line["_quality_metric"] = {k: v for entry in group for k, v in entry["_quality_metric"].items()}
    samples = [s for entry in group for s in entry["_decode"] if s is not None]
    low, high = median_interval(samples) if samples else (None, None)
    line.update(runs=len(group), run_id=" ".join(sorted(e["run_id"] for e in group)),
                run_date=max(e["run_date"] for e in group),
                decode_tok_s_low=low if low is not None and math.isfinite(low) else None,
                decode_tok_s_high=high if high is not None and math.isfinite(high) else None,
                comparability_key=" ".join(sorted({e["comparability_key"] for e in group
                                                   if e.get("comparability_key")})) or None,
                degenerate=" ".join(sorted({t for e in group for t in (e["degenerate"] or "").split()})) or None,
                decode_converged=_all_converged(e.get("_converged") for e in group))
    return line


def _all_converged(flags) -> bool | None:
    """False where a run's decode speed missed its policy's target, True where every run's met it, None where no
    run had a target (a fixed protocol)."""
    known = [flag for flag in flags if flag is not None]
    return all(known) if known else None


def _gap(entry: dict, line: dict, group: dict | None) -> None:
    """Points behind the best closed model of the gap claim's group on the same benchmark and setting."""
    if group is None or line.get(group["metric"]) is None:
        return
    best = group["best"]
    if best:
        entry.update(gap_to_best_closed_points=round(best["score"] - line[group["metric"]] * 100, 1),
                     best_closed_model=f"{best['model']} ({best['score']})",
                     gap_task=f"{line['task']} ({group['name']})")


def build(loaded: frame.Loaded, out_dir: Path) -> list[Path]:
    """leaderboard-<profile>.csv per profile and index.html in `out_dir` from the rows merge.load_table read;
    returns the files written. The page links each line's runs to their summary.csv, relative to `out_dir` (so the
    runs must be published with the page: the nightly downloads them into the site's folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = entries(loaded.table)
    for line in lines:
        line["_links"] = {run: _relative(loaded.folders[run], out_dir) for run in line["run_id"].split()
                          if run in loaded.folders}
    names = columns(lines)
    written = []
    for profile in sorted({line["profile"] for line in lines}):
        path = out_dir / f"leaderboard-{profile}.csv"
        write_atomic(path, csv_text(names, [line for line in lines if line["profile"] == profile]))
        written.append(path)
    page = out_dir / "index.html"
    write_atomic(page, render_page(lines, names))
    return [*written, page]


def _relative(folder: Path, out_dir: Path) -> str:
    """A run's summary.csv: a file, since a static host (GitHub Pages) lists no folder."""
    return Path(os.path.relpath((folder / "summary.csv").resolve(), out_dir.resolve())).as_posix()


# The columns the page can filter by, and the units it shows in human form (135M params, 657 MiB).
FILTERS = ("profile", "model", "backend", "dtype")


def definitions(names: list[str]) -> dict[str, dict]:
    """Each column's definition and unit for the page: metrics from the registry, the others described here."""
    described = {**{name: {"definition": m.definition, "unit": m.unit} for name, m in METRICS.items()},
                 "decode_tok_s_low": {"definition": "lower end of the 95% interval of decode_tok_s's median (exact "
                                                    "order statistics over every run's samples)", "unit": "tok/s"},
                 "decode_tok_s_high": {"definition": "upper end of that interval", "unit": "tok/s"},
                 "decode_converged": {"definition": "whether decode_tok_s's interval reached its measurement "
                                                    "policy's target (--target-ci) in every run; empty where no "
                                                    "target was set", "unit": ""},
                 "runs": {"definition": "how many runs of this configuration the line aggregates (each figure is "
                                        "the median over them)", "unit": ""},
                 "model_revision": {"definition": "hash of the model's weights files", "unit": ""},
                 "gap_to_best_closed_points": {"definition": "points behind the best closed model's published "
                                                             "score on the same benchmark and setting", "unit": "pt"}}
    for name in names:
        if name.startswith("quality_"):
            described[name] = {"definition": f"the headline figure of task {name[8:]} (accuracy, exact match, "
                                             "pass@1 or perplexity)", "unit": ""}
    return {name: described[name] for name in names if name in described}


def render_page(lines: list[dict], names: list[str]) -> str:
    """The page: the table's data, each plot's plotly figure (points carry their line's index, so the page's filters
    apply to the plots too) and plotly.js itself, inline, so the page works from disk and offline."""
    from plotly.offline import get_plotlyjs

    data = {"columns": names, "rows": [{**{name: line.get(name) for name in names}, "_links": line.get("_links", {})}
                                       for line in lines],
            "definitions": definitions(names), "filters": list(FILTERS), "plots": plots(lines)}
    # JSON inside <script>: escaping <, > and & keeps any text (a model name with markup) from closing the element.
    payload = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    before, after = TEMPLATE.read_text(encoding="utf-8").replace("@@DATA@@", payload).split("@@PLOTLY@@")
    return before + get_plotlyjs() + after


def plots(lines: list[dict]) -> list[dict]:
    """Each plot of the page: {"title", "caption", "figure"}, the figure None (and the caption saying why) where no
    line has the data."""
    return [_pareto(lines), _moe(lines), _cost(lines), _batches(lines)]


def _plot(title: str, caption: str, traces: list, **layout) -> dict:
    import plotly.graph_objects as go

    figure = go.Figure(traces, layout={"title": None, "margin": {"t": 20, "r": 20}, "height": 380, **layout})
    return {"title": title, "caption": caption, "figure": json.loads(figure.to_json()) if traces else None}


def _label(line: dict) -> str:
    # Model names are data: escaped, so plotly's hover labels (which read a little HTML) show them as text.
    runs = f"{line['runs']} run{'s' if line['runs'] != 1 else ''}"
    return html.escape(f"{line['model']} {line['dtype']} {line['backend']} ({runs})", quote=False)


def _axis(title: str, values: list[float]) -> dict:
    """Log scale where the values span a decade or more, else linear."""
    positive = [v for v in values if v and v > 0]
    return {"title": title, "type": "log" if positive and max(positive) / min(positive) >= 10 else "linear"}


def _points(lines: list[dict], indices: list[int], x: str, y, name: str, **style) -> dict:
    """A scatter trace of lines[i] for i in `indices`; `y` a column or a function of the line; customdata is each
    point's line index (the page filters by it)."""
    import plotly.graph_objects as go

    value = y if callable(y) else (lambda line: line[y])
    return go.Scatter(x=[lines[i][x] for i in indices], y=[value(lines[i]) for i in indices], customdata=indices,
                      hovertext=[_label(lines[i]) for i in indices], name=name, mode="markers",
                      hovertemplate=f"%{{hovertext}}<br>{x} %{{x:.4g}}<br>%{{y:.4g}}<extra></extra>", **style)


def _pareto(lines: list[dict]) -> dict:
    title = "Quality against decode speed"
    counts: dict[str, int] = {}
    for line in lines:
        for task in line["_quality"]:
            if line.get("decode_tok_s") is not None:
                counts[task] = counts.get(task, 0) + 1
    if not counts:
        return _plot(title, "no run has both a latency and a quality figure", [])
    task = max(counts, key=lambda t: (counts[t], t))
    have = [i for i, line in enumerate(lines) if task in line["_quality"] and line.get("decode_tok_s") is not None]
    error = {"type": "data", "symmetric": False,
             "array": [(lines[i]["decode_tok_s_high"] or lines[i]["decode_tok_s"]) - lines[i]["decode_tok_s"]
                       for i in have],
             "arrayminus": [lines[i]["decode_tok_s"] - (lines[i]["decode_tok_s_low"] or lines[i]["decode_tok_s"])
                            for i in have]}
    points = _points(lines, have, "decode_tok_s", lambda line: line["_quality"][task], task, error_x=error)
    import plotly.graph_objects as go

    front = go.Scatter(x=[], y=[], name="Pareto front", mode="lines+markers", line={"shape": "hv"},
                       marker={"symbol": "circle-open"}, meta="pareto", hoverinfo="skip")
    metrics = {line["_quality_metric"][task] for line in lines if task in line["_quality_metric"]}
    better = "lower" if {METRICS[name].direction for name in metrics} == {"lower"} else "higher"
    return _plot(title, f"{task} (the task most models have) against decode speed at batch 1, with the 95% interval "
                        f"of decode speed; the front joins the lines that no other line beats on both ({better} "
                        f"{task} is better)", [points, front],
                 xaxis=_axis("decode tok/s (batch 1)", [lines[i]["decode_tok_s"] for i in have]),
                 yaxis={"title": task}, meta={"better": better})


def _moe(lines: list[dict]) -> dict:
    title = "MoE against dense: decode speed by parameters"
    have = [i for i, line in enumerate(lines) if line.get("decode_tok_s") is not None and line.get("active_params")]
    if not have:
        return _plot(title, "no run has latency rows with parameter counts", [])
    dense = [i for i in have if not lines[i]["moe"]]
    moe = [i for i in have if lines[i]["moe"]]
    traces = [_points(lines, dense, "active_params", "decode_tok_s", "dense")] if dense else []
    if moe:
        traces += [_points(lines, moe, "active_params", "decode_tok_s", "MoE (active params)",
                           marker={"symbol": "triangle-up"}),
                   _points(lines, moe, "total_params", "decode_tok_s", "MoE (total params)",
                           marker={"symbol": "triangle-up-open"})]
    values = [lines[i][key] for i in have for key in ("active_params", "total_params")]
    return _plot(title, f"{len(moe)} MoE and {len(dense)} dense lines; a MoE is drawn at its active and its total "
                        "parameters", traces, xaxis=_axis("parameters", values),
                 yaxis=_axis("decode tok/s (batch 1)", [lines[i]["decode_tok_s"] for i in have]))


def _cost(lines: list[dict]) -> dict:
    title = "Cost per million output tokens, per profile"
    priced = sorted((i for i, line in enumerate(lines) if line.get("usd_per_mtok") is not None),
                    key=lambda i: (lines[i]["profile"], lines[i]["usd_per_mtok"]))
    if not priced:
        return _plot(title, "no profile of these runs has a price per hour, so there is no cost figure", [])
    import plotly.graph_objects as go

    bars = go.Bar(x=[lines[i]["usd_per_mtok"] for i in priced], y=[f"{lines[i]['profile']}: {_label(lines[i])}"
                                                                   for i in priced],
                  orientation="h", customdata=priced, hovertemplate="%{y}<br>%{x:.4g} USD/Mtok<extra></extra>")
    return _plot(title, "the profile's price per hour over the output tokens per second of batch 1", [bars],
                 xaxis=_axis("USD per million output tokens (batch 1)", [lines[i]["usd_per_mtok"] for i in priced]),
                 height=max(300, 30 * len(priced) + 120))


def _batches(lines: list[dict]) -> dict:
    title = "Decode speed against batch size"
    swept = [i for i, line in enumerate(lines) if len(line["_batches"]) > 1]
    if not swept:
        return _plot(title, "no run has a batch sweep (throughput scenario) of two or more sizes", [])
    import plotly.graph_objects as go

    traces = []
    for i in swept:
        sizes = sorted(lines[i]["_batches"])
        traces.append(go.Scatter(x=sizes, y=[lines[i]["_batches"][b] for b in sizes], mode="lines+markers",
                                 name=_label(lines[i]), customdata=[i] * len(sizes), hovertext=[_label(lines[i])] *
                                 len(sizes), hovertemplate="%{hovertext}<br>batch %{x}: %{y:.4g} tok/s<extra></extra>"))
    return _plot(title, "throughput scenario: tokens per second over all sequences of the batch", traces,
                 xaxis=_axis("batch size", [b for i in swept for b in lines[i]["_batches"]]),
                 yaxis=_axis("decode tok/s (all sequences)", [v for i in swept for v in lines[i]["_batches"].values()]))
