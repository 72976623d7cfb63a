"""Hardware profiles: the shipped ones carry the reference table's figures, broken ones are refused with
file:line, field and reason, and each real device name matches its own profile and no other."""

import csv

import pytest

from harness.errors import ConfigError, UnknownNameError
from harness.hardware import cpu_model
from harness.profiles import PROFILE_DIR, detect, get_profile, match, profile_names

SPECS = PROFILE_DIR / "reference" / "hardware_specs.csv"  # the sourced table every figure is copied from
NUMBER_COLUMNS = {"memory_gb": "memory_GB", "memory_bandwidth_gbps": "mem_bw_GBps",
                  "bf16_tflops": "bf16_fp16_dense_TFLOPS", "fp8_tflops": "fp8_dense_TFLOPS", "power_w": "tdp_W"}
TEXT_COLUMNS = {"vendor": "vendor", "interconnect": "interconnect", "source": "source", "notes": "notes"}

# (device kind, name as torch or the CPU brand string gives it, memory GB) -> the one profile it must select.
DEVICES = [
    ("cuda", "NVIDIA GeForce RTX 4090", 23.6, "rtx4090"),
    ("cuda", "NVIDIA GeForce RTX 3090", 23.7, "rtx3090"),
    ("cuda", "NVIDIA L4", 22.0, "l4"),
    ("cuda", "NVIDIA L40S", 44.4, "l40s"),
    ("cuda", "NVIDIA A10G", 22.0, "a10g"),
    ("cuda", "NVIDIA A100-SXM4-40GB", 39.4, "a100-40gb"),
    ("cuda", "NVIDIA A100-SXM4-80GB", 79.2, "a100-80gb"),
    ("cuda", "NVIDIA A100 80GB PCIe", 85.0, "a100-80gb"),
    ("cuda", "NVIDIA H100 80GB HBM3", 79.1, "h100-sxm"),
    ("cuda", "NVIDIA H100 PCIe", 79.1, "h100-pcie"),
    ("cuda", "NVIDIA H800", 79.1, "h800"),
    ("cuda", "NVIDIA H20", 95.0, "h20"),
    ("cuda", "NVIDIA H200", 139.8, "h200"),
    ("cuda", "NVIDIA B200", 178.4, "b200"),
    ("cuda", "AMD Instinct MI300X", 191.5, "mi300x"),
    ("mps", "Apple M1 Max", None, "apple-m1-max"),
    ("mps", "Apple M2 Max", None, "apple-m2-max"),
    ("mps", "Apple M2 Ultra", None, "apple-m2-ultra"),
    ("mps", "Apple M3 Max", None, "apple-m3-max"),
    ("cpu", "Apple M4 Max", None, "apple-m4-max"),
    ("cpu", "AMD EPYC 9654 96-Core Processor", None, "epyc-9654"),
    ("cpu", "Intel(R) Xeon(R) Platinum 8480+", None, "xeon-8480"),
    ("cpu", "AMD EPYC", None, "cpu"),  # this machine's model name
    ("cpu", "AMD EPYC 7763 64-Core Processor", None, "cpu"),
    ("cpu", "Apple M3 Pro", None, "cpu"),
]


def csv_rows() -> dict[str, dict]:
    with SPECS.open(newline="") as f:
        return {row["device"]: row for row in csv.DictReader(f)}


def test_every_shipped_profile_loads_under_its_file_name():
    names = profile_names()
    assert len(names) == 22
    for name in names:
        assert get_profile(name).name == name
    assert get_profile(str(PROFILE_DIR / "l4.yaml")).name == "l4"


@pytest.mark.parametrize("name", [n for n in profile_names() if n != "cpu"])
def test_figures_are_the_reference_tables(name):
    profile = get_profile(name)
    row = csv_rows()[profile.csv_device]
    for field, column in NUMBER_COLUMNS.items():
        assert getattr(profile, field) == (float(row[column]) if row[column] else None), field
    for field, column in TEXT_COLUMNS.items():
        assert getattr(profile, field) == (row[column] or None), field
    price_text = row["cloud_price_usd_per_gpu_hr"]
    if price_text:
        assert price_text in profile.price_note
    else:
        assert profile.price_note is None and profile.price_usd_per_hour is None
    if profile.price_usd_per_hour is not None:
        assert price_text.startswith(f"{profile.price_usd_per_hour:g}")


def test_generic_cpu_profile_has_no_figures():
    cpu = get_profile("cpu")
    figures = ("memory_gb", "memory_bandwidth_gbps", "bf16_tflops", "fp8_tflops", "power_w", "price_usd_per_hour")
    assert all(getattr(cpu, field) is None for field in figures)
    assert cpu.kind == "cpu" and cpu.csv_device is None


def test_profiles_map_to_distinct_table_rows():
    devices = [get_profile(n).csv_device for n in profile_names() if n != "cpu"]
    assert len(set(devices)) == len(devices)


GOOD = """\
name: mine
description: a test card
kind: gpu
vendor: ACME
csv_device: null
memory_gb: 24
memory_bandwidth_gbps: 1008
bf16_tflops: null
fp8_tflops: null
power_w: null
interconnect: null
price_usd_per_hour: null
price_note: null
source: a test
notes: null
match:
  device_name: 'ACME \\d+'
  memory_gb: [20, 26]
defaults:
  dtype: bf16
  batch_sizes: [1, 4]
  backends: [transformers]
"""


def write(tmp_path, text):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_a_profile_loads_from_a_path(tmp_path):
    profile = get_profile(str(write(tmp_path, GOOD)))
    assert (profile.name, profile.memory_gb, profile.bf16_tflops) == ("mine", 24.0, None)
    assert (profile.match.memory_gb, profile.defaults.batch_sizes) == ((20.0, 26.0), (1, 4))
    assert match(profile, "cuda", "ACME 7", 24.0)[0]


@pytest.mark.parametrize("change, line, field, reason", [
    (("kind: gpu", "kind: gpu\ncolour: red"), 4, "colour", "unknown field"),
    (("source: a test\n", ""), 1, "(top level)", "missing required field 'source'"),
    (("memory_bandwidth_gbps: 1008", "memory_bandwidth_gbps: -1"), 7, "memory_bandwidth_gbps",
     "must be a number >= 0, got -1"),
    (("bf16_tflops: null", "bf16_tflops: fast"), 8, "bf16_tflops", "must be a number, got 'fast'"),
    (("description: a test card", "description: ''"), 2, "description", "non-empty string"),
    (("description: a test card", "description: '   '"), 2, "description", "non-empty string"),
    (("kind: gpu", "kind: tpu"), 3, "kind", "must be one of"),
    (("  device_name: 'ACME \\d+'", "  device_name: 'ACME (\\d+'"), 17, "match.device_name",
     "not a valid regular expression"),
    (("  memory_gb: [20, 26]", "  memory_gb: [26, 20]"), 18, "match.memory_gb", "above high end"),
    (("  memory_gb: [20, 26]", "  memory_gb: 24"), 18, "match.memory_gb", "range [low, high]"),
    (("  dtype: bf16", "  dtype: int4"), 20, "defaults.dtype", "must be one of"),
    (("  batch_sizes: [1, 4]", "  batch_sizes: [1, 0]"), 21, "defaults.batch_sizes.1",
     "must be an integer >= 1, got 0"),
    (("  backends: [transformers]", "  backends: [transformers, warp]"), 22, "defaults.backends.1",
     "must be one of llamacpp, openai, transformers, vllm, got 'warp'"),
])
def test_broken_profiles_are_refused_with_file_line_field_and_reason(tmp_path, change, line, field, reason):
    assert change[0] in GOOD
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as caught:
        get_profile(str(path))
    assert caught.value.message.startswith(f"{path}:{line}: {field}: ")
    assert reason in caught.value.message


@pytest.mark.parametrize("kind, device_name, memory_gb, expected", DEVICES)
def test_each_device_selects_exactly_its_own_profile(kind, device_name, memory_gb, expected):
    matching = [n for n in profile_names() if match(get_profile(n), kind, device_name, memory_gb)[0]]
    assert matching == [expected]
    profile, reason = detect(kind, device_name, memory_gb)
    assert profile.name == expected
    assert device_name in reason


def test_every_specific_profile_is_covered_by_a_real_device_name():
    assert {d[-1] for d in DEVICES} == set(profile_names())


def test_match_explains_memory_and_name():
    a100_40 = get_profile("a100-40gb")
    assert match(a100_40, "cuda", "NVIDIA A100-SXM4-40GB", 39.4) == (
        True, "device name 'NVIDIA A100-SXM4-40GB' matches /\\bA100\\b/ and 39.4 GB is within [36, 44]")
    ok, reason = match(a100_40, "cuda", "NVIDIA A100-SXM4-80GB", 79.2)
    assert not ok and "79.2 GB is outside [36, 44]" in reason
    ok, reason = match(a100_40, "cuda", "NVIDIA A100-SXM4-40GB", None)
    assert not ok and "unknown" in reason
    ok, reason = match(get_profile("cpu"), "cpu", "AMD EPYC 9654 96-Core Processor", None)
    assert not ok and "epyc-9654" in reason


@pytest.mark.parametrize("device_name, memory_gb", [
    ("NVIDIA GeForce RTX 4090 Laptop GPU", 16.0),
    ("NVIDIA GeForce RTX 4090 D", 23.6),
    ("NVIDIA H100 NVL", 93.6),
    ("NVIDIA L40", 44.4),
    ("NVIDIA A100-SXM4-40GB", None),
])
def test_unmatched_gpu_gets_no_profile_and_a_reason(device_name, memory_gb):
    profile, reason = detect("cuda", device_name, memory_gb)
    assert profile is None and device_name in reason


def test_this_machines_cpu_gets_a_cpu_profile():
    profile, reason = detect("cpu", cpu_model(), None)
    assert profile.kind in ("cpu", "apple") and reason


def test_unknown_name_lists_known_profiles():
    with pytest.raises(UnknownNameError) as caught:
        get_profile("rtx9090")
    assert "unknown profile 'rtx9090'" in caught.value.message
    assert "a100-40gb, a100-80gb, a10g" in caught.value.message
