"""Parity and speed of bench's MMLU scoring against lm-evaluation-harness, on the same model, questions and prompts.

bench picks the questions (its `mmlu` task, seed 1234) and writes them with their full prompts to
benchmarks/lm_eval_task/data.jsonl, next to an lm-eval task YAML that reads that file (`output_type:
multiple_choice`, choices A-D with `target_delimiter: " "`, so the continuations are " A" .. " D", 0-shot). lm-eval
runs in its own virtual environment (it pins other packages than bench), in a subprocess, through a small driver
that builds HFLM first and then times `simple_evaluate(..., log_samples=True)`. bench runs in process:
TransformersBackend loaded once, then `scoring.score` timed. Both sides run SmolLM2-135M on the CPU in the same
dtype (--dtype; by default what bench picks here: bf16 on CPUs with native bf16, else fp32).

Runs are interleaved (per round: lm-eval at each batch size, each followed by bench) because this machine's speed
drifts; medians are reported. Checks, per question, that lm-eval's logged (context, continuation) requests equal
bench's, that both pick the same letter, and how far apart the log-likelihoods are. Exits 1 if any check fails.

    python3 -m venv /work/lmeval-venv && /work/lmeval-venv/bin/pip install torch==2.13.0 lm-eval
    .venv/bin/python benchmarks/lm_eval_parity.py --limit 200 --rounds 2 --batch-sizes 1,16
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness.backends.server import TORCH_DTYPE_NAMES

TASK_NAME = "bench_mmlu_parity"
DTYPES = ("bf16", "fp32")  # what both sides are compared in on a CPU
TASK_DIR = Path(__file__).resolve().parent / "lm_eval_task"
# In fp32, log-likelihoods of the two sides differ by float rounding only (different batch shapes and kernels);
# anything larger means different tokens or positions. In bf16 there is no such bound: lm-eval takes the
# log-softmax in the model's dtype (bench in fp32), and bf16 rounding in 30 layers depends on the batch shape, so
# differences of tenths are normal; the identical requests are what show the same tokens and positions there.
LL_TOLERANCE = {"fp32": 1e-3, "bf16": None}

# Runs under lm-eval's Python. argv: model path, task folder, task name, batch size, output JSON.
DRIVER = '''\
import json, sys, time

import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

model_path, task_dir, task, batch_size, out_path, dtype = sys.argv[1:7]
start = time.perf_counter()
lm = HFLM(pretrained=model_path, dtype=dtype, device="cpu", batch_size=int(batch_size))
load_s = time.perf_counter() - start
manager = TaskManager(include_path=task_dir)

# Time the model's own loglikelihood call too (what bench's backend.loglikelihood is to bench's scoring).
scoring = []
plain = lm.loglikelihood
def timed(requests, *args, **kwargs):
    begin = time.perf_counter()
    try:
        return plain(requests, *args, **kwargs)
    finally:
        scoring.append(time.perf_counter() - begin)
lm.loglikelihood = timed

start = time.perf_counter()
result = simple_evaluate(model=lm, tasks=[task], task_manager=manager, log_samples=True, num_fewshot=0)
evaluate_s = time.perf_counter() - start

samples = []
for sample in sorted(result["samples"][task], key=lambda s: s["doc_id"]):
    arguments = sample["arguments"]
    if isinstance(arguments, dict):  # some lm-eval versions: {"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}
        arguments = [[a["arg_0"], a["arg_1"]] for a in arguments.values()]
    samples.append({"doc_id": sample["doc_id"], "requests": [list(a) for a in arguments],
                    "loglikelihoods": [float(r[0]) for r in sample["filtered_resps"]],
                    "greedy": [bool(r[1]) for r in sample["filtered_resps"]], "acc": float(sample["acc"])})
import lm_eval, transformers
json.dump({"load_s": load_s, "evaluate_s": evaluate_s, "loglikelihood_s": sum(scoring),
           "acc": result["results"][task]["acc,none"], "samples": samples,
           "versions": {"lm_eval": lm_eval.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__}, "torch_threads": torch.get_num_threads()},
          open(out_path, "w"))
'''


def write_lm_eval_task(prepared) -> None:
    """The selected questions with bench's full prompts, and an lm-eval task that reads them verbatim."""
    TASK_DIR.mkdir(exist_ok=True)
    (TASK_DIR / ".gitignore").write_text("*\n")  # everything here is generated at run time
    with open(TASK_DIR / "data.jsonl", "w") as out:
        for context, example in zip(prepared.contexts, prepared.examples, strict=True):
            # Each choice as bench continues the context, less the leading space lm-eval's target delimiter adds.
            choices = [template.format(**example).removeprefix(" ") for template in prepared.task.choices]
            out.write(json.dumps({"prompt": context, "answer": example["answer"], "choices": choices}) + "\n")
    # doc_to_text names a field, so lm-eval takes the prompt as is (no template rendering).
    (TASK_DIR / f"{TASK_NAME}.yaml").write_text(textwrap.dedent(f"""\
        task: {TASK_NAME}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {TASK_DIR / "data.jsonl"}
        test_split: test
        output_type: multiple_choice
        num_fewshot: 0
        doc_to_text: prompt
        doc_to_choice: choices
        doc_to_target: answer
        target_delimiter: " "
        metric_list:
          - metric: acc
        """))
    (TASK_DIR / "driver.py").write_text(DRIVER)


def lm_eval_env() -> dict:
    """lm-eval's subprocess environment: offline, nothing of this venv's."""
    return {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}


def run_lm_eval(python: str, model_path: Path, batch_size: int, dtype: str) -> dict:
    out = TASK_DIR / f"result_bs{batch_size}.json"
    start = time.perf_counter()
    done = subprocess.run([python, str(TASK_DIR / "driver.py"), str(model_path), str(TASK_DIR), TASK_NAME,
                           str(batch_size), str(out), TORCH_DTYPE_NAMES[dtype]], capture_output=True, text=True,
                          env=lm_eval_env())
    wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lm-eval failed (batch size {batch_size}):\n{done.stderr[-3000:]}")
    return {**json.loads(out.read_text()), "wall_s": wall_s}


class Recording:
    """bench's backend, keeping the requests it was given and what it returned."""

    def __init__(self, backend):
        self.backend = backend

    def loglikelihood(self, requests):
        self.requests = [list(r) for r in requests]
        self.results = self.backend.loglikelihood(requests)
        return self.results


def first_max(values: list[float]) -> int:
    return max(range(len(values)), key=lambda j: values[j])


def seconds(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"


def compare(label: str, runs: list[dict], bench_requests: list, bench_results: list, bench_picks: list,
            k: int, dtype: str) -> bool:
    """Prints how lm-eval's last run at one batch size agrees with bench; True when everything matches."""
    samples = runs[-1]["samples"]
    n = len(bench_picks)
    same_requests = [s["requests"] == bench_requests[i * k:(i + 1) * k] for i, s in enumerate(samples)]
    lm_picks = [first_max(s["loglikelihoods"]) for s in samples]
    lm_lls = [ll for s in samples for ll in s["loglikelihoods"]]
    lm_greedy = [g for s in samples for g in s["greedy"]]
    diffs = [abs(a - b) for a, (b, _) in zip(lm_lls, bench_results, strict=True)]
    agree = sum(a == b for a, b in zip(lm_picks, bench_picks, strict=True))
    greedy_same = sum(a == g for a, (_, g) in zip(lm_greedy, bench_results, strict=True))
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    print(f"  {label}:")
    print(f"    questions whose (context, continuation) requests equal bench's: {sum(same_requests)}/{n}")
    print(f"    per-question choice agreement: {agree}/{n}")
    print(f"    max |log-likelihood difference|: {diffs[worst]:.2e} (question {worst // k}, choice "
          f"{'ABCD'[worst % k]}); mean {statistics.fmean(diffs):.2e}")
    print(f"    is_greedy flags equal: {greedy_same}/{len(diffs)}")
    for i in [i for i, same in enumerate(same_requests) if not same][:3]:
        print(f"    request mismatch, question {i}: lm-eval {samples[i]['requests'][0]!r} "
              f"bench {bench_requests[i * k]!r}")
    for i in [i for i in range(n) if lm_picks[i] != bench_picks[i]][:5]:
        print(f"    choice mismatch, question {i}: lm-eval {samples[i]['loglikelihoods']} "
              f"bench {[ll for ll, _ in bench_results[i * k:(i + 1) * k]]}")
    tolerance = LL_TOLERANCE[dtype]
    print(f"    log-likelihood tolerance: {tolerance if tolerance is not None else f'none in {dtype} (reported only)'}")
    return all(same_requests) and agree == n and (tolerance is None or diffs[worst] <= tolerance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mmlu", choices=["mmlu", "mmlu_5shot", "mmlu_cloze"],
                        help="bench's task; its full prompts (shots included) are given to lm-eval as 0-shot text")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,16",
                        help="lm-eval batch sizes, comma-separated; the first is the main comparison (lm-eval's "
                             "default is 1)")
    parser.add_argument("--lm-eval-python", default="/work/lmeval-venv/bin/python")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="both sides' dtype [auto: what bench picks on this CPU, bf16 where it has native bf16 "
                             "(AMX, AVX512-BF16), else fp32]")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import torch

    from harness import zoo
    from harness.backends.transformers import TransformersBackend
    from harness.hardware import auto_dtype
    from harness.quality import scoring, tasks

    dtype = auto_dtype("cpu") if args.dtype == "auto" else args.dtype
    model = zoo.resolve("smollm2-135m")
    prepared = tasks.prepare(tasks.load_task(args.task), limit=args.limit, seed=1234)
    k = len(prepared.task.choices)
    write_lm_eval_task(prepared)

    backend = TransformersBackend()
    start = time.perf_counter()
    backend.load(model.path, "cpu", dtype, {})
    bench_load_s = time.perf_counter() - start
    recording = Recording(backend)

    lm_eval_runs: dict[int, list[dict]] = {b: [] for b in batch_sizes}
    bench_times: list[float] = []
    for round_ in range(args.rounds):
        for batch_size in batch_sizes:
            run = run_lm_eval(args.lm_eval_python, model.path, batch_size, dtype)
            lm_eval_runs[batch_size].append(run)
            start = time.perf_counter()
            accuracy = scoring.score(prepared, recording, seed=1234)[0]
            bench_times.append(time.perf_counter() - start)
            print(f"round {round_ + 1}: lm-eval bs {batch_size} evaluate {run['evaluate_s']:.2f} s "
                  f"(wall {run['wall_s']:.2f} s); bench score {bench_times[-1]:.2f} s", file=sys.stderr)

    first = lm_eval_runs[batch_sizes[0]][-1]
    print(f"SmolLM2-135M ({model.path}) {dtype} on CPU, {len(prepared.examples)} questions of bench task "
          f"{args.task!r} (seed 1234), 0-shot in lm-eval")
    print(f"lm-eval {first['versions']['lm_eval']} (transformers {first['versions']['transformers']}, torch "
          f"{first['versions']['torch']}, {first['torch_threads']} threads); bench: transformers "
          f"{backend.info().backend_version}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.rounds} rounds, interleaved: " + ", ".join(f"lm-eval bs {b}, bench" for b in batch_sizes))
    print()
    print("Parity (last run of each side):")
    ok = all(compare(f"lm-eval batch size {b}", lm_eval_runs[b], recording.requests, recording.results,
                     accuracy.extra["picks"], k, dtype) for b in batch_sizes)
    lm_accs = [f"{runs[-1]['acc']:.4f} (bs {b})" for b, runs in lm_eval_runs.items()]
    same_acc = all(runs[-1]["acc"] == accuracy.value for runs in lm_eval_runs.values())
    ok = ok and same_acc
    print(f"  accuracy: bench {accuracy.value:.4f}; lm-eval {', '.join(lm_accs)}; identical: {same_acc}")
    per_question = all(s["acc"] == a for runs in lm_eval_runs.values()
                       for s, a in zip(runs[-1]["samples"], accuracy.samples, strict=True))
    print(f"  per-question correctness identical: {per_question}")
    ok = ok and per_question
    print()
    print("Time (medians over rounds):")
    bench_s = statistics.median(bench_times)
    print(f"  bench   model load               {bench_load_s:6.2f} s  (once, in process)")
    print(f"  bench   scoring.score            {seconds(bench_times)}")
    for b, runs in lm_eval_runs.items():
        print(f"  lm-eval bs {b:<3} HFLM load          {seconds([r['load_s'] for r in runs])}")
        print(f"  lm-eval bs {b:<3} simple_evaluate    {seconds([r['evaluate_s'] for r in runs])}")
        print(f"  lm-eval bs {b:<3}   of which loglikelihood() {seconds([r['loglikelihood_s'] for r in runs])}")
        print(f"  lm-eval bs {b:<3} subprocess wall    {seconds([r['wall_s'] for r in runs])}")
    print()
    print("Ratio bench / lm-eval (target <= 0.5 against simple_evaluate, model load excluded on both sides):")
    for b, runs in lm_eval_runs.items():
        evaluate = statistics.median([r["evaluate_s"] for r in runs])
        loglikelihood = statistics.median([r["loglikelihood_s"] for r in runs])
        wall = statistics.median([r["wall_s"] for r in runs])
        print(f"  bs {b:<3} scoring / simple_evaluate {bench_s / evaluate:.3f}; scoring / loglikelihood() "
              f"{bench_s / loglikelihood:.3f}; (load + scoring) / subprocess wall "
              f"{(bench_load_s + bench_s) / wall:.3f}")
    print()
    print("PARITY OK" if ok else "PARITY FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
