"""What the GPU tests hold bench's figures against, read from outside bench's code: the card as NVML (the driver)
reports it, the datasheet figures of the shipped profile files, and `bench run` folders, kept under $BENCH_GPU_OUT
when it is set (benchmarks/gpu_check.sh collects them from there), else in pytest's temporary folder."""

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness import zoo
from harness.cli import main
from harness.results.store import read_rows

PROFILES = Path(__file__).resolve().parents[2] / "hardware_profiles"
MIB = 2**20
EIGHT_B = "llama3.1-8b-shape"


@contextlib.contextmanager
def nvml_device():
    """NVML and its handle of the GPU the runs compute on, CUDA device 0: NVML counts every GPU in PCI order and
    ignores CUDA_VISIBLE_DEVICES, so the two are matched by UUID (torch's and NVML's, read here)."""
    import pynvml  # nvidia-ml-py, the `gpu` extra
    import torch

    uuid = str(torch.cuda.get_device_properties(0).uuid).lower()
    pynvml.nvmlInit()
    try:
        found = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        named = {_text(pynvml.nvmlDeviceGetUUID(handle)).lower().removeprefix("gpu-"): handle for handle in found}
        yield pynvml, named[uuid.removeprefix("gpu-")]
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Card:
    name: str  # NVML's name of the GPU, e.g. "NVIDIA H200"
    memory_bytes: int  # NVML's total memory (an H200: 143,771 MiB, 150.75 GB)


@pytest.fixture(scope="session")
def card() -> Card:
    with nvml_device() as (nvml, handle):
        name = nvml.nvmlDeviceGetName(handle)
        return Card(_text(name), nvml.nvmlDeviceGetMemoryInfo(handle).total)


def nvml_used_bytes(pid: int) -> tuple[int, str]:
    """Device memory NVML counts for process `pid`, and whose it is; where NVML lists no such process (a PID
    namespace hides it), all the device's used memory, which holds the process's too."""
    with nvml_device() as (nvml, handle):
        mine = [p.usedGpuMemory for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                if p.pid == pid and p.usedGpuMemory]
        if mine:
            return sum(mine), f"process {pid}"
        return nvml.nvmlDeviceGetMemoryInfo(handle).used, f"the whole device (NVML lists no process {pid})"


def shipped_profiles() -> dict[str, dict]:
    return {path.stem: yaml.safe_load(path.read_text()) for path in sorted(PROFILES.glob("*.yaml"))}


def expected_profile(card: Card) -> str:
    """The profile this card is to be detected as. An H200 SXM is named "NVIDIA H200" by NVIDIA's driver (the PCIe
    card "NVIDIA H200 NVL"); any other card is held to the one shipped GPU profile whose `match` (name pattern and
    memory range, read from its file) fits it, and skips the test where none or several do."""
    if card.name == "NVIDIA H200":
        return "h200"
    gb = card.memory_bytes / 1e9
    fits = [name for name, doc in shipped_profiles().items() if doc["kind"] == "gpu"
            and re.search(doc["match"]["device_name"], card.name, re.IGNORECASE)
            and (doc["match"].get("memory_gb") is None or doc["match"]["memory_gb"][0] <= gb
                 <= doc["match"]["memory_gb"][1])]
    if len(fits) != 1:
        pytest.skip(f"no single shipped profile fits {card.name!r} ({gb:.2f} GB): {fits or 'none'}")
    return fits[0]


@pytest.fixture(scope="session")
def datasheet(card) -> dict:
    """The expected profile's file: its datasheet figures (memory_bandwidth_gbps, bf16_tflops, power_w)."""
    profile = shipped_profiles()[expected_profile(card)]
    missing = [name for name in ("memory_bandwidth_gbps", "bf16_tflops", "power_w") if profile[name] is None]
    if missing:
        pytest.skip(f"profile {profile['name']} has no datasheet figure for {', '.join(missing)}")
    return profile


@pytest.fixture(scope="session")
def llama8b():
    """The random-weight Llama-3.1-8B shape, built once into the bench cache (gpu_check.sh builds it first, timed)."""
    return zoo.resolve(EIGHT_B, progress=False)


def write_suite(folder: Path, models: list[str], scenarios: list[dict]) -> Path:
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "gpu", "models": models, "scenarios": scenarios, "device": "cuda",
                                    "measure": {"warmup": 1, "repetitions": 5}, "cell_timeout_s": 600}))
    return path


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    if os.environ.get("BENCH_GPU_OUT"):
        root = Path(os.environ["BENCH_GPU_OUT"])
        root.mkdir(parents=True, exist_ok=True)
        return root
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def bench_run(runs_root, tmp_path_factory):
    """Runs `bench run` of a suite on CUDA into a new run folder under runs_root; returns its rows, every cell ok."""
    def run(name: str, models: list[str], scenarios: list[dict]) -> list[dict]:
        out = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=runs_root))
        suite = write_suite(tmp_path_factory.mktemp(name), models, scenarios)
        code = main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"])
        rows = read_rows(out / "rows.jsonl") if (out / "rows.jsonl").exists() else []
        failed = [f"{row['model']} {row['scenario']}: {row['error']}" for row in rows if row["status"] != "ok"]
        assert code == 0 and rows and not failed, f"bench run into {out} exited {code}: {failed}"
        return rows
    return run


def by_line(rows: list[dict]) -> dict:
    """Rows as {(model, scenario, batch_size): {metric: row}}; a cell's figures without a batch size (weights,
    parameter counts, calibration) under batch_size None."""
    lines = {}
    for row in rows:
        lines.setdefault((row["model"], row["scenario"], row["params"].get("batch_size")), {})[row["metric"]] = row
    return lines
