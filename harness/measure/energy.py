"""Energy counters (energy.v1): NVIDIA's NVML total-energy counter, RAPL package counters on CPUs that expose them.

A phase's energy is the counter's delta over it minus idle power x its duration, idle power being measured just
before. Where no counter exists there is no energy figure: `open_counter` says why, and nothing is estimated.
"""

import contextlib
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from harness.errors import one_line

T = TypeVar("T")


class EnergyCounter(Protocol):
    source: str

    def read_j(self) -> float:
        """Cumulative joules since an arbitrary origin; never decreases (wraparound handled)."""
        ...


class RaplCounter:
    """The sum of the RAPL package zones (intel-rapl:N, the naming AMD uses too). Subzones (intel-rapl:N:M: core,
    uncore, dram) are parts of their package or outside it, and psys overlaps the packages: neither is added.

    The hardware counters wrap (after minutes at full power on some parts); a wrap is seen as a drop and corrected
    by the zone's max_energy_range_uj, so read_j must be called at least once per wrap period."""

    def __init__(self, root: Path = Path("/sys/class/powercap")):
        self.zones = sorted(zone for zone in Path(root).glob("intel-rapl:*")
                            if zone.name.count(":") == 1 and (zone / "name").read_text().startswith("package"))
        if not self.zones:
            raise OSError(f"no RAPL package zones under {root}")
        self.source = "rapl:" + "+".join((zone / "name").read_text().strip() for zone in self.zones)
        self._ranges = [int((zone / "max_energy_range_uj").read_text()) for zone in self.zones]
        self._last = [int((zone / "energy_uj").read_text()) for zone in self.zones]  # PermissionError for non-root
        self._total_uj = 0

    def read_j(self) -> float:
        for i, zone in enumerate(self.zones):
            value = int((zone / "energy_uj").read_text())
            delta = value - self._last[i]
            self._total_uj += delta if delta >= 0 else delta + self._ranges[i]
            self._last[i] = value
        return self._total_uj / 1e6


class NvmlCounter:
    """NVML's total energy since the driver loaded (mJ; Volta and newer), summed over the CUDA devices given: those
    the run computes on, matched to NVML's own numbering by UUID (harness.measure.nvml)."""

    def __init__(self, cuda_devices: Sequence[int]):
        import pynvml  # nvidia-ml-py, the `gpu` extra

        from harness.measure import nvml

        if not cuda_devices:
            raise OSError("NVML: the engine computes on no CUDA device of this process")
        held = contextlib.ExitStack()
        self._nvml = held.enter_context(nvml.session())
        try:
            found = nvml.handles(self._nvml, cuda_devices)
            for _, handle in found:
                self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # NotSupported before Volta
        except (pynvml.NVMLError, OSError) as exc:
            held.close()
            raise OSError(f"NVML, CUDA devices {list(cuda_devices)}: {exc}") from exc
        weakref.finalize(self, held.close)
        self._handles = [handle for _, handle in found]
        self.source = "nvml:" + "+".join(str(index) for index, _ in found)

    def read_j(self) -> float:
        return sum(map(self._nvml.nvmlDeviceGetTotalEnergyConsumption, self._handles)) / 1e3


def open_counter(device: str, cuda_devices: Sequence[int] = (0,)) -> tuple[EnergyCounter | None, str]:
    """The counter for `device` (on CUDA, for the device ordinals given) and its source, or (None, "none: <why>")."""
    try:
        if device == "cuda":
            counter: EnergyCounter = NvmlCounter(cuda_devices)
        elif device == "cpu":
            counter = RaplCounter()
        elif device == "mps":
            return None, "none: Apple GPUs expose no energy counter without `sudo powermetrics`"
        else:
            return None, f"none: no energy counter known for device {device!r}"
    except ImportError:
        return None, "none: nvidia-ml-py is not installed (pip install -e '.[gpu]')"
    except (OSError, ValueError) as exc:  # absent, unreadable (non-root RAPL), no driver, unsupported
        return None, "none: " + one_line(exc)
    return counter, counter.source


def measure_idle_power_w(counter: EnergyCounter, seconds: float = 0.5) -> float:
    """Mean power over `seconds` of sleep, in watts."""
    start_j, start = counter.read_j(), time.perf_counter()
    time.sleep(seconds)
    return (counter.read_j() - start_j) / (time.perf_counter() - start)


@dataclass(frozen=True)
class PhaseEnergy:
    energy_j: float  # gross_j - idle_w * seconds; may be slightly negative for a phase that draws no more than idle
    gross_j: float
    idle_w: float
    seconds: float


def phase(counter: EnergyCounter, idle_w: float, fn: Callable[[], T]) -> tuple[T, PhaseEnergy]:
    """Runs fn() between two counter reads; returns its result and the energy it took above idle."""
    start_j, start = counter.read_j(), time.perf_counter()
    result = fn()
    gross_j, seconds = counter.read_j() - start_j, time.perf_counter() - start
    return result, PhaseEnergy(gross_j - idle_w * seconds, gross_j, idle_w, seconds)
