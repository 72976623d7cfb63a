"""Quality scenario: score a task on the backend's loaded weights (the same weights the speed scenarios timed)."""

from collections import Counter

from harness.backends.base import Backend
from harness.errors import ConfigError
from harness.measure.recorder import Recorder
from harness.measure.stats import bootstrap_stderr
from harness.quality import mmlu


def run_quality(backend: Backend, params: dict, recorder: Recorder) -> None:
    if "loglikelihood" not in backend.capabilities:
        raise ConfigError(f"backend {backend.name} cannot score log-likelihoods, which task {params['task']} needs")
    questions = mmlu.select(mmlu.parse(mmlu.data_path(progress=False)), params["limit"], params["seed"])
    chosen = mmlu.picks(backend.loglikelihood(mmlu.requests(questions)))
    correct = [int(pick == q.answer) for pick, q in zip(chosen, questions, strict=True)]
    recorder.figure(
        "accuracy", correct, {"limit": params["limit"], "seed": params["seed"], "shots": 0},
        value=sum(correct) / len(correct),
        stderr=bootstrap_stderr(correct, seed=params["seed"]),
        examples_sha256=mmlu.examples_hash(questions),
        choice_counts=dict(Counter(mmlu.LETTERS[p] for p in chosen)),
    )
