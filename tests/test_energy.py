"""Energy counters: RAPL on a powercap tree (a real one where the machine has it), NVML where a driver is present."""

from pathlib import Path

import pytest

from harness.measure.energy import RaplCounter, measure_idle_power_w, open_counter, phase

RANGE_UJ = 1_000_000_000


def make_powercap(root: Path, packages: dict[int, int]) -> Path:
    """A powercap tree: one package zone per entry, each with a core subzone that must not be counted."""
    for index, energy in packages.items():
        zone = root / f"intel-rapl:{index}"
        sub = root / f"intel-rapl:{index}:0"
        for folder, name in ((zone, f"package-{index}"), (sub, "core")):
            folder.mkdir(parents=True)
            (folder / "name").write_text(name + "\n")
            (folder / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
            (folder / "energy_uj").write_text(f"{energy}\n")
    return root


def set_energy(root: Path, zone: str, value: int) -> None:
    (root / zone / "energy_uj").write_text(f"{value}\n")


def test_rapl_sums_packages_only_and_handles_wraparound(tmp_path):
    root = make_powercap(tmp_path, {0: 5_000_000, 1: 7_000_000})
    counter = RaplCounter(root)
    assert counter.source == "rapl:package-0+package-1"
    assert counter.read_j() == 0
    set_energy(root, "intel-rapl:0", 8_000_000)   # +3 J
    set_energy(root, "intel-rapl:0:0", 9_999_999)  # a subzone: ignored
    set_energy(root, "intel-rapl:1", 8_000_000)   # +1 J
    assert counter.read_j() == pytest.approx(4.0)
    set_energy(root, "intel-rapl:1", 500_000)     # wrapped: +(RANGE - 8e6 + 5e5) uJ
    assert counter.read_j() == pytest.approx(4.0 + (RANGE_UJ - 7_500_000) / 1e6)


def test_rapl_without_packages_or_readable_counters_is_unavailable(tmp_path):
    with pytest.raises(OSError):
        RaplCounter(tmp_path)
    root = make_powercap(tmp_path / "p", {0: 1})
    (root / "intel-rapl:0" / "energy_uj").unlink()
    with pytest.raises(OSError):
        RaplCounter(root)


def test_phase_subtracts_idle_power(tmp_path):
    root = make_powercap(tmp_path, {0: 0})
    counter = RaplCounter(root)

    def work():
        set_energy(root, "intel-rapl:0", 2_000_000)  # 2 J during the phase
        return "done"

    result, spent = phase(counter, idle_w=1.0, fn=work)
    assert result == "done" and spent.gross_j == pytest.approx(2.0)
    assert spent.energy_j == pytest.approx(2.0 - spent.seconds)


def test_idle_power_of_a_still_counter_is_zero(tmp_path):
    assert measure_idle_power_w(RaplCounter(make_powercap(tmp_path, {0: 0})), seconds=0.05) == 0


def test_this_machines_rapl_counter_rises_under_load():
    counter, why = open_counter("cpu")
    if counter is None:
        pytest.skip(f"no readable RAPL counter here: {why}")
    start = counter.read_j()
    sum(i * i for i in range(3_000_000))
    assert counter.read_j() > start


def test_nvml_counter_rises_where_a_driver_is_present():
    counter, why = open_counter("cuda")
    if counter is None:
        pytest.skip(f"no NVML energy counter here: {why}")
    assert counter.source == "nvml:0"
    assert measure_idle_power_w(counter, seconds=0.5) > 0


def test_devices_without_a_counter_say_why():
    counter, why = open_counter("mps")
    assert counter is None and "no energy counter" in why
