"""Energy counters: RAPL on powercap trees built here and on the machine's own, NVML where a driver is present."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.measure.energy import RaplCounter, measure_idle_power_w, open_counter, phase
from harness.measure.nvml import nvml_indices

RANGE_UJ = 262_143_328_850  # a real package zone's max_energy_range_uj
POWERCAP = Path("/sys/class/powercap")


def make_powercap(root: Path, packages: dict[int, int]) -> Path:
    """A tree laid out like /sys/class/powercap: the intel-rapl control type, one package zone per entry with a core
    and a dram subzone, and a psys zone; only the packages are to be counted."""
    (root / "intel-rapl").mkdir(parents=True)
    zones = {f"intel-rapl:{i}": (f"package-{i}", energy) for i, energy in packages.items()}
    for i in packages:
        zones[f"intel-rapl:{i}:0"] = ("core", 111_000_000)
        zones[f"intel-rapl:{i}:1"] = ("dram", 222_000_000)
    zones[f"intel-rapl:{len(packages)}"] = ("psys", 333_000_000)
    for zone, (name, energy) in zones.items():
        (root / zone).mkdir()
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
        (root / zone / "energy_uj").write_text(f"{energy}\n")
    return root


def set_energy(root: Path, zone: str, value: int) -> None:
    (root / zone / "energy_uj").write_text(f"{value}\n")


def test_rapl_sums_package_zones_only(tmp_path):
    root = make_powercap(tmp_path, {0: 5_000_000, 1: 7_000_000})
    counter = RaplCounter(root)
    assert counter.source == "rapl:package-0+package-1"
    assert counter.read_j() == 0
    set_energy(root, "intel-rapl:0", 8_000_000)  # +3 J
    set_energy(root, "intel-rapl:1", 8_000_000)  # +1 J
    for zone in ("intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1:0", "intel-rapl:2"):  # subzones and psys
        set_energy(root, zone, 999_000_000)
    assert counter.read_j() == pytest.approx(4.0)
    assert counter.read_j() == pytest.approx(4.0)  # no change, no energy


def test_rapl_wraparound_adds_the_range(tmp_path):
    root = make_powercap(tmp_path, {0: RANGE_UJ - 1_000_000, 1: 0})
    counter = RaplCounter(root)
    set_energy(root, "intel-rapl:0", 500_000)  # wrapped: 1 J up to the range, then 0.5 J
    assert counter.read_j() == pytest.approx(1.5)
    set_energy(root, "intel-rapl:0", 2_500_000)  # and on from there
    assert counter.read_j() == pytest.approx(3.5)


def test_rapl_without_package_zones_is_unavailable(tmp_path):
    with pytest.raises(OSError, match="no RAPL package zones"):
        RaplCounter(tmp_path)


def test_rapl_without_energy_uj_is_unavailable(tmp_path):
    root = make_powercap(tmp_path, {0: 1})
    (root / "intel-rapl:0" / "energy_uj").unlink()
    with pytest.raises(FileNotFoundError):
        RaplCounter(root)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_rapl_with_unreadable_energy_uj_is_unavailable(tmp_path):
    root = make_powercap(tmp_path, {0: 1})
    (root / "intel-rapl:0" / "energy_uj").chmod(0o000)  # as the kernel has made it for non-root since 2020
    with pytest.raises(PermissionError):
        RaplCounter(root)


def test_phase_subtracts_idle_power_times_duration(tmp_path):
    root = make_powercap(tmp_path, {0: 1_000_000, 1: 0})
    counter = RaplCounter(root)

    def work():
        time.sleep(0.05)
        set_energy(root, "intel-rapl:0", 3_000_000)  # 2 J during the phase
        return "done"

    result, spent = phase(counter, idle_w=10.0, fn=work)
    assert result == "done"
    assert spent.gross_j == pytest.approx(2.0) and spent.idle_w == 10.0 and spent.seconds >= 0.05
    assert spent.energy_j == pytest.approx(2.0 - 10.0 * spent.seconds)


def test_idle_power_of_a_still_counter_is_zero(tmp_path):
    assert measure_idle_power_w(RaplCounter(make_powercap(tmp_path, {0: 0})), seconds=0.05) == 0


def test_this_machines_rapl_counter_rises_under_load():
    try:
        counter = RaplCounter(POWERCAP)
    except (OSError, ValueError) as exc:
        pytest.skip(f"no readable RAPL package counter on this machine: {type(exc).__name__}: {exc}")
    start, deadline = counter.read_j(), time.perf_counter() + 0.3
    while time.perf_counter() < deadline:
        sum(i * i for i in range(10_000))
    assert counter.read_j() > start


def test_each_cuda_device_is_found_in_nvml_by_its_uuid():
    nvml = ["GPU-aaaa-0", "GPU-bbbb-1", "GPU-cccc-2", "GPU-dddd-3"]  # NVML's order: PCI bus order, every GPU
    assert nvml_indices(["dddd-3"], nvml) == [3]  # CUDA_VISIBLE_DEVICES=3: CUDA's device 0 is NVML's 3
    assert nvml_indices(["DDDD-3", "bbbb-1"], nvml) == [3, 1]  # CUDA's order kept, case ignored
    with pytest.raises(OSError, match="does not list"):
        nvml_indices(["eeee-4"], nvml)


@pytest.mark.gpu
def test_nvml_counter_rises_over_a_wait():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (the `gpu` extra)")
    counter, why = open_counter("cuda")
    if counter is None:
        pytest.skip(f"no NVML energy counter here: {why}")
    start = counter.read_j()
    time.sleep(0.5)  # a GPU draws tens of watts idle; the counter updates several times a second
    assert counter.read_j() > start


@pytest.mark.gpu
def test_nvml_counts_the_visible_gpu_not_device_0():
    """With only the machine's last GPU visible (in PCI order, NVML's), CUDA's device 0 is NVML's last."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (the `gpu` extra)")
    pynvml.nvmlInit()
    last = pynvml.nvmlDeviceGetCount() - 1
    pynvml.nvmlShutdown()
    probe = ("from harness.measure.energy import open_counter; from harness.measure.nvml import device_memory; "
             "import torch; torch.ones(1, device='cuda'); "
             "print(open_counter('cuda')[1], device_memory([0])['peak_device_mib'] > 0)")
    env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(last)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == [f"nvml:{last}", "True"], done.stderr


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_open_counter_gives_a_counter_and_its_source_or_a_reason(device):
    counter, why = open_counter(device)
    if counter is None:
        assert why.startswith("none: ") and "\n" not in why
    else:
        assert why == counter.source and why.startswith({"cpu": "rapl:", "cuda": "nvml:"}[device])


@pytest.mark.skipif(POWERCAP.exists(), reason="this machine has a powercap tree")
def test_cpu_without_powercap_has_no_counter():
    counter, why = open_counter("cpu")
    assert counter is None and why.startswith("none: ") and "no RAPL package zones" in why


@pytest.mark.parametrize("device", ["mps", "xpu"])
def test_devices_without_a_counter_say_why(device):
    counter, why = open_counter(device)
    assert counter is None and why.startswith("none: ") and "\n" not in why
