"""The hardware a run is on: what a probe of the device found, and the hardware profile its results are held against
(the one named, refused where this machine does not match it unless forced, or the one detected)."""

import concurrent.futures
import multiprocessing
import os
import statistics
from dataclasses import asdict, dataclass

from harness.errors import ConfigError
from harness.measure.calibration import Probe, probe
from harness.measure.interconnect import bus_bandwidth_gbps
from harness.measure.roofline import Limits
from harness.profiles import Profile, detect, get_profile, match
from harness.worker import die_with_parent


@dataclass(frozen=True)
class Machine:
    """The hardware a run is on: what the probe found, the profile its results are held against, the limits."""

    probe: Probe
    profile: Profile | None
    off_profile: bool
    profile_reason: str

    @property
    def profile_specs(self) -> dict:
        """The profile's figures that verdicts read (harness/claims), carried in every row so that a verdict never
        depends on the profile files of the machine it is computed on."""
        profile = self.profile
        return {"price_usd_per_hour": profile.price_usd_per_hour if profile else None,
                "interconnect": profile.interconnect if profile else None}

    @property
    def limits(self) -> Limits:
        profile, calibration = self.profile, self.probe.calibration
        return Limits(
            datasheet_gbps=profile.memory_bandwidth_gbps if profile else None,
            datasheet_tflops=profile.peak_tflops(self.probe.dtype) if profile else None,
            calibrated_gbps=calibration.bandwidth_gbps if calibration else None,
            calibrated_tflops=calibration.matmul_tflops if calibration else None,
            price_usd_per_hour=profile.price_usd_per_hour if profile else None,
        )

    def record(self) -> dict:
        """What resolved_config.yaml keeps of the machine (--resume reads device, dtype, profile and off_profile)."""
        found = self.probe
        return {"device": found.device, "device_name": found.device_name, "memory_gb": found.memory_gb,
                "dtype": found.dtype, "profile": self.profile.name if self.profile else None,
                "off_profile": self.off_profile, "profile_reason": self.profile_reason, "limits": asdict(self.limits),
                "calibration": asdict(found.calibration) if found.calibration else None,
                "calibration_cached": found.calibration_cached, "calibration_error": found.calibration_error,
                "allreduce_seconds": found.allreduce_seconds, "allreduce_world_size": found.allreduce_world_size,
                "allreduce_error": found.allreduce_error,
                "stability": asdict(found.stability) if found.stability else None}

    def describe(self) -> str:
        """Two lines: the profile and why, and what calibration measured."""
        found = self.probe
        profile = self.profile.name if self.profile else "none"
        off = " (OFF-PROFILE: rows marked off_profile)" if self.off_profile else ""
        calibration = found.calibration
        measured = (f"calibrated {calibration.bandwidth_gbps:.1f} GB/s copy bandwidth, {calibration.matmul_tflops:.3g} "
                    f"TFLOP/s {found.dtype} matmul{' (cached)' if found.calibration_cached else ''}"
                    if calibration else f"no calibration: {found.calibration_error}")
        stability = found.stability
        measured += (f"; speed drift factor {stability.drift_factor:.3f} ({stability.measured_at}), timed intervals "
                     "widened by it" if stability else "; no stability measured (bench calibrate --stability): timed "
                     "intervals hold the speed while they ran, not the machine's long-run median")
        if found.allreduce_seconds:
            size, seconds = max(found.allreduce_seconds.items())
            busbw = bus_bandwidth_gbps(size * 2**20, statistics.median(seconds), found.allreduce_world_size)
            measured += f"; all-reduce across {found.allreduce_world_size} GPUs: {busbw:.1f} GB/s bus bandwidth"
        elif found.allreduce_error:
            measured += f"; no all-reduce figure: {found.allreduce_error}"
        return (f"device {found.device} ({found.device_name}, {found.memory_gb:.0f} GB), dtype {found.dtype}; "
                f"profile {profile}{off}: {self.profile_reason}\n{measured}")


def _probe_in_subprocess(device: str, dtype: str) -> Probe:
    """Device, dtype and calibration, found in a fresh process so that neither torch nor the calibration's memory
    stays in this one (the cells' peak memory must not include it)."""
    mp = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=mp, initializer=die_with_parent,
                                                initargs=(os.getpid(),)) as pool:
        return pool.submit(probe, device, dtype).result()


def resolve_machine(device: str, dtype: str, profile_name: str | None, force: bool) -> Machine:
    """This machine, held against the named profile (refused when it does not match, unless forced) or against
    the profile detected."""
    found = _probe_in_subprocess(device, dtype)
    if profile_name is None:
        profile, reason = detect(found.device, found.device_name, found.memory_gb)
        return Machine(found, profile, False, reason)
    profile = get_profile(profile_name)
    matches, reason = match(profile, found.device, found.device_name, found.memory_gb)
    if not matches and not force:
        raise ConfigError(f"this machine does not match profile {profile.name}: {reason}",
                          hint="`bench profiles detect` shows which profile does; --force runs anyway, "
                               "marking every row off_profile")
    if dtype == "auto" and profile.defaults.dtype not in ("auto", found.dtype):
        found = _probe_in_subprocess(device, profile.defaults.dtype)
    return Machine(found, profile, not matches, reason)
