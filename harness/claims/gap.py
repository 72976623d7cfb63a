"""gap.months: how long open-weight models took to reach closed models' published scores, from the published table
(tasks/gap/reference_scores.csv), with this run's re-measurement of the listed models it holds beside it.

A group is one benchmark under settings that count as one (named in tasks/claims.yaml, as the table writes them).
Its milestones are the closed models that raised the best closed score; a milestone's lag runs from its release to
the release of the first open model that scored at least as much. Release dates given to the month span that
month, so each lag is a range; a milestone no open model has reached is censored (at least the time to the group's
last open release). The verdict takes the median lag over every milestone: supported when even its upper bound is
within the claim's months, not supported when even its lower bound is beyond, else inconclusive.
"""

import calendar
import csv
import datetime
import math
import re
from pathlib import Path

import numpy as np

from harness.claims.core import Claim, Verdict, find
from harness.measure.intervals import interval

TASKS_DIR = Path(__file__).resolve().parent.parent.parent / "tasks"
MONTH_DAYS = 365.25 / 12


def release_range(text: str) -> tuple[datetime.date, datetime.date] | None:
    """The first and last day a release-date cell allows: "2024-05-13 (...)" is one day, "2024-01 (...)" a month."""
    found = re.match(r"(\d{4})-(\d{2})(?:-(\d{2}))?", text.strip())
    if not found:
        return None
    year, month = int(found[1]), int(found[2])
    if found[3]:
        day = datetime.date(year, month, int(found[3]))
        return day, day
    return datetime.date(year, month, 1), datetime.date(year, month, calendar.monthrange(year, month)[1])


def months_between(earlier: datetime.date, later: datetime.date) -> float:
    return (later - earlier).days / MONTH_DAYS


def reference_scores(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["score"] = float(row["score"])
        row["released"] = release_range(row["release_date"])
        row["open"] = not row["open_weights"].startswith("no")
    return [row for row in rows if row["released"]]


def group_rows(reference: list[dict], group: dict) -> list[dict]:
    return [r for r in reference if r["benchmark"] == group["benchmark"] and r["setting_as_reported"] in
            group["settings"]]


def milestones(rows: list[dict]) -> list[dict]:
    """Closed models, by release, that raised the best closed score of the group."""
    best, found = -math.inf, []
    for row in sorted((r for r in rows if not r["open"]), key=lambda r: r["released"][0]):
        if row["score"] > best:
            best = row["score"]
            found.append(row)
    return found


def lag(milestone: dict, rows: list[dict]) -> dict:
    """Months from the milestone's release to the first open model that reached its score: low and high bounds
    (high is infinite when no open model has reached it yet), and the model that did."""
    opened = sorted((r for r in rows if r["open"]), key=lambda r: r["released"][0])
    first = next((r for r in opened if r["score"] >= milestone["score"]), None)
    if first is None:
        last = max((r["released"][0] for r in opened), default=milestone["released"][1])
        return {"low": max(0.0, months_between(milestone["released"][1], last)), "high": math.inf, "by": None,
                "until": last}
    return {"low": months_between(milestone["released"][1], first["released"][0]),
            "high": months_between(milestone["released"][0], first["released"][1]), "by": first}


def _lag_text(found: dict) -> str:
    if found["by"] is None:
        return f"at least {found['low']:.1f} months (no open model reached it by {found['until']})"
    span = f"{found['low']:.1f}" if found["low"] == found["high"] else f"{found['low']:.1f} to {found['high']:.1f}"
    return f"{span} months ({found['by']['model']}, {found['by']['score']})"


def gap_months(claim: Claim, rows: list[dict]) -> Verdict:
    p = claim.params
    reference = reference_scores(TASKS_DIR / p["reference"])
    figures, lows, highs = {}, [], []
    for group in p["groups"]:
        members = group_rows(reference, group)
        for milestone in milestones(members):
            found = lag(milestone, members)
            lows.append(found["low"])
            highs.append(found["high"])
            figures[f"lag[{group['name']}: {milestone['model']} {milestone['score']}]"] = _lag_text(found)
    figures.update(reproductions(p, reference, rows))
    if not lows:
        return Verdict(claim, "skipped", "the reference table has no closed model in any group of the claim",
                       figures)
    low, high = float(np.median(lows)), float(np.median(highs))
    figures["median_lag_months"] = f"{low:.1f} to {high:.1f}" if math.isfinite(high) else f"at least {low:.1f}"
    bound = p["months"]
    verdict = "supported" if high <= bound else "not supported" if low > bound else "inconclusive"
    return Verdict(claim, verdict, f"published figures: the median lag from a closed model's score to the first "
                                   f"open model at that score is {figures['median_lag_months']} months over "
                                   f"{len(lows)} milestones of {len(p['groups'])} benchmarks (the claim: at most "
                                   f"{bound}); this run's reproductions beside it", figures)


def reproductions(params: dict, reference: list[dict], rows: list[dict]) -> dict:
    """For each listed model of the table that this run measured on the same benchmark and setting: whether the
    published score lies within bench's interval, or by how many points it differs; a run too small or degenerate
    to decide says so. These never decide the verdict: a local model does not stand in for the frontier."""
    figures = {}
    for item in params["reproductions"]:
        name = f"reproduction[{item['reference_model']} {item['benchmark']} {item['setting']}]"
        published = next((r for r in reference if r["model"] == item["reference_model"] and r["benchmark"] ==
                          item["benchmark"] and r["setting_as_reported"] == item["setting"]), None)
        row = find(rows, item["metric"], model=item["model"], task=item["task"])
        if published is None or row is None:
            figures[name] = ("no such row in the reference table" if published is None else
                             f"not measured in this run ({item['model']}, {item['task']})")
            continue
        figures[name] = _reproduction_text(row, published["score"], params["max_halfwidth_points"])
    return figures


def _reproduction_text(row: dict, published: float, max_halfwidth: float) -> str:
    e = interval(row)
    low, value, high = e.low * 100, e.value * 100, e.high * 100
    measured = f"bench {value:.1f} [{low:.1f}, {high:.1f}] on {row['params'].get('limit')} questions"
    if row["stats"].get("degenerate"):
        return f"degenerate run, cannot decide: {measured}, published {published}"
    if (high - low) / 2 > max_halfwidth:
        return f"too few questions to decide (half-width over {max_halfwidth} points): {measured}"
    if low <= published <= high:
        return f"reproduces: published {published} within {measured}"
    return f"differs by {value - published:+.1f} points: published {published}, {measured}"


def best_closed(group: dict, reference: list[dict]) -> dict | None:
    """The closed model with the best score in a group (for the leaderboard's gap column)."""
    closed = [r for r in group_rows(reference, group) if not r["open"]]
    return max(closed, key=lambda r: r["score"]) if closed else None
