"""Quality scenario: score a task on the backend's loaded weights (the same weights the speed scenarios timed)."""

import time

from harness.backends.base import Backend
from harness.errors import ConfigError
from harness.measure.recorder import Recorder
from harness.quality import scoring, tasks

NEEDS = {"multiple_choice": "loglikelihood", "perplexity": "loglikelihood", "generation": "generation",
         "code": "generation"}


def run_quality(backend: Backend, params: dict, recorder: Recorder) -> None:
    task = tasks.load_task(params["task"])
    if NEEDS[task.scoring] not in backend.capabilities:
        raise ConfigError(f"backend {backend.name} cannot do {NEEDS[task.scoring]}, which task {task.name} needs")
    prepared = tasks.prepare(task, params["limit"] or None, params["seed"])
    started = time.perf_counter()
    scores = scoring.score(prepared, backend, params["seed"])
    seconds = time.perf_counter() - started
    figure_params = {"limit": len(prepared.examples), "seed": params["seed"], "shots": task.fewshot.count}
    if params["engine"]:
        figure_params["engine_step"] = params["engine"]["step"]
    for score in scores:
        recorder.figure(score.metric, score.samples, figure_params, value=score.value, stderr=score.stderr,
                        examples_sha256=prepared.examples_sha256, **score.extra)
    recorder.figure("eval_s", [seconds], figure_params)
