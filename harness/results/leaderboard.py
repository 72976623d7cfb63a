"""The leaderboard: one CSV per profile (stable columns, README "Leaderboard") and a static HTML page (a sortable
table and plots as embedded images) that works opened from disk, without a network.

One leaderboard line per run, model, backend and dtype: speed from the latency scenario (batch 1, the first latency
cell of the run), memory from the same cell, quality from each quality task, the gap to the best closed model where
the reference has the task's benchmark in the same setting.
"""

import base64
import html
import io
import json
import math
import statistics
from pathlib import Path

from harness import claims
from harness.measure.intervals import median_interval
from harness.measure.metrics import METRICS, leaderboard_columns
from harness.quality.tasks import task_names
from harness.results.merge import summary_lines
from harness.results.store import write_atomic
from harness.results.tables import QUALITY_HEADLINE, csv_text

TEMPLATE = Path(__file__).with_name("leaderboard.html")
# Speed, memory, energy and cost from the latency line at batch 1: the registry's leaderboard figures.
SPEED_COLUMNS = leaderboard_columns()
HEAD_COLUMNS = ["profile", "model", "model_revision", "total_params", "active_params", "moe", "backend", "dtype",
                "device_name", "runs", *SPEED_COLUMNS, "decode_tok_s_low", "decode_tok_s_high"]
TAIL_COLUMNS = ["degenerate", "gap_to_best_closed_points", "best_closed_model", "gap_task", "run_date", "run_id",
                "comparability_key"]


def columns(entries: list[dict]) -> list[str]:
    """The CSV columns: fixed ones, and `quality_<task>` for every shipped quality task (then any other task seen)."""
    seen = sorted({task for entry in entries for task in entry["_quality"]} - set(task_names()))
    return [*HEAD_COLUMNS, *(f"quality_{task}" for task in [*task_names(), *seen]), *TAIL_COLUMNS]


def entries(rows: list[dict]) -> list[dict]:
    """Leaderboard lines: the runs of one configuration (profile, model and its weights, backend, dtype, device) as
    one line, each figure the median over its runs, with the run count and the runs' ids; decode speed with the
    95% interval of its pooled samples. `_batches` (batch size -> decode tok/s) and `_quality` (task -> figure) feed
    the plots."""
    groups: dict = {}
    for entry in _run_entries(rows):
        ident = tuple(entry[k] for k in ("profile", "model", "model_revision", "backend", "dtype", "device_name"))
        groups.setdefault(ident, []).append(entry)
    return [_aggregate(group) for group in groups.values()]


def _run_entries(rows: list[dict]) -> list[dict]:
    """One line per run, model, backend and dtype (with its decode samples, for the interval)."""
    dates, decode = {}, {}
    for row in rows:
        dates[row.get("run_id")] = min(dates.get(row.get("run_id"), row["time"]), row["time"])
        if row.get("metric") == "decode_tok_s":
            decode[(row.get("run_id"), row["key_id"])] = row["samples"]
    gaps = claims.leaderboard_gaps()
    found: dict = {}
    for line in summary_lines(rows):
        if line["status"] != "ok" or line["engine_step"]:  # a step of an engine-settings ladder is no configuration
            continue
        ident = (line["run_id"], line["model"], line["backend"], line["dtype"], line["profile"])
        entry = found.setdefault(ident, {
            "profile": line["profile"] or "none", "model": _model_label(line), "model_revision":
            line["model_revision"], "backend": line["backend"], "dtype": line["dtype"], "device_name":
            line["device_name"], "run_id": line["run_id"], "run_date": dates[line["run_id"]][:10], "_batches": {},
            "_quality": {}, "_decode": [], "degenerate": None})
        for name in ("total_params", "active_params"):
            entry[name] = entry.get(name) or line.get(name)
        if line["scenario"] == "latency" and line["batch_size"] == 1 and "decode_tok_s" not in entry:
            entry.update({name: line.get(name) for name in SPEED_COLUMNS}, comparability_key=line["key_id"])
            entry["_decode"] = decode.get((line["run_id"], line["key_id"]), [])
        elif line["scenario"] == "throughput" and line.get("decode_tok_s") is not None:
            entry["_batches"][line["batch_size"]] = line["decode_tok_s"]
        elif line["scenario"] == "quality" and line.get("quality_metric") in QUALITY_HEADLINE:
            entry["_quality"][line["task"]] = line[line["quality_metric"]]
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


def _aggregate(group: list[dict]) -> dict:
    line = dict(group[0])
    for name in {k for entry in group for k, v in entry.items() if isinstance(v, int | float)
                 and not isinstance(v, bool)}:
        values = [entry[name] for entry in group if isinstance(entry.get(name), int | float)]
        line[name] = statistics.median(values) if values else None
    for nested in ("_batches", "_quality"):
        keys = {k for entry in group for k in entry[nested]}
        line[nested] = {k: statistics.median(e[nested][k] for e in group if k in e[nested]) for k in keys}
    samples = [s for entry in group for s in entry["_decode"] if s is not None]
    low, high = median_interval(samples) if samples else (None, None)
    line.update(runs=len(group), run_id=" ".join(sorted(e["run_id"] for e in group)),
                run_date=max(e["run_date"] for e in group),
                decode_tok_s_low=low if low is not None and math.isfinite(low) else None,
                decode_tok_s_high=high if high is not None and math.isfinite(high) else None,
                comparability_key=" ".join(sorted({e["comparability_key"] for e in group
                                                   if e.get("comparability_key")})) or None,
                degenerate=" ".join(sorted({t for e in group for t in (e["degenerate"] or "").split()})) or None)
    return line


def _gap(entry: dict, line: dict, group: dict | None) -> None:
    """Points behind the best closed model of the gap claim's group on the same benchmark and setting."""
    if group is None or line.get(group["metric"]) is None:
        return
    best = group["best"]
    if best:
        entry.update(gap_to_best_closed_points=round(best["score"] - line[group["metric"]] * 100, 1),
                     best_closed_model=f"{best['model']} ({best['score']})",
                     gap_task=f"{line['task']} ({group['name']})")


def build(rows: list[dict], out_dir: Path) -> list[Path]:
    """leaderboard-<profile>.csv per profile and index.html in `out_dir`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = entries(rows)
    names = columns(lines)
    written = []
    for profile in sorted({line["profile"] for line in lines}):
        path = out_dir / f"leaderboard-{profile}.csv"
        write_atomic(path, csv_text(names, [line for line in lines if line["profile"] == profile]))
        written.append(path)
    page = out_dir / "index.html"
    write_atomic(page, render_page(lines, names))
    return [*written, page]


# The columns the page can filter by, and the units it shows in human form (135M params, 657 MiB).
FILTERS = ("profile", "model", "backend", "dtype")


def definitions(names: list[str]) -> dict[str, dict]:
    """Each column's definition and unit for the page: metrics from the registry, the others described here."""
    described = {**{name: {"definition": m.definition, "unit": m.unit} for name, m in METRICS.items()},
                 "decode_tok_s_low": {"definition": "lower end of the 95% interval of decode_tok_s's median (exact "
                                                    "order statistics over every run's samples)", "unit": "tok/s"},
                 "decode_tok_s_high": {"definition": "upper end of that interval", "unit": "tok/s"},
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
    data = {"columns": names, "rows": [{name: line.get(name) for name in names} for line in lines],
            "definitions": definitions(names), "filters": list(FILTERS)}
    # JSON inside <script>: escaping <, > and & keeps any text (a model name with markup) from closing the element.
    payload = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    figures = "\n".join(_figure(title, image, why) for title, image, why in plots(lines))
    return TEMPLATE.read_text(encoding="utf-8").replace("@@PLOTS@@", figures).replace("@@DATA@@", payload)


def _figure(title: str, image: bytes | None, why: str) -> str:
    if image is None:
        return f'<figure><figcaption>{html.escape(title)}</figcaption><p class="none">{html.escape(why)}</p></figure>'
    source = "data:image/png;base64," + base64.b64encode(image).decode()
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><img alt="{html.escape(title)}" '
            f'src="{source}"><p>{html.escape(why)}</p></figure>')


def plots(lines: list[dict]) -> list[tuple[str, bytes | None, str]]:
    """(title, PNG or None, caption or why there is no plot) for each plot of the page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"figure.figsize": (7, 4.2), "figure.dpi": 100}):
        return [_pareto(plt, lines), _moe(plt, lines), _cost(plt, lines), _batches(plt, lines)]


def _png(plt, fig) -> bytes:
    out = io.BytesIO()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def _scale(ax, axis: str, values: list[float]) -> None:
    """Log scale where the values span a decade or more; else linear, whose ticks read as plain numbers (a log axis
    over a narrow range labels only its minor ticks, in overlapping powers of ten)."""
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) >= 10:
        getattr(ax, f"set_{axis}scale")("log")


def _label(line: dict) -> str:
    # Model names are data: an escaped $ keeps matplotlib from reading a name as math text.
    return f"{line['model']} {line['dtype']} [{line['run_id']}]".replace("$", r"\$")


def _pareto(plt, lines: list[dict]) -> tuple[str, bytes | None, str]:
    title = "Quality against decode speed"
    counts = {}
    for line in lines:
        for task in line["_quality"]:
            if line.get("decode_tok_s") is not None:
                counts[task] = counts.get(task, 0) + 1
    if not counts:
        return title, None, "no run has both a latency and a quality figure"
    task = max(counts, key=lambda t: (counts[t], t))
    points = sorted(((line["decode_tok_s"], line["_quality"][task], _label(line)) for line in lines
                     if task in line["_quality"] and line.get("decode_tok_s") is not None), reverse=True)
    front, best = [], float("-inf")
    for speed, quality, _ in points:  # fastest first: a point is on the front when no faster one is better
        if quality > best:
            front.append((speed, quality))
            best = quality
    fig, ax = plt.subplots()
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    for speed, quality, label in points:
        ax.annotate(label, (speed, quality), fontsize=7)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red", marker="o",
            fillstyle="none", label="Pareto front")
    ax.set(xlabel="decode tok/s (batch 1)", ylabel=f"{task}")
    _scale(ax, "x", [p[0] for p in points])
    ax.legend()
    return title, _png(plt, fig), f"{task} (the task most models have) against decode speed; the front joins the " \
                                  "models that no other model beats on both"


def _moe(plt, lines: list[dict]) -> tuple[str, bytes | None, str]:
    title = "MoE against dense: decode speed by parameters"
    have = [line for line in lines if line.get("decode_tok_s") is not None and line.get("active_params")]
    if not have:
        return title, None, "no run has latency rows with parameter counts"
    fig, ax = plt.subplots()
    for moe, marker, name in ((False, "o", "dense"), (True, "^", "MoE")):
        group = [line for line in have if line["moe"] == moe]
        if group:
            ax.scatter([line["active_params"] for line in group], [line["decode_tok_s"] for line in group],
                       marker=marker, label=f"{name} (active params)")
            if moe:
                ax.scatter([line["total_params"] for line in group], [line["decode_tok_s"] for line in group],
                           marker=marker, facecolors="none", edgecolors="tab:orange", label="MoE (total params)")
    for line in have:
        ax.annotate(_label(line), (line["active_params"], line["decode_tok_s"]), fontsize=7)
    ax.set(xlabel="parameters", ylabel="decode tok/s (batch 1)")
    _scale(ax, "x", [line[key] for line in have for key in ("active_params", "total_params")])
    _scale(ax, "y", [line["decode_tok_s"] for line in have])
    ax.legend()
    moes = sum(line["moe"] for line in have)
    return title, _png(plt, fig), f"{moes} MoE and {len(have) - moes} dense lines; a MoE is drawn at its active " \
                                  "and its total parameters"


def _cost(plt, lines: list[dict]) -> tuple[str, bytes | None, str]:
    title = "Cost per million output tokens, per profile"
    priced = sorted((line for line in lines if line.get("usd_per_mtok") is not None),
                    key=lambda line: (line["profile"], line["usd_per_mtok"]))
    if not priced:
        return title, None, "no profile of these runs has a price per hour, so there is no cost figure"
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(priced) + 1.5))
    ax.barh([f"{line['profile']}: {_label(line)}" for line in priced], [line["usd_per_mtok"] for line in priced])
    ax.set(xlabel="USD per million output tokens (batch 1)")
    _scale(ax, "x", [line["usd_per_mtok"] for line in priced])
    return title, _png(plt, fig), "the profile's price per hour over the output tokens per second of batch 1"


def _batches(plt, lines: list[dict]) -> tuple[str, bytes | None, str]:
    title = "Decode speed against batch size"
    swept = [line for line in lines if len(line["_batches"]) > 1]
    if not swept:
        return title, None, "no run has a batch sweep (throughput scenario) of two or more sizes"
    fig, ax = plt.subplots()
    for line in swept:
        sizes = sorted(line["_batches"])
        ax.plot(sizes, [line["_batches"][b] for b in sizes], marker="o", label=_label(line))
    ax.set(xlabel="batch size", ylabel="decode tok/s (all sequences)")
    _scale(ax, "x", [b for line in swept for b in line["_batches"]])
    _scale(ax, "y", [v for line in swept for v in line["_batches"].values()])
    ax.legend(fontsize=7)
    return title, _png(plt, fig), "throughput scenario: tokens per second over all sequences of the batch"
