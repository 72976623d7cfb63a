"""All-reduce bandwidth between this machine's GPUs (NCCL), measured: the interconnect claim's figure.

One process per rank, started here on 127.0.0.1 (torch.distributed's env:// rendezvous); every rank runs the same
fixed number of warm-up and timed all-reduces of each message size (a barrier before each, the device synchronised
around it), and rank 0's times are reported. Bus bandwidth follows nccl-tests: algbw = bytes / seconds, and
busbw = algbw x 2 (n - 1) / n, the rate each link carries in a ring all-reduce of n ranks, comparable with a
datasheet's per-GPU interconnect bandwidth. The gloo backend runs the same code between CPU processes (the tests).

    python -m harness.measure.interconnect RANK WORLD BACKEND PORT SIZES_JSON WARMUP REPETITIONS
"""

import json
import os
import subprocess
import sys
import time

from harness.backends.server import free_port

SIZES_MIB = (1, 16, 256)
WARMUP, REPETITIONS = 2, 10


def bus_bandwidth_gbps(message_bytes: int, seconds: float, world_size: int) -> float:
    return message_bytes / seconds / 1e9 * 2 * (world_size - 1) / world_size


def measure_allreduce(world_size: int, backend: str = "nccl", sizes_mib: tuple[int, ...] = SIZES_MIB,
                      warmup: int = WARMUP, repetitions: int = REPETITIONS, timeout_s: float = 600) -> dict:
    """Seconds of each timed all-reduce, per message size in MiB (rank 0's clock)."""
    port = str(free_port())
    command = [sys.executable, "-m", "harness.measure.interconnect"]
    ranks = [subprocess.Popen([*command, str(rank), str(world_size), backend, port, json.dumps(list(sizes_mib)),
                               str(warmup), str(repetitions)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL) for rank in range(world_size)]
    try:
        outputs = [rank.communicate(timeout=timeout_s) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    for index, (rank, (_, err)) in enumerate(zip(ranks, outputs, strict=True)):
        if rank.returncode != 0:
            last = [line for line in err.splitlines() if line.strip()][-1:] or ["(no output)"]
            raise RuntimeError(f"all-reduce rank {index} of {world_size} ({backend}) failed: {last[0][:300]}")
    return {int(size): seconds for size, seconds in json.loads(outputs[0][0].splitlines()[-1]).items()}


def _rank(rank: int, world_size: int, backend: str, port: str, sizes_mib: list[int], warmup: int,
          repetitions: int) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    cuda = backend == "nccl"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    results = {}
    for size in sizes_mib:
        tensor = torch.ones(size * 2**20 // 4, dtype=torch.float32, device=device)
        seconds = []
        for index in range(warmup + repetitions):  # the same count on every rank: no rank waits forever
            dist.barrier()
            sync()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            sync()
            if index >= warmup:
                seconds.append(time.perf_counter() - start)
        results[size] = seconds
    dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(results))


if __name__ == "__main__":
    rank_, world_, backend_, port_, sizes_, warmup_, repetitions_ = sys.argv[1:8]
    _rank(int(rank_), int(world_), backend_, port_, json.loads(sizes_), int(warmup_), int(repetitions_))
