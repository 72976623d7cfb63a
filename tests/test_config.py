"""Suite loading: the shipped suites load, and every broken field is refused with file:line, field and reason."""

import pytest
import yaml

from harness.cli import main
from harness.config import load_suite, scenario, suite_names
from harness.errors import ConfigError, UnknownNameError

GOOD = """\
name: mine
models: [tiny-dense]
scenarios:
  - name: latency
    prompt_tokens: 16
  - name: throughput
    batch_sizes: [1, 2]
"""


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_shipped_suites_load():
    assert {"quick", "quality", "claims", "nightly"} <= set(suite_names())
    for name in suite_names():
        load_suite(name)
    assert "allenai/OLMoE-1B-7B-0924" in load_suite("nightly").profile_models["h100-sxm"]
    quick = load_suite("quick")
    assert quick.models == ("smollm2-135m",)
    assert [s.name for s in quick.scenarios] == ["latency", "throughput", "quality", "quality"]
    assert [s.params["task"] for s in quick.scenarios[2:]] == ["perplexity", "mmlu"]
    assert quick.measure.repetitions >= 5


def test_defaults_fill_what_a_suite_leaves_out(tmp_path):
    suite = load_suite(str(write(tmp_path, GOOD)))
    latency, throughput = suite.scenarios
    assert latency.params == {**scenario("latency").params, "prompt_tokens": 16}
    assert throughput.params["batch_sizes"] == [1, 2]
    assert (suite.device, suite.dtype, suite.backends) == ("auto", "auto", ("transformers",))


@pytest.mark.parametrize("change, line, field, reason", [
    (("name: mine", "name: mine\ncolour: red"), 2, "colour", "unknown field"),
    (("    prompt_tokens: 16", "    prompt_tokens: -3"), 5, "scenarios.0.prompt_tokens",
     "must be an integer >= 1, got -3"),
    (("  - name: latency", "  - name: warp"), 4, "scenarios.0.name", "unknown scenario 'warp'"),
    (("    batch_sizes: [1, 2]", "    batch_sizes: []"), 7, "scenarios.1.batch_sizes", "non-empty list"),
    (("    prompt_tokens: 16", "    prompt_tokens: 16\n    temperature: 0.5"), 6, "scenarios.0.temperature",
     "unknown parameter"),
    (("models: [tiny-dense]", "models: [tiny-dense]\nbackends: [warp-engine]"), 3, "backends.0", "unknown backend"),
    (("    prompt_tokens: 16", "    prompt_tokens: 16\n    engine: {step: x, quantize: int3}"), 6,
     "scenarios.0.engine.quantize", "must be one of int8, int4"),
    (("    prompt_tokens: 16", "    prompt_tokens: 16\n    engine: {step: x, compile: yes please}"), 6,
     "scenarios.0.engine.compile", "must be one of True, False"),
    (("    prompt_tokens: 16", "    prompt_tokens: 16\n    engine: {step: x, max_memory: {cpu: 1GiB}}"), 6,
     "scenarios.0.engine.max_memory", "applies only with a device_map"),
    (("    prompt_tokens: 16",
      "    prompt_tokens: 16\n    engine: {step: x, device_map: auto, max_memory: {cpu: lots}}"), 6,
     "scenarios.0.engine.max_memory", "must map GPU indices and `cpu` to sizes"),
    (("  - name: latency", "  - name: latency\n    models: [other]"), 5, "scenarios.0.models.0",
     "not one of the suite's models"),
    (("models: [tiny-dense]", "models: [tiny-dense]\nprofile_models: {rtx9090: [x]}"), 3, "profile_models.rtx9090",
     "unknown field"),
    (("models: [tiny-dense]", "models: [tiny-dense]\ndtype: fp64"), 3, "dtype", "must be one of"),
    (("models: [tiny-dense]", "models: [tiny-dense]\nmeasure: {repetitions: 0}"), 3, "measure.repetitions",
     "integer >= 1"),
])
def test_broken_suites_are_refused_with_file_line_field_and_reason(tmp_path, change, line, field, reason):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as caught:
        load_suite(str(path))
    assert caught.value.message.startswith(f"{path}:{line}: {field}: ")
    assert reason in caught.value.message


def test_missing_required_field_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="missing required field 'models'"):
        load_suite(str(write(tmp_path, "name: x\nscenarios: [{name: latency}]\n")))
    with pytest.raises(ConfigError, match=r"suite.yaml:2: invalid YAML: mapping values are not allowed"):
        load_suite(str(write(tmp_path, "name: x\nmodels: tiny: dense\n")))


def test_unknown_suite_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown suite 'nope'; known: .*quick"):
        load_suite("nope")


def test_cli_reports_a_config_error_in_one_line_and_exit_code_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("name: mine", "name: mine\ncolour: red"))
    assert main(["run", "--suite", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"bench: error: {path}:2: colour: unknown field"
    assert "Traceback" not in err
    assert main(["run", "--suite", str(write(tmp_path, GOOD)), "--repetitions", "0"]) == 2
    assert "bench: error: --repetitions: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_every_shipped_suite_reads_back_equal_from_its_resolved_config(tmp_path):
    """resolved_config.yaml (what --resume reads) holds the suite as a mapping that validates to the same suite."""
    from harness.config import suite_from_data
    from harness.results.store import write_yaml

    for name in suite_names():
        suite = load_suite(name)
        write_yaml(tmp_path / "resolved.yaml", {"suite": suite.to_data()})
        data = yaml.safe_load((tmp_path / "resolved.yaml").read_text())["suite"]
        assert suite_from_data(data, "resolved.yaml") == suite, name


def test_a_command_line_override_is_validated_and_names_its_option(tmp_path):
    from harness.config import override

    suite = load_suite(str(write(tmp_path, GOOD)))
    changed = override(suite, {"measure": {"repetitions": 9}, "device": "cpu"}, {})
    assert (changed.measure.repetitions, changed.measure.warmup, changed.device) == (9, 1, "cpu")
    with pytest.raises(ConfigError, match=r"^--repetitions: must be an integer >= 1, got 0$"):
        override(suite, {"measure": {"repetitions": 0}}, {"measure.repetitions": "--repetitions"})
    with pytest.raises(ConfigError, match=r"^--backend: unknown backend 'warp'"):
        override(suite, {"backends": ["transformers", "warp"]}, {"backends": "--backend"})


def test_model_backends_keep_a_model_to_the_engines_that_load_it(tmp_path):
    """The nightly's AWQ 72B runs on vLLM only; elsewhere a model runs on every backend of its scenarios."""
    from harness.errors import BenchError
    from harness.machine import resolve_machine
    from harness.runner import expand

    nightly = load_suite("nightly")
    assert "Qwen/Qwen2.5-72B-Instruct-AWQ" in nightly.profile_models["h200"]
    assert not nightly.runs_on("Qwen/Qwen2.5-72B-Instruct-AWQ", "transformers")
    assert nightly.runs_on("Qwen/Qwen2.5-72B-Instruct-AWQ", "vllm") and nightly.runs_on("smollm2-135m", "transformers")
    suite = load_suite(str(write(tmp_path, GOOD.replace(
        "models: [tiny-dense]", "models: [tiny-dense, tiny-moe]\nbackends: [transformers, vllm]\n"
                                "model_backends: {tiny-moe: [vllm]}"))))
    unavailable = {name: BenchError("not fetched in this test") for name in suite.models}
    cells = expand(suite, unavailable, {}, resolve_machine("cpu", "fp32", None, False))
    pairs = {(cell.model, cell.backend) for cell in cells}
    assert pairs == {("tiny-dense", "transformers"), ("tiny-dense", "vllm"), ("tiny-moe", "vllm")}
    with pytest.raises(ConfigError, match="model_backends.other: 'other' is not one of the suite's models"):
        load_suite(str(write(tmp_path, GOOD.replace("models: [tiny-dense]",
                                                    "models: [tiny-dense]\nmodel_backends: {other: [vllm]}"))))
