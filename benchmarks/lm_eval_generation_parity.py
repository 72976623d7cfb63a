"""Parity and speed of bench's generation scoring (greedy, stop strings, first-integer extraction, exact match)
against lm-evaluation-harness, on the same model, questions and prompts.

bench picks the questions (its `arithmetic` task: seeded two-step word problems, 3-shot, seed 1234) and writes them
with their full prompts (shots included) to benchmarks/lm_eval_task/generation.jsonl, next to an lm-eval task that
reads that file: `output_type: generate_until`, `until: ["\\n"]`, greedy, `max_gen_toks` from bench's task, a regex
filter taking the first integer, metric `exact_match`, 0-shot (the shots are in the prompt). lm-eval runs in its own
virtual environment in a subprocess; bench runs in process. Runs alternate, medians are reported. Checks, per
question, that both generated the same text (up to the stop string), extracted the same answer and scored the same.

    .venv/bin/python benchmarks/lm_eval_generation_parity.py --limit 50 --rounds 2
"""

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lm_eval_parity import DTYPES, TASK_DIR, lm_eval_env, seconds  # noqa: E402

from harness.backends.server import TORCH_DTYPE_NAMES  # noqa: E402

TASK_NAME = "bench_generation_parity"
DRIVER = '''\
import json, sys, time

import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

model_path, task_dir, task, batch_size, out_path, dtype = sys.argv[1:7]
lm = HFLM(pretrained=model_path, dtype=dtype, device="cpu", batch_size=int(batch_size))
manager = TaskManager(include_path=task_dir)
start = time.perf_counter()
result = simple_evaluate(model=lm, tasks=[task], task_manager=manager, log_samples=True, num_fewshot=0)
evaluate_s = time.perf_counter() - start
samples = [{"doc_id": s["doc_id"], "context": s["arguments"][0][0] if isinstance(s["arguments"], list)
            else s["arguments"]["gen_args_0"]["arg_0"], "response": s["resps"][0][0],
            "extracted": s["filtered_resps"][0], "exact_match": float(s["exact_match"])}
           for s in sorted(result["samples"][task], key=lambda s: s["doc_id"])]
import lm_eval
json.dump({"evaluate_s": evaluate_s, "exact_match": result["results"][task]["exact_match,first_integer"],
           "samples": samples, "lm_eval": lm_eval.__version__}, open(out_path, "w"))
'''


def write_task(prepared) -> None:
    task = prepared.task
    TASK_DIR.mkdir(exist_ok=True)
    (TASK_DIR / ".gitignore").write_text("*\n")
    data = TASK_DIR / "generation.jsonl"
    data.write_text("".join(json.dumps({"prompt": context, "answer": str(example[task.answer_field])}) + "\n"
                            for context, example in zip(prepared.contexts, prepared.examples, strict=True)))
    (TASK_DIR / f"{TASK_NAME}.yaml").write_text(textwrap.dedent(f"""\
        task: {TASK_NAME}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: generate_until
        num_fewshot: 0
        doc_to_text: prompt
        doc_to_target: answer
        generation_kwargs:
          until: {json.dumps(list(task.stop))}
          do_sample: false
          max_gen_toks: {task.max_new_tokens}
        filter_list:
          - name: first_integer
            filter:
              - function: regex
                regex_pattern: {json.dumps(task.extract)}
                group_select: 0
              - function: take_first
        metric_list:
          - metric: exact_match
        """))
    (TASK_DIR / "generation_driver.py").write_text(DRIVER)


def run_lm_eval(python: str, model_path: Path, batch_size: int, dtype: str) -> dict:
    out = TASK_DIR / f"generation_bs{batch_size}.json"
    done = subprocess.run([python, str(TASK_DIR / "generation_driver.py"), str(model_path), str(TASK_DIR),
                           TASK_NAME, str(batch_size), str(out), TORCH_DTYPE_NAMES[dtype]], capture_output=True,
                          text=True, env=lm_eval_env())
    if done.returncode != 0:
        raise SystemExit(f"lm-eval failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arithmetic", help="a bench generation task [arithmetic]")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1, help="lm-eval's (its default: 1)")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES)
    parser.add_argument("--lm-eval-python", default="/work/lmeval-venv/bin/python")
    args = parser.parse_args()

    from harness import zoo
    from harness.backends.transformers import TransformersBackend
    from harness.quality import scoring, tasks

    model = zoo.resolve("smollm2-135m")
    prepared = tasks.prepare(tasks.load_task(args.task), limit=args.limit, seed=1234)
    if prepared.task.scoring != "generation":
        raise SystemExit(f"task {args.task} is scored by {prepared.task.scoring}, not generation")
    write_task(prepared)
    backend = TransformersBackend()
    backend.load(model.path, "cpu", args.dtype, {})
    lm_runs, bench_times = [], []
    for round_ in range(args.rounds):
        lm_runs.append(run_lm_eval(args.lm_eval_python, model.path, args.batch_size, args.dtype))
        start = time.perf_counter()
        completions = backend.generate_text(prepared.contexts, prepared.task.max_new_tokens, list(prepared.task.stop))
        bench_times.append(time.perf_counter() - start)
        print(f"round {round_ + 1}: lm-eval {lm_runs[-1]['evaluate_s']:.2f} s, bench {bench_times[-1]:.2f} s",
              file=sys.stderr)
    extracted = [scoring.extract(c, prepared.task.extract) for c in completions]
    matches = [float(e == str(x[prepared.task.answer_field])) for e, x in zip(extracted, prepared.examples,
                                                                             strict=True)]
    samples = lm_runs[-1]["samples"]
    n = len(samples)
    same_context = sum(s["context"] == c for s, c in zip(samples, prepared.contexts, strict=True))
    # lm-eval cuts at the stop string too; bench's text is what precedes it.
    same_text = sum(s["response"] == c for s, c in zip(samples, completions, strict=True))
    same_answer = sum(s["extracted"] == (e or "[invalid]") for s, e in zip(samples, extracted, strict=True))
    same_score = sum(s["exact_match"] == m for s, m in zip(samples, matches, strict=True))
    bench_em, lm_em = statistics.fmean(matches), lm_runs[-1]["exact_match"]
    print(f"SmolLM2-135M {args.dtype} on CPU, {n} questions of bench task {args.task!r} (seed 1234); lm-eval "
          f"{lm_runs[-1]['lm_eval']} batch size {args.batch_size}; {args.rounds} rounds, interleaved")
    print(f"  prompts identical: {same_context}/{n}; generated text identical: {same_text}/{n}; extracted answers "
          f"identical: {same_answer}/{n}; per-question exact match identical: {same_score}/{n}")
    for i in [i for i in range(n) if samples[i]["response"] != completions[i]][:3]:
        print(f"    text mismatch, question {i}: lm-eval {samples[i]['response']!r} bench {completions[i]!r}")
    print(f"  exact match: bench {bench_em:.4f}, lm-eval {lm_em:.4f}")
    lm_s, bench_s = statistics.median(r["evaluate_s"] for r in lm_runs), statistics.median(bench_times)
    print(f"  bench generate_text     {seconds(bench_times)}")
    print(f"  lm-eval simple_evaluate {seconds([r['evaluate_s'] for r in lm_runs])}")
    print(f"  ratio bench / lm-eval: {bench_s / lm_s:.3f}")
    ok = same_context == same_answer == same_score == n and bench_em == lm_em
    print("PARITY OK" if ok else "PARITY FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
