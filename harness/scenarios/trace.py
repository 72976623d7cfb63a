"""Traces of arrivals for the served scenario to replay (METRICS.md, served workloads: trace replay): JSONL in
Mooncake's field names, one request a line: `timestamp` (ms), `input_length` and `output_length` (tokens), and
optional `hash_ids` (the prompt's blocks of block_tokens tokens; requests naming an id share that block). Other
fields are ignored. Shipped traces live in tasks/traces/; `python -m harness.scenarios.trace` writes the seeded
sample again.
"""

import json
import math
import random
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import ConfigError
from harness.specs import Count, PositiveInt, refuse, validate

SHIPPED = Path(__file__).resolve().parents[2] / "tasks" / "traces"
MOONCAKE_BLOCK_TOKENS = 512
# The block size of each shipped trace (a trace file from elsewhere: Mooncake's, unless the scenario says).
SHIPPED_BLOCK_TOKENS = {"mooncake_sample": 16}


class TraceRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    timestamp: float = Field(ge=0)
    input_length: PositiveInt
    output_length: PositiveInt
    hash_ids: tuple[Count, ...] = ()


def find_trace(reference: str, base: Path | None = None) -> str:
    """A trace file's path (ending in .jsonl, relative to `base`) or a shipped trace's, as load_trace takes it."""
    path = Path(reference)
    if path.suffix != ".jsonl":
        path = SHIPPED / f"{reference}.jsonl"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.jsonl")))
            raise refuse(f"unknown trace {reference!r}", hint=f"shipped: {known}; or a .jsonl file's path")
        return str(path)
    path = (Path(base or Path.cwd()) / path).resolve()
    if not path.is_file():
        raise refuse(f"trace file {reference} not found (looked for {path})")
    return str(path)


def trace_name(path: str) -> str:
    """What rows call a trace: a shipped one's name, another's file name."""
    return Path(path).stem


def block_tokens(path: str, given: int | None) -> int:
    return given or SHIPPED_BLOCK_TOKENS.get(trace_name(path) if Path(path).parent == SHIPPED else "",
                                             MOONCAKE_BLOCK_TOKENS)


def load_trace(path: str, block: int) -> list[TraceRequest]:
    """The trace's requests in arrival order, timestamps from the first one's; a bad line is one ConfigError naming
    the file and line."""
    requests = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        origin = f"trace {path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{origin}: not JSON ({exc.msg})") from None
        request = validate(TraceRequest, data, origin)
        if request.hash_ids and len(request.hash_ids) != math.ceil(request.input_length / block):
            raise ConfigError(f"{origin}: {len(request.hash_ids)} hash_ids do not make input_length "
                              f"{request.input_length} in blocks of {block} tokens", "set the scenario's block_tokens")
        requests.append(request)
    if not requests:
        raise ConfigError(f"trace {path}: no requests")
    requests.sort(key=lambda r: r.timestamp)
    first = requests[0].timestamp
    return [r.model_copy(update={"timestamp": r.timestamp - first}) for r in requests]


def seeded_trace(count: int = 24, seed: int = 0, rate: float = 4.0, block: int = 16) -> list[dict]:
    """A small Mooncake-style trace: Poisson arrivals at `rate` req/s, prompts of 2-8 blocks of which half the
    requests begin with one of three shared 2-block system prompts, 4-16 output tokens."""
    rng = random.Random(seed)
    next_id, t, lines = 3 * 2, 0.0, []
    for _ in range(count):
        blocks = rng.randint(2, 8)
        shared = rng.randrange(3) if rng.random() < 0.5 else None
        ids = [2 * shared, 2 * shared + 1] if shared is not None else []
        ids += list(range(next_id, next_id + blocks - len(ids)))
        next_id += blocks - (2 if shared is not None else 0)
        lines.append({"timestamp": round(t * 1e3), "input_length": blocks * block - rng.randrange(block),
                      "output_length": rng.randint(4, 16), "hash_ids": ids})
        t += rng.expovariate(rate)
    return lines


if __name__ == "__main__":  # python -m harness.scenarios.trace: write the shipped sample again
    out = SHIPPED / "mooncake_sample.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in seeded_trace()))
    sys.stdout.write(f"written: {out}\n")
