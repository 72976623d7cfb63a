"""Energy counters (energy.v1): NVIDIA's NVML total-energy counter, RAPL package counters on CPUs that expose them.

Where no counter exists, there is no energy figure: `open_counter` says why, and nothing is estimated.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

POWERCAP = Path("/sys/class/powercap")


class EnergyCounter(Protocol):
    source: str

    def read_j(self) -> float:
        """Joules since an arbitrary origin; never decreases."""


class RaplCounter:
    """The sum of the RAPL package zones (intel-rapl:N, also used by AMD), wraparound handled; subzones
    (intel-rapl:N:M) are parts of their package and are not added again."""

    def __init__(self, root: Path = POWERCAP):
        self.zones = sorted(zone for zone in Path(root).glob("intel-rapl:*")
                            if zone.name.count(":") == 1 and (zone / "name").read_text().startswith("package"))
        if not self.zones:
            raise OSError(f"no RAPL package zones under {root}")
        self.ranges = [int((zone / "max_energy_range_uj").read_text()) for zone in self.zones]
        self._last = [self._raw(zone) for zone in self.zones]  # raises PermissionError where unreadable
        self._total_uj = 0
        self.source = "rapl:" + "+".join((zone / "name").read_text().strip() for zone in self.zones)

    @staticmethod
    def _raw(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    def read_j(self) -> float:
        for index, zone in enumerate(self.zones):
            value = self._raw(zone)
            delta = value - self._last[index]
            self._total_uj += delta if delta >= 0 else delta + self.ranges[index]
            self._last[index] = value
        return self._total_uj / 1e6


class NvmlCounter:
    """NVML's total energy since the driver loaded, in mJ (Volta and newer)."""

    def __init__(self, index: int = 0):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # raises where unsupported
        self.source = f"nvml:{index}"

    def read_j(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1e3


def open_counter(device: str, device_index: int = 0) -> tuple[EnergyCounter | None, str]:
    """The counter for `device` and its source, or (None, why there is none)."""
    try:
        if device == "cuda":
            counter = NvmlCounter(device_index)
        elif device == "cpu":
            counter = RaplCounter()
        else:
            return None, f"no energy counter for {device} devices without root tools"
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install 'bench-harness[gpu]')"
    except Exception as exc:  # OSError, PermissionError, NVMLError: each means the counter cannot be read
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    return counter, counter.source


def measure_idle_power_w(counter: EnergyCounter, seconds: float = 0.5) -> float:
    start_j, start = counter.read_j(), time.perf_counter()
    time.sleep(seconds)
    return (counter.read_j() - start_j) / (time.perf_counter() - start)


@dataclass(frozen=True)
class PhaseEnergy:
    energy_j: float  # gross minus idle power x seconds
    gross_j: float
    idle_w: float
    seconds: float


def phase(counter: EnergyCounter, idle_w: float, fn: Callable):
    """Runs fn() between two counter reads; returns its result and the energy it took above idle."""
    start_j, start = counter.read_j(), time.perf_counter()
    result = fn()
    gross, seconds = counter.read_j() - start_j, time.perf_counter() - start
    return result, PhaseEnergy(gross - idle_w * seconds, gross, idle_w, seconds)
