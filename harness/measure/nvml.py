"""NVIDIA's management library (nvidia-ml-py, the `gpu` extra), for the GPUs that a run computes on.

NVML numbers every GPU of the machine in PCI bus order and ignores CUDA_VISIBLE_DEVICES; CUDA numbers only the
visible ones, fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID. So CUDA device 0 is NVML device 0 only by luck
(CUDA_VISIBLE_DEVICES=3 makes it NVML's 3): each CUDA device is matched to NVML's by its UUID.
"""

import contextlib
import os
from collections.abc import Iterable, Iterator


def nvml_indices(cuda_uuids: list[str], nvml_uuids: list[str]) -> list[int]:
    """NVML's index of each CUDA device, matched by UUID: torch gives it bare, NVML prefixed with "GPU-"."""
    bare = [uuid.lower().removeprefix("gpu-") for uuid in nvml_uuids]
    try:
        return [bare.index(uuid.lower().removeprefix("gpu-")) for uuid in cuda_uuids]
    except ValueError:
        raise OSError(f"NVML does not list the CUDA devices {cuda_uuids} (it lists {nvml_uuids})") from None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value  # bytes in nvidia-ml-py before 11.515


@contextlib.contextmanager
def session() -> Iterator:
    """pynvml, initialised for the block (NVML counts its inits: each is matched by one shutdown). NVML's errors, in
    the block too, become OSError (no driver, no library, a call the GPU does not support); ImportError where
    nvidia-ml-py is not installed."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise OSError(f"NVML: {exc}") from exc
    try:
        yield pynvml
    except pynvml.NVMLError as exc:
        raise OSError(f"NVML: {exc}") from exc
    finally:
        pynvml.nvmlShutdown()


def handles(pynvml, cuda_devices: Iterable[int]) -> list[tuple[int, object]]:
    """(NVML index, handle) of each CUDA device ordinal, in the order given."""
    import torch

    cuda_uuids = [str(torch.cuda.get_device_properties(device).uuid) for device in cuda_devices]
    count = pynvml.nvmlDeviceGetCount()
    nvml_uuids = [_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
    return [(index, pynvml.nvmlDeviceGetHandleByIndex(index)) for index in nvml_indices(cuda_uuids, nvml_uuids)]


def device_memory(cuda_devices: Iterable[int]) -> dict[str, float]:
    """peak_device_mib: the memory that NVML says this process and its children (vLLM's workers) hold on the CUDA
    devices given, CUDA contexts included. Read after the phase: torch's caching allocator (vLLM's KV cache too)
    keeps what it reserved until told to free it, so what they hold then is their peak. {} without NVML."""
    import psutil

    cuda_devices = list(cuda_devices)
    if not cuda_devices:
        return {}
    ours = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    try:
        with session() as pynvml:
            used = sum(process.usedGpuMemory or 0
                       for _, handle in handles(pynvml, cuda_devices)
                       for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if process.pid in ours)
    except (ImportError, OSError):
        return {}
    return {"peak_device_mib": used / 2**20}
