"""Parity and speed of bench's MMLU scoring against lm-evaluation-harness, on the same model, questions and prompts.

lm-eval runs in its own virtual environment (it pins other packages than bench), in a subprocess, reading a task
YAML written here that points at a local JSONL holding bench's exact prompts. Both sides score with the model in
fp32 on the CPU. The two are timed alternately (lm-eval, bench, lm-eval, bench, ...) because this machine's speed
drifts; each side's time excludes model loading. Prints agreement per question, both accuracies, the largest
log-likelihood difference and the time ratio bench / lm-eval (target <= 0.5).

    python3 -m venv /work/lmeval-venv && /work/lmeval-venv/bin/pip install torch==2.13.0 'lm-eval[hf]'
    .venv/bin/python benchmarks/lm_eval_parity.py --limit 200 --rounds 2
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

TASK_NAME = "bench_mmlu_parity"
DRIVER = textwrap.dedent('''
    import json, sys, time
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model_path, task_dir, batch_size, out_path = sys.argv[1:5]
    lm = HFLM(pretrained=model_path, dtype="float32", device="cpu", batch_size=int(batch_size))
    manager = TaskManager(include_path=task_dir)
    start = time.perf_counter()
    result = simple_evaluate(model=lm, tasks=["{task}"], task_manager=manager, log_samples=True, num_fewshot=0)
    seconds = time.perf_counter() - start
    samples = []
    for sample in sorted(result["samples"]["{task}"], key=lambda s: s["doc_id"]):
        arguments = sample["arguments"]
        if isinstance(arguments, dict):  # newer lm-eval: {{"gen_args_0": {{"arg_0": ctx, "arg_1": cont}}, ...}}
            arguments = [[a["arg_0"], a["arg_1"]] for a in arguments.values()]
        samples.append({{"doc_id": sample["doc_id"], "requests": arguments,
                         "loglikelihoods": [float(r[0]) for r in sample["filtered_resps"]]}})
    acc = result["results"]["{task}"]["acc,none"]
    json.dump({{"seconds": seconds, "acc": acc, "samples": samples}}, open(out_path, "w"))
''').format(task=TASK_NAME)


def write_lm_eval_task(folder: Path, prepared) -> None:
    with open(folder / "data.jsonl", "w") as out:
        for context, example in zip(prepared.contexts, prepared.examples, strict=True):
            out.write(json.dumps({"prompt": context, "answer": example["answer"]}) + "\n")
    (folder / f"{TASK_NAME}.yaml").write_text(textwrap.dedent(f"""\
        task: {TASK_NAME}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {folder / "data.jsonl"}
        test_split: test
        output_type: multiple_choice
        doc_to_text: "{{{{prompt}}}}"
        doc_to_choice: ["A", "B", "C", "D"]
        doc_to_target: answer
        target_delimiter: " "
        metric_list:
          - metric: acc
        """))


def run_lm_eval(python: str, model_path: Path, folder: Path, batch_size: int) -> dict:
    out = folder / "lm_eval_result.json"
    (folder / "driver.py").write_text(DRIVER)
    done = subprocess.run([python, str(folder / "driver.py"), str(model_path), str(folder), str(batch_size),
                           str(out)], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                               "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    if done.returncode != 0:
        raise SystemExit(f"lm-eval failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mmlu", choices=["mmlu", "mmlu_5shot"],
                        help="bench's task; its full prompts (shots included) are given to lm-eval as 0-shot text")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lm-eval-batch-size", type=int, default=1, help="lm-eval's batch size (its default: 1)")
    parser.add_argument("--lm-eval-python", default="/work/lmeval-venv/bin/python")
    args = parser.parse_args()

    from harness import zoo
    from harness.backends.transformers import TransformersBackend
    from harness.quality import scoring, tasks

    model = zoo.resolve("smollm2-135m")
    prepared = tasks.prepare(tasks.load_task(args.task), limit=args.limit, seed=1234)
    backend = TransformersBackend()
    backend.load(model.path, "cpu", "fp32", {})
    folder = Path(tempfile.mkdtemp(prefix="lm-eval-parity-"))
    write_lm_eval_task(folder, prepared)
    requests = [[context, choice] for context in prepared.contexts for choice in prepared.task.choices]

    bench_times, lm_eval_times = [], []
    for _ in range(args.rounds):
        lm_eval = run_lm_eval(args.lm_eval_python, model.path, folder, args.lm_eval_batch_size)
        lm_eval_times.append(lm_eval["seconds"])
        start = time.perf_counter()
        accuracy = scoring.score(prepared, backend, seed=1234)[0]
        bench_times.append(time.perf_counter() - start)

    lm_eval_requests = [pair for sample in lm_eval["samples"] for pair in sample["requests"]]
    lm_eval_lls = [ll for sample in lm_eval["samples"] for ll in sample["loglikelihoods"]]
    lm_eval_picks = [max(range(4), key=lambda j, s=s: s["loglikelihoods"][j]) for s in lm_eval["samples"]]
    bench_lls = [ll for ll, _ in backend.loglikelihood([tuple(r) for r in requests])]
    agree = sum(a == b for a, b in zip(accuracy.extra["picks"], lm_eval_picks, strict=True))
    bench_median, lm_eval_median = statistics.median(bench_times), statistics.median(lm_eval_times)
    print(f"SmolLM2-135M fp32 on CPU, {len(prepared.examples)} questions of {args.task} (seed 1234), "
          f"lm-eval batch size {args.lm_eval_batch_size}, {args.rounds} interleaved rounds")
    print(f"identical requests (context, continuation): {lm_eval_requests == requests}")
    print(f"per-question choice agreement: {agree}/{len(prepared.examples)}")
    print(f"accuracy: bench {accuracy.value:.4f}  lm-eval {lm_eval['acc']:.4f}")
    largest = max(abs(a - b) for a, b in zip(bench_lls, lm_eval_lls, strict=True))
    print(f"max |log-likelihood difference|: {largest:.2e}")
    print(f"scoring seconds: bench {', '.join(f'{t:.1f}' for t in bench_times)} (median {bench_median:.1f}); "
          f"lm-eval {', '.join(f'{t:.1f}' for t in lm_eval_times)} (median {lm_eval_median:.1f})")
    print(f"ratio bench / lm-eval: {bench_median / lm_eval_median:.3f}  (target <= 0.5)")


if __name__ == "__main__":
    main()
