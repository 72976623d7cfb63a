"""claims.md and claims.csv: each claim's verdict, reason and figures. Text from rows (model names) is escaped:
markup and Markdown are shown as text in claims.md, and claims.csv goes through the CSV writer that keeps a
spreadsheet from running a cell."""

import html
import re
from pathlib import Path

from harness.claims.core import Verdict
from harness.results.console import table
from harness.results.store import write_atomic
from harness.results.tables import csv_text

# Characters that Markdown (with its table, strikethrough and math extensions) reads as syntax within a line, and a
# leading '=' or '#'; a backslash makes each literal. HTML's own (<, >, &, quotes) become entities.
MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]#|$=~])")


def markdown_text(text) -> str:
    """`text` as literal Markdown: HTML special characters as entities, Markdown syntax backslash-escaped."""
    return html.escape(MARKDOWN_SYNTAX.sub(r"\\\1", str(text)), quote=True)


def markdown(results: list[Verdict]) -> str:
    lines = ["# Claims", ""]
    for v in results:
        lines += [f"## {v.claim.id}: {v.verdict.upper()}", "", f"> {markdown_text(v.claim.claim)} "
                  f"({markdown_text(v.claim.made_by)})", "", f"Test: {markdown_text(v.claim.tests)}.", "",
                  f"Why: {markdown_text(v.reason)}", ""]
        lines += [f"- {markdown_text(name)}: {markdown_text(value)}" for name, value in v.figures.items()] + [""]
    return "\n".join(lines)


def write_report(run_dir: Path, results: list[Verdict]) -> str:
    """claims.md and claims.csv in the run folder; returns the text printed."""
    write_atomic(run_dir / "claims.md", markdown(results))
    rows = [{"claim": v.claim.id, "verdict": v.verdict, "reason": v.reason,
             "figures": "; ".join(f"{k}={val}" for k, val in v.figures.items())} for v in results]
    write_atomic(run_dir / "claims.csv", csv_text(["claim", "verdict", "reason", "figures"], rows))
    return table(["claim", "verdict", "why"], [[v.claim.id, v.verdict, v.reason] for v in results])
