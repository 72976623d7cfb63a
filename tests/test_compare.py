"""bench compare on rows: pairing by the workload key across an environment change (reported first), and each
figure judged by the statistic its value is (the registry's), not by whatever its samples' median says."""

import json
from pathlib import Path

from harness.results.compare import compare, report
from harness.results.merge import load
from harness.results.schema import make_row

FIXTURES = Path(__file__).parent / "fixtures"
CONTEXT = {"run_id": "r", "cell_id": "c", "model": "m", "model_revision": "abc", "backend": "transformers",
           "backend_version": "5.24.0", "device": "cpu", "device_name": "cpu", "dtype": "fp32", "task": "perplexity",
           "task_version": 1, "scenario": "quality", "profile": "cpu", "fingerprint": {"transformers": "5.24.0"}}


def figure(name, value, samples, **context):
    return make_row({**CONTEXT, **context}, metric=name, unit="", formula="", value=value, params={"limit": 4},
                    stats={}, samples=samples)


def test_a_copy_that_differs_only_in_backend_version_pairs_and_says_what_changed(tmp_path):
    rows, _ = load([str(FIXTURES / "rows_v2.jsonl")])
    upgraded = [{**row, "backend_version": "9.9.9", "fingerprint": {**row["fingerprint"], "transformers": "9.9.9"}}
                for row in rows]
    changes, unpaired = compare(rows, upgraded)
    assert len(changes) == len(rows) and unpaired["only_base"] == unpaired["only_new"] == 0
    old = rows[0]["backend_version"]
    assert unpaired["environment"][0] == f"backend_version {old} -> 9.9.9"
    text = report(changes, unpaired, (), 0.1)
    assert text.startswith(f"ENVIRONMENT CHANGED (paired across it): backend_version {old} -> 9.9.9")
    assert f"transformers {rows[0]['fingerprint']['transformers']} -> 9.9.9" in text
    # The same rows written by schema version 1 (whose key held backend_version and the driver) pair as well.
    v1 = tmp_path / "rows.jsonl"
    v1.write_text("".join(json.dumps({**row, "schema_version": 1, "key": {"stale": True}, "key_id": "stale"}) + "\n"
                          for row in upgraded))
    assert len(compare(rows, load([str(v1)])[0])[0]) == len(rows)


def test_pooled_and_exact_figures_are_judged_by_their_values():
    per_doc = [3.0, 4.0, 3.5, 4.5]  # the same documents' NLL on both sides; the pooled values differ by 10%
    base = [figure("perplexity", 60.0, per_doc), figure("bits_per_byte", 1.0, per_doc),
            figure("expert_imbalance", 3.0, [1.1, 1.2, 3.0], scenario="latency", task="synthetic")]
    new = [figure("perplexity", 66.0, per_doc, run_id="r2"), figure("bits_per_byte", 1.1, per_doc, run_id="r2"),
           figure("expert_imbalance", 2.0, [1.1, 1.2, 2.0], scenario="latency", task="synthetic", run_id="r2")]
    changes = {c.metric: c for c in compare(base, new)[0]}
    assert (changes["perplexity"].base_value, changes["perplexity"].new_value) == (60.0, 66.0)
    assert changes["bits_per_byte"].change == changes["perplexity"].change == 0.10000000000000009
    assert changes["perplexity"].verdict == "worse, one sample" and changes["perplexity"].regressed
    # The worst layer went from 3.0 to 2.0 (the median layer, 1.2, did not move).
    assert changes["expert_imbalance"].verdict == "better, one sample"
