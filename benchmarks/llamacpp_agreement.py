"""Agreement of bench's llama.cpp figures with llama-bench, llama.cpp's own tool, on the same GGUF and threads.

Starts llama-server (built by .ci/llamacpp_env.sh) on a model's shipped GGUF, then alternates, round by round (the
order flips each round: this machine's speed drifts), between
- llama-bench: prefill as `pp` (-p P -n 0) and decode as `tg` at the same depth as bench's (-p 0 -n N -d P), with
  its --repetitions; each figure is the median of its repetitions' tok/s;
- bench: `--requests` streamed /v1/completions, one at a time, of P seeded synthetic prompt tokens (prompt cache
  off) and N output tokens (EOS ignored); prefill tok/s = P / median TTFT, decode tok/s = 1000 / median TPOT.
Prints each tool's median over rounds, the ratio bench / llama-bench, and the median of the per-round ratios with
its 95% interval (--rounds 6 or more for one that holds 95%). Targets: decode within 5%, prefill within 10%, met
when the whole interval is inside, missed when it is wholly outside, undecided otherwise.

    sh .ci/llamacpp_env.sh
    .venv/bin/python benchmarks/llamacpp_agreement.py --rounds 6

bench's TTFT holds more than llama-bench's pp does: the HTTP exchange, the server's tokenization of the prompt
and the first decode step, which is why prefill is held to 10% and not 5%.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import zoo  # noqa: E402
from harness.backends.llamacpp import SETTINGS, LlamaCppBackend, find_build, llama_server  # noqa: E402
from harness.config import scenario  # noqa: E402
from harness.measure.intervals import median_interval  # noqa: E402
from harness.scenarios.served import PromptSource, _window, window_figures  # noqa: E402

FIGURES = ("prefill_tok_s", "decode_tok_s")
TARGETS = {"prefill_tok_s": 0.10, "decode_tok_s": 0.05}


def run_llama_bench(tool: Path, gguf: Path, args) -> dict:
    """llama-bench's pp and tg medians, in tok/s."""
    common = [str(tool), "-m", str(gguf), "-t", str(args.threads), "-r", str(args.repetitions), "-o", "json"]
    figures = {}
    for name, test in (("prefill_tok_s", ["-p", str(args.prompt_tokens), "-n", "0"]),
                       ("decode_tok_s", ["-p", "0", "-n", str(args.output_tokens), "-d", str(args.prompt_tokens)])):
        done = subprocess.run(common + test, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"llama-bench failed: {done.stderr[-2000:]}")
        figures[name] = statistics.median(json.loads(done.stdout)[0]["samples_ts"])
    return figures


def run_bench(backend: LlamaCppBackend, args, round_index: int) -> tuple[dict, dict]:
    """bench's figures of one window, as the served scenario computes them, and llama-server's own (the medians of
    the `timings` it sends with each response: prompt_per_second, predicted_per_second)."""
    params = {**scenario("served").params, "prompt_tokens": args.prompt_tokens, "output_tokens": args.output_tokens,
              "seed": args.seed}
    warmup, *prompts = PromptSource(backend, params, salt=round_index).take(args.repetitions + 1)
    asyncio.run(_window(backend, params, [warmup], 1, [0.0], prefix_cache="off"))
    streams, seconds = asyncio.run(_window(backend, params, prompts, 1, [0.0] * len(prompts), prefix_cache="off"))
    window = window_figures(streams, seconds, backend.count_tokens, {})
    if window["errors"]:
        sys.exit(f"bench: {dict(window['errors'])}")
    ours = {"prefill_tok_s": args.prompt_tokens / (statistics.median(window["ttft_ms"]) / 1e3),
            "decode_tok_s": 1e3 / statistics.median(window["tpot_ms"])}
    server = {name: statistics.median(s.server_timings[key] for s in streams)
              for name, key in (("prefill_tok_s", "prompt_per_second"), ("decode_tok_s", "predicted_per_second"))}
    return ours, server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a model whose GGUF bench ships [smollm2-135m]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=5, help="llama-bench's -r, and bench's requests [5]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--server-args", default="",
                        help="more llama-server arguments, after the script's own, e.g. \"-np 4 -c 4096\" (bench's "
                             "defaults)")
    args = parser.parse_args()
    model = zoo.resolve(args.model, progress=False)
    gguf = zoo.gguf_file(args.model, str(model.path), progress=False)
    work = Path(tempfile.mkdtemp(prefix="llamacpp-agreement-"))
    # One slot and a context as small as llama-bench's (prompt + output, rounded up to llama.cpp's 256-cell KV
    # padding): bench's default of 4 slots sharing 4096 cells decodes 6-13% slower here (benchmarks/README.md).
    context = -(-(args.prompt_tokens + args.output_tokens) // 256) * 256
    server, details = llama_server(gguf, work / "server.log", ("-t", str(args.threads), "-np", "1", "-c",
                                                               str(context), *args.server_args.split()), 120)
    facts, build = details["facts"], find_build()
    settings = {name: facts[name] for name in SETTINGS}
    with server:
        backend = LlamaCppBackend()
        backend.load(model.path, options={"server": {"base_url": server.base_url, **details}})
        print(f"llama.cpp {build.build_id}, {gguf.name} ({facts['quantization']}), server settings {settings}; "
              f"{args.prompt_tokens} prompt and {args.output_tokens} output tokens, {args.repetitions} repetitions "
              f"a side; {args.rounds} rounds, interleaved", flush=True)
        if args.threads >= len(os.sched_getaffinity(0)):
            print(f"note: {args.threads} threads take every CPU this process may use, so llama-server's queue and "
                  "HTTP threads take turns with its compute threads and its decode falls behind llama-bench's "
                  "(benchmarks/README.md); --threads below the CPUs leaves them a core", flush=True)
        results = {"llama-bench": [], "bench": [], "llama-server": []}
        for round_index in range(args.rounds):
            for side in (("llama-bench", "bench") if round_index % 2 == 0 else ("bench", "llama-bench")):
                if side == "llama-bench":
                    results[side].append(run_llama_bench(build.tool("llama-bench"), gguf, args))
                else:
                    ours, servers_own = run_bench(backend, args, round_index)
                    results["bench"].append(ours)
                    results["llama-server"].append(servers_own)
            print(f"round {round_index + 1}: " + ", ".join(f"{side} {figures[-1]}" for side, figures in
                                                           results.items()), file=sys.stderr, flush=True)
    report(results)
    return 0


def agreement(low: float, high: float, tolerance: float) -> str:
    """met when the paired ratio's whole interval lies within 1 +- tolerance, missed when it lies wholly outside,
    undecided when it reaches across a bound (more rounds, or a quieter machine, would tell)."""
    if 1 - tolerance <= low and high <= 1 + tolerance:
        return "met"
    return "missed" if high < 1 - tolerance or low > 1 + tolerance else "undecided"


def report(results: dict) -> None:
    """bench against llama-bench (the target), and llama-server's own timings of the same requests against both:
    what the server's engine loses to llama-bench, and what the HTTP exchange and client add on top."""
    print(f"{'figure':<14} {'pair':<26} {'medians':>15} {'ratio':>6} {'paired ratio [95% interval]':>28}")
    for name in FIGURES:
        for a, b in (("bench", "llama-bench"), ("llama-server", "llama-bench"), ("bench", "llama-server")):
            ours, theirs = [r[name] for r in results[a]], [r[name] for r in results[b]]
            ratio = statistics.median(ours) / statistics.median(theirs)
            paired = [x / y for x, y in zip(ours, theirs, strict=True)]
            low, high = median_interval(paired) if len(paired) >= 6 else (min(paired), max(paired))
            target = f" {agreement(low, high, TARGETS[name])} (within {TARGETS[name]:.0%})" \
                if (a, b) == ("bench", "llama-bench") else ""
            print(f"{name:<14} {a + ' / ' + b:<26} {statistics.median(ours):>7.1f}/{statistics.median(theirs):<7.1f}"
                  f" {ratio:>6.3f} {statistics.median(paired):>10.3f} [{low:.3f}, {high:.3f}]{target}")


if __name__ == "__main__":
    sys.exit(main())
