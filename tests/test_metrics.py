"""The metric dictionary is the one registry: every figure the code records or queries is in it, every table takes
its columns from it, and docs/METRICS.md is generated from it."""

import ast
from pathlib import Path

from harness import claims
from harness.measure import metrics
from harness.results import leaderboard, tables

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def named_metrics(sources) -> set[str]:
    """Metric names the code passes as literals: recorder.figure(NAME, ...), the claims' find/select(rows, NAME)
    and any metric=NAME keyword."""
    names = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            called = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            position = {"figure": 0, "find": 1, "select": 1}.get(called)
            literals = [node.args[position]] if position is not None and len(node.args) > position else []
            literals += [k.value for k in node.keywords if k.arg == "metric"]
            names |= {n.value for n in literals if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return names


def test_every_metric_the_code_names_is_in_the_registry():
    named = named_metrics(path.read_text() for path in HARNESS.rglob("*.py"))
    assert len(named) > 20 and "decode_tok_s" in named  # the scan sees the code's figures
    assert named - set(metrics.METRICS) == set()
    # A figure the registry lacks is caught, wherever the code names it.
    stray = 'recorder.figure("tok_per_banana", [1.0])\nfind(rows, "ttft_s")\nselect(rows, metric="mib_peak")'
    assert named_metrics([stray]) == {"tok_per_banana", "ttft_s", "mib_peak"}


def test_every_metric_a_claim_reads_is_in_the_registry():
    for claim in claims.load_claims():
        p = claim.params
        wanted = [p.get("metric")] + [g.get("metric") for g in p.get("groups", [])] + \
                 [r["metric"] for r in p.get("reproductions", [])]
        assert {w for w in wanted if w} <= set(metrics.METRICS), claim.id


def test_tables_take_their_figures_from_the_registry():
    assert tables.FIGURE_COLUMNS == list(metrics.METRICS)
    assert {"max_batch_size", "max_prompt_tokens", "slo_max_rate_req_s", "tokens_per_answer", "peak_device_mib",
            "peak_reserved_mib"} <= set(tables.SUMMARY_COLUMNS)
    assert [key for key, _ in tables.CONSOLE_COLUMNS if key in metrics.METRICS] == list(metrics.console_columns())
    assert leaderboard.SPEED_COLUMNS == metrics.leaderboard_columns()
    assert tables.QUALITY_HEADLINE == ["accuracy", "exact_match", "pass_at_1", "perplexity"]


def test_docs_metrics_md_is_generated_from_the_registry():
    current = metrics.DOC.read_text()
    assert metrics.document(current) == current, "docs/METRICS.md is stale: python -m harness.measure.metrics"
    for name, m in metrics.METRICS.items():
        assert f"| {name} | {m.unit} | {m.formula} |" in current
