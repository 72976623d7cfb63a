"""What this device achieves, measured: memory bandwidth (a large copy) and matrix FLOP/s in a dtype; and, when
asked (`bench calibrate --stability`), how far its speed drifts over minutes.

Both figures use the same warm-up / repetition statistics as every other figure. Results are cached per machine,
device and dtype in the bench cache, so a run pays for calibration once; `bench calibrate` measures afresh. A CPU
calibration measured while other processes kept more than CONTENDED_SHARE of the machine's CPU time busy (a build,
another benchmark) is neither used nor cached: it would understate the machine, and every utilisation held against
it would overstate. The stability is cached per machine and device, and only `bench calibrate --stability` measures
it (minutes of it).
"""

import datetime
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import UnavailableError, one_line
from harness.measure.stats import RepetitionPolicy, summarize

CALIBRATION_VERSION = 3  # 2: records when it was measured; 3: and the CPU time other processes took meanwhile
CONTENDED_SHARE = 0.10  # other processes' share of the machine's CPU time above which a CPU calibration is refused
# Large enough to leave every CPU cache and GPU L2 behind; the matmul large enough to reach the units' peak.
COPY_MIB = {"cpu": 256, "mps": 1024, "cuda": 1024}
MATMUL_MAX_N = {"cpu": 2048, "mps": 8192, "cuda": 16384}
MATMUL_MIN_SECONDS = 0.05  # the size doubles from 256 until one product takes this long (or the maximum is reached)
POLICY = RepetitionPolicy(warmup=2, repetitions=5, min_seconds=0.5)
# Stability: one small product timed back to back (about a millisecond or less each), its rates' median taken per
# block; the 2.5% and 97.5% quantiles of the blocks' medians over their median bound where a window's speed sits.
STABILITY_MATMUL_N = {"cpu": 256, "mps": 2048, "cuda": 4096}
STABILITY_BLOCK_SECONDS = 1.0
STABILITY_MIN_BLOCKS = 40  # the 2.5% and 97.5% quantiles need 40 blocks to lie between two of them
STABILITY_QUANTILES = (0.025, 0.975)


@dataclass(frozen=True)
class Calibration:
    device: str
    device_name: str
    dtype: str
    bandwidth_gbps: float  # median; bytes read + written per second / 1e9
    bandwidth_stats: dict
    matmul_tflops: float  # median; 2 n^3 / s / 1e12
    matmul_stats: dict
    copy_mib: int
    matmul_n: int
    measured_at: str  # UTC, ISO 8601: when the figures were measured (a cached calibration keeps its own time)
    # Of all the machine's CPU time while it was measured, the share other processes took (None: no /proc/stat)
    other_cpu_share: float | None
    version: int = CALIBRATION_VERSION


@dataclass(frozen=True)
class Stability:
    """How far this machine's speed drifts: a fixed product timed back to back for `seconds`, in blocks of
    `block_seconds`. Each block's median rate over the median of all blocks is a ratio; 95% of the blocks' ratios lie
    within [block_ratio_low, block_ratio_high]. drift_factor f = max(high, 1 / low) >= 1: a timed figure measured
    in one window is within a factor f of the machine's long-run median, so its interval is widened by f."""

    device: str
    device_name: str
    seconds: float
    block_seconds: float
    blocks: int
    block_ratio_low: float
    block_ratio_high: float
    drift_factor: float
    matmul_n: int
    measured_at: str
    version: int = CALIBRATION_VERSION


def _timed(fn, device: str) -> float:
    from harness.hardware import synchronize

    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _copy_gbps(device: str) -> list[float]:
    import torch

    copy_bytes = COPY_MIB[device] * 2**20
    source = torch.ones(copy_bytes // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    seconds = POLICY.run(lambda: _timed(lambda: target.copy_(source), device)).runs
    return [2 * copy_bytes / s / 1e9 for s in seconds]  # each copy reads and writes copy_bytes


def _matmul_tflops(device: str, dtype: str) -> tuple[list[float], int]:
    import torch

    from harness.backends.transformers import TORCH_DTYPES

    generator = torch.Generator(device="cpu").manual_seed(0)

    def product(n: int):
        a, b = (torch.randn(n, n, generator=generator).to(device=device, dtype=TORCH_DTYPES[dtype]) for _ in "ab")
        return lambda: torch.mm(a, b)

    n = 256
    run = product(n)
    run()  # the first product pays for thread start-up and allocation
    while n < MATMUL_MAX_N[device] and _timed(run, device) < MATMUL_MIN_SECONDS:
        n *= 2
        run = product(n)
    seconds = POLICY.run(lambda: _timed(run, device)).runs
    return [2 * n**3 / s / 1e12 for s in seconds], n


def _cpu_ticks() -> tuple[int, int] | None:
    """Busy and total clock ticks of all the machine's CPUs since boot (Linux's /proc/stat), or None."""
    try:
        ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are the not-busy ones


def other_cpu_share(work):
    """`work()`'s result, and the share of all the machine's CPU time that processes other than this one took while
    it ran (this process's own time, every thread of it, left out); None where /proc/stat is missing."""
    before, own = _cpu_ticks(), time.process_time()
    result = work()
    after, own = _cpu_ticks(), time.process_time() - own
    if before is None or after is None or after[1] == before[1]:
        return result, None
    busy, total = after[0] - before[0], after[1] - before[1]
    return result, min(1.0, max(0.0, (busy - own * os.sysconf("SC_CLK_TCK")) / total))


def measure(device: str, dtype: str) -> Calibration:
    from harness.hardware import device_name

    (copies, (tflops, n)), others = other_cpu_share(lambda: (_copy_gbps(device), _matmul_tflops(device, dtype)))
    bandwidth, matmul = summarize(copies), summarize(tflops)
    return Calibration(device, device_name(device), dtype, bandwidth["median"], bandwidth, matmul["median"], matmul,
                       COPY_MIB[device], n, _now(), others)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def block_ratios(blocks: list[float]) -> tuple[float, float, float]:
    """The 2.5% and 97.5% quantiles of the blocks' medians over their median, and the drift factor they give."""
    import numpy as np

    ratios = np.asarray(blocks, dtype=float) / float(np.median(blocks))
    low, high = (float(q) for q in np.quantile(ratios, STABILITY_QUANTILES))
    return low, high, max(high, 1 / low)


def measure_stability(device: str, seconds: float) -> Stability:
    """Times STABILITY_MATMUL_N's product back to back for `seconds` (at least STABILITY_MIN_BLOCKS blocks)."""
    import statistics

    import torch

    from harness.hardware import device_name

    if seconds + 1e-9 < STABILITY_MIN_BLOCKS * STABILITY_BLOCK_SECONDS:
        raise ValueError(f"a stability measurement takes at least {STABILITY_MIN_BLOCKS * STABILITY_BLOCK_SECONDS:g} s"
                         f" ({STABILITY_MIN_BLOCKS} blocks of {STABILITY_BLOCK_SECONDS:g} s), not {seconds:g}")
    n = STABILITY_MATMUL_N[device]
    generator = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).to(device) for _ in "ab")
    _timed(lambda: torch.mm(a, b), device)  # thread start-up and allocation
    blocks = []
    for _ in range(int(seconds / STABILITY_BLOCK_SECONDS + 1e-9)):  # 2.0 // 0.05 is 39.0
        rates, end = [], time.perf_counter() + STABILITY_BLOCK_SECONDS
        while time.perf_counter() < end:
            rates.append(1 / _timed(lambda: torch.mm(a, b), device))
        blocks.append(statistics.median(rates))
    low, high, factor = block_ratios(blocks)
    return Stability(device, device_name(device), seconds, STABILITY_BLOCK_SECONDS, len(blocks), low, high, factor, n,
                     _now())


def _cache_file(device: str, dtype: str | None):
    """The cache file of a calibration (a dtype) or of the stability (dtype None) on this machine and device."""
    import torch

    from harness.hardware import device_name
    from harness.zoo import cache_dir

    machine = json.dumps([device_name(device), torch.__version__, CALIBRATION_VERSION])
    digest = hashlib.sha256(machine.encode()).hexdigest()[:12]
    return cache_dir() / "calibration" / f"{device}-{dtype or 'stability'}-{digest}.json"


def _write(path, result) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(result), indent=2) + "\n")
    temporary.replace(path)


def calibrate(device: str, dtype: str, fresh: bool = False) -> tuple[Calibration, bool]:
    """The calibration for this machine, device and dtype, and whether it came from the cache."""
    path = _cache_file(device, dtype)
    if path.exists() and not fresh:
        return Calibration(**json.loads(path.read_text())), True
    result = measure(device, dtype)
    if device == "cpu" and (result.other_cpu_share or 0.0) > CONTENDED_SHARE:
        raise UnavailableError(
            f"calibration measured while other processes took {result.other_cpu_share:.0%} of this machine's CPU time "
            f"(more than {CONTENDED_SHARE:.0%}): {result.bandwidth_gbps:.1f} GB/s, {result.matmul_tflops:.3g} TFLOP/s "
            f"{dtype} understate it; neither used nor cached", hint="run `bench calibrate` when the machine is quiet")
    _write(path, result)
    return result, False


def calibrate_stability(device: str, seconds: float) -> Stability:
    """Measures this machine's stability afresh and caches it for later runs."""
    result = measure_stability(device, seconds)
    _write(_cache_file(device, None), result)
    return result


def cached_stability(device: str) -> Stability | None:
    """This machine's stability as `bench calibrate --stability` last measured it, or None (also where the cached
    file cannot be read: a run then says that no stability was measured, and measuring it again mends it)."""
    path = _cache_file(device, None)
    try:
        return Stability(**json.loads(path.read_text())) if path.exists() else None
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Probe:
    """What a run will use, resolved in a process that may import torch: device, dtype, and their limits."""

    device: str
    device_name: str
    memory_gb: float
    dtype: str
    calibration: Calibration | None
    calibration_cached: bool
    calibration_error: str | None
    # More than one GPU: the all-reduce seconds per message size (MiB) across all of them, and their count.
    allreduce_seconds: dict | None = None
    allreduce_world_size: int = 0
    allreduce_error: str | None = None
    stability: Stability | None = None  # None until `bench calibrate --stability` has measured it here

    @property
    def drift_factor(self) -> float | None:
        return self.stability.drift_factor if self.stability else None


def probe(device: str, dtype: str) -> Probe:
    from harness.hardware import auto_dtype, detect_device, device_name, memory_gb

    device = detect_device(device)
    dtype = auto_dtype(device) if dtype == "auto" else dtype
    try:
        calibration, cached = calibrate(device, dtype)
        error = None
    except Exception as exc:  # a device that cannot run the calibration still runs its cells, without it
        calibration, cached, error = None, False, one_line(exc)
    allreduce, world, allreduce_error = None, 0, None
    if device == "cuda":
        import torch

        from harness.measure.interconnect import measure_allreduce

        world = torch.cuda.device_count()
        if world >= 2:
            try:
                allreduce = measure_allreduce(world, "nccl")
            except Exception as exc:  # noqa: BLE001 - the cells still run, without the figure, saying why
                allreduce_error = one_line(exc)
    return Probe(device, device_name(device), memory_gb(device), dtype, calibration, cached, error, allreduce, world,
                 allreduce_error, cached_stability(device))
