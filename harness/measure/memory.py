"""Peak resident memory of this process (rss.v3), from the kernel's own high-water mark.

The kernel tracks it continuously: no sample can miss a spike, and reading it costs nothing while the model runs.
(A sampling thread was tried first: on a 2-core CPU its polling slowed decoding by a quarter, which no harness may
do to what it measures.) Where cells of one model share a worker, the mark is reset to the current resident size
before each cell (Linux's /proc/self/clear_refs), and the cell's peak is the higher of the load's peak and its own.
On the CPU a transformers worker runs each cell in a child forked just after the load (harness/worker.py), whose mark
starts where an isolated cell's does; the reset then only clears what the fork copied.
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


def resident_file_pages() -> list[int]:
    """The addresses of this process's resident pages of readable file mappings (shared libraries' code, mapped
    weights), from Linux's /proc/self/maps and /proc/self/pagemap (bit 63: present). fork copies no page-table
    entries of file mappings, so a child maps none of these until it touches them: a SmolLM2 worker's child started
    with 12 MiB of them against its parent's 127 MiB, and its cell peaked 85 MiB below a fresh process's."""
    import numpy

    page = resource.getpagesize()
    addresses = []
    with open("/proc/self/pagemap", "rb") as pagemap:
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split()
            if len(fields) < 6 or "r" not in fields[1] or not fields[5].startswith("/") or \
                    fields[5].startswith("/dev/"):
                continue
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            pagemap.seek(start // page * 8)
            entries = numpy.frombuffer(pagemap.read((end - start) // page * 8), dtype="<u8")
            addresses.extend((start + numpy.flatnonzero(entries >> numpy.uint64(63)) * page).tolist())
    return addresses


def touch_pages(addresses: list[int]) -> None:
    """Reads a byte of each page (resident_file_pages of the parent): in a forked child, the same resident set as
    the parent's, so that its high-water mark starts where a fresh process's does."""
    for address in addresses:
        ctypes.c_char.from_address(address).value  # noqa: B018 - the read is the point


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
