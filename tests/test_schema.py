import json

from harness.results.schema import SCHEMA_VERSION, environment, failed_row, key_id, make_row, upgrade

CONTEXT = {
    "run_id": "r1", "cell_id": "c1", "model": "tiny-dense", "model_revision": "abc", "backend": "transformers",
    "backend_version": "5.0", "device": "cpu", "device_name": "AMD EPYC", "dtype": "fp32", "task": "synthetic",
    "task_version": 1, "scenario": "latency", "profile": None,
    "profile_specs": {"price_usd_per_hour": None, "interconnect": None},
    "fingerprint": {"python": "3.11", "driver": None},
}


def test_row_carries_value_statistics_context_and_fingerprint():
    row = make_row(CONTEXT, metric="ttft_ms", unit="ms", formula="ttft.v1", value=12.5,
                   params={"batch_size": 1}, stats={"median": 12.5, "n": 5}, samples=[12.5] * 5)
    assert row["schema_version"] == SCHEMA_VERSION
    assert (row["metric"], row["unit"], row["formula"], row["value"], row["status"]) == (
        "ttft_ms", "ms", "ttft.v1", 12.5, "ok")
    assert row["model"] == "tiny-dense" and row["fingerprint"]["python"] == "3.11"
    assert row["key"]["params"] == {"batch_size": 1}
    assert "fingerprint" not in row["key"]


def test_comparability_key_changes_with_what_decides_comparability_only():
    base = make_row(CONTEXT, metric="ttft_ms", unit="ms", formula="ttft.v1", value=1.0, params={"batch_size": 1})
    same = make_row({**CONTEXT, "run_id": "r2"}, metric="ttft_ms", unit="ms", formula="ttft.v1", value=2.0,
                    params={"batch_size": 1})
    other_dtype = make_row({**CONTEXT, "dtype": "bf16"}, metric="ttft_ms", unit="ms", formula="ttft.v1", value=1.0,
                           params={"batch_size": 1})
    other_batch = make_row(CONTEXT, metric="ttft_ms", unit="ms", formula="ttft.v1", value=1.0,
                           params={"batch_size": 4})
    assert base["key_id"] == same["key_id"] == key_id(base["key"])
    assert len({base["key_id"], other_dtype["key_id"], other_batch["key_id"]}) == 3


def test_failed_row_has_no_figure_and_keeps_the_error():
    row = failed_row(CONTEXT, "timeout: killed")
    assert row["status"] == "failed" and row["value"] is None and row["metric"] is None
    assert row["error"] == "timeout: killed" and row["model"] == "tiny-dense"


def test_the_key_is_the_workload_not_the_environment():
    base = make_row(CONTEXT, metric="ttft_ms", unit="ms", formula="ttft.v1", value=1.0, params={"batch_size": 1})
    upgraded = make_row({**CONTEXT, "backend_version": "5.1", "fingerprint": {"python": "3.12", "driver": "580.1"}},
                        metric="ttft_ms", unit="ms", formula="ttft.v1", value=1.0, params={"batch_size": 1})
    assert base["key_id"] == upgraded["key_id"] and "backend_version" not in base["key"]
    assert environment(base)["backend_version"] == "5.0" and environment(upgraded)["driver"] == "580.1"
    other_backend = make_row({**CONTEXT, "backend": "vllm"}, metric="ttft_ms", unit="ms", formula="ttft.v1",
                             value=1.0, params={"batch_size": 1})
    assert other_backend["key_id"] != base["key_id"]


def test_a_version_1_row_gets_the_workload_key_and_unknown_profile_specs():
    row = make_row(CONTEXT, metric="ttft_ms", unit="ms", formula="ttft.v1", value=1.0, params={"batch_size": 1})
    old = {**row, "schema_version": 1, "key": {**row["key"], "backend_version": "5.0"}, "key_id": "old"}
    del old["profile_specs"]
    new = upgrade(old, "rows.jsonl: row 1")
    assert new["schema_version"] == SCHEMA_VERSION and new["key"] == row["key"] and new["key_id"] == row["key_id"]
    assert new["profile_specs"] == {"price_usd_per_hour": None, "interconnect": None}


def test_a_rows_file_holds_each_fingerprint_once_and_readers_give_it_back(tmp_path):
    from harness.results.store import RowWriter, read_rows

    other = {**CONTEXT, "fingerprint": {"python": "3.12", "driver": "580.1"}}
    rows = [make_row(context, metric="ttft_ms", unit="ms", formula="ttft.v1", value=float(i), params={})
            for i, context in enumerate([CONTEXT, CONTEXT, other, CONTEXT])]
    path = tmp_path / "rows.jsonl"
    for part in (rows[:2], rows[2:]):  # a resumed run appends with a new writer
        writer = RowWriter(path)
        for row in part:
            writer.write(row)
        writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("record") for line in lines] == ["environment", None, None, "environment", None, None]
    assert all("fingerprint" not in line for line in lines if "record" not in line)
    assert read_rows(path) == rows
    # A row whose environment record is lost keeps its figure, with an empty fingerprint, and the loss is reported.
    path.write_text("\n".join(json.dumps(line) for line in lines[1:]) + "\n")
    problems = []
    loaded = read_rows(path, on_bad_line=problems.append)
    assert [row["value"] for row in loaded] == [0.0, 1.0, 2.0, 3.0]
    assert loaded[0]["fingerprint"] == {} and loaded[2]["fingerprint"] == other["fingerprint"]
    assert len(problems) == 3 and all("names environment" in problem for problem in problems)
