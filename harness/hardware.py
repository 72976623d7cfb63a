"""What machine this is: device detection (cuda, mps, cpu), the dtype that suits it, and the environment fingerprint.

Functions that need torch import it when called, so the CLI stays fast.
"""

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "fp32", "bf16", "fp16")


def cpu_model() -> str:
    """The CPU's marketing name, read without torch."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def detect_device(requested: str = "auto") -> str:
    """CUDA, then MPS, then CPU; a requested device that is not present is an error, not a silent fallback."""
    import torch

    from harness.errors import ConfigError

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if requested == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if available[d])
    if requested not in available:
        raise ConfigError(f"unknown device '{requested}'", hint=f"use one of: {', '.join(DEVICES)}")
    if not available[requested]:
        raise ConfigError(f"device '{requested}' is not available on this machine", hint="use --device auto")
    return requested


def auto_dtype(device: str) -> str:
    """bf16 where the device runs it well, else a half type the device supports, else fp32.

    CPUs without AVX512-BF16 or AMX emulate bf16 matmuls: measured here (AVX2 EPYC) a 128-token prefill of
    SmolLM2-135M took 1.58 s in bf16 against 0.57 s in fp32, so such CPUs get fp32.
    """
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "mps":
        return "fp16"
    return "bf16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "fp32"


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    if device == "mps":
        return cpu_model()  # the Apple chip's name, e.g. "Apple M2 Max"
    return cpu_model()


def memory_gb(device: str) -> float:
    """The device's memory in GB (1e9 bytes): GPU memory on CUDA, else the machine's RAM (unified on Apple)."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 1e9
    return psutil.virtual_memory().total / 1e9


def synchronize(device: str) -> None:
    """Waits for queued device work, so a host clock read after it sees the work done."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def _run(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    rev = _run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"])
    dirty = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return f"{rev}{'+dirty' if dirty else ''}" if rev else None


def _gpus() -> list[dict]:
    """GPU name, memory, driver through nvidia-smi where present (no torch needed)."""
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory_mib": float(parts[1]), "driver": parts[2]})
    return gpus


def fingerprint(online: bool = False) -> dict:
    """The environment every result row carries: software versions, CPU, RAM, GPUs, the project's revision."""
    gpus = _gpus()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bench": _version("bench-harness"),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "accelerate": _version("accelerate"),
        "cpu": cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=False) or os.cpu_count(),
        "cpu_threads": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": ", ".join(g["name"] for g in gpus) or None,
        "gpu_count": len(gpus),
        "gpu_memory_mib": gpus[0]["memory_mib"] if gpus else None,
        "driver": gpus[0]["driver"] if gpus else None,
        "git_revision": _git_revision(),
        "online": online,
    }
