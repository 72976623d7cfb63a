"""Peak resident memory of this process (rss.v2), from the kernel's own high-water mark.

The kernel tracks it continuously: no sample can miss a spike, and reading it costs nothing while the model runs.
(A sampling thread was tried first: on a 2-core CPU its polling slowed decoding by a quarter, which no harness may
do to what it measures.) Where cells of one model share a worker, the mark is reset to the current resident size
before each cell (Linux's /proc/self/clear_refs), and the cell's peak is the higher of the load's peak and its own.
"""

import ctypes
import gc
import resource
import sys
from pathlib import Path

MIB = 1024 * 1024
CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mib() -> float:
    """The most memory this process has held resident since it started, in MiB."""
    status = Path("/proc/self/status")
    if status.exists():  # Linux
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MIB if sys.platform == "darwin" else maxrss * 1024 / MIB  # bytes on macOS, KiB elsewhere


def can_reset_peak_rss() -> bool:
    return CLEAR_REFS.exists()


def reset_peak_rss() -> None:
    """Starts the high-water mark again from the current resident size ("5": reset the peak RSS, Linux 4.0+), once
    what an earlier cell freed has gone back to the kernel: glibc keeps freed heap pages until malloc_trim, and MKL
    (torch's CPU BLAS on x86) keeps its products' work buffers until mkl_free_buffers (14 to 17 MiB after a
    SmolLM2 cell here)."""
    gc.collect()
    _free_mkl_buffers()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except AttributeError:  # not glibc
        pass
    CLEAR_REFS.write_text("5")


def _free_mkl_buffers() -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    try:  # torch links MKL into libtorch_cpu; mkl_free_buffers is MKL's name for mkl_serv_free_buffers
        ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_free_buffers()
    except (OSError, AttributeError):  # a build without MKL (ARM, macOS) or without that library
        pass


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation refused: Python's MemoryError, torch's OutOfMemoryError (CUDA), torch's CPU
    allocator failing (a RuntimeError "can't allocate memory", as under the worker's address-space limit), or oneDNN
    (CPU bf16 matmuls) failing to make a primitive, which is how it reports its own refused allocation (seen under
    --memory-limit: "could not create a primitive")."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        sign in text for sign in ("out of memory", "can't allocate memory", "could not create a primitive"))
