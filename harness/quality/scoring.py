"""Scoring methods (METRICS.md acc.v1, em.v1, ppl.v1; pass@1): a prepared task and a backend in, figures out.

Every figure comes with its per-example samples and a bootstrap standard error over the examples.
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np

from harness.measure.intervals import pooled
from harness.measure.stats import bootstrap_stderr
from harness.quality.tasks import Prepared


@dataclass
class Score:
    metric: str
    value: float
    samples: list[float]
    stderr: float
    extra: dict = field(default_factory=dict)


def _mean_score(metric: str, samples: list[float], seed: int, **extra) -> Score:
    return Score(metric, float(np.mean(samples)), samples, bootstrap_stderr(samples, seed=seed), extra)


def multiple_choice(prepared: Prepared, backend, seed: int) -> list[Score]:
    """acc: the choice with the highest summed log-likelihood; acc_norm: the highest per character of the choice's
    text, as lm-evaluation-harness divides (the continuation less its leading space: lm-eval's target delimiter)."""
    task, k = prepared.task, len(prepared.task.choices)
    requests = [(context, template.format(**example))
                for context, example in zip(prepared.contexts, prepared.examples, strict=True)
                for template in task.choices]
    scored = [logprob for logprob, _ in backend.loglikelihood(requests)]
    picks, picks_norm = [], []
    for index in range(len(prepared.examples)):
        lls = scored[index * k:(index + 1) * k]
        picks.append(max(range(k), key=lambda j, lls=lls: lls[j]))  # first on ties
        picks_norm.append(normalized_pick(lls, [continuation for _, continuation in requests[index * k:
                                                                                               (index + 1) * k]]))
    golds = [example[task.answer_field] for example in prepared.examples]
    return [choice_score("accuracy", picks, golds, k, seed), choice_score("acc_norm", picks_norm, golds, k, seed)]


def choice_characters(continuation: str) -> int:
    """Characters (code points, not bytes) of a choice's text: its continuation without the one leading space that
    separates it from the question. Never 0, so an empty choice divides by 1."""
    return max(1, len(continuation[1:] if continuation.startswith(" ") else continuation))


def normalized_pick(lls: list[float], continuations: list[str]) -> int:
    """acc_norm's pick: the highest log-likelihood per character of the choice's text (the first on ties)."""
    return max(range(len(lls)), key=lambda j: lls[j] / choice_characters(continuations[j]))


# A run is degenerate when one choice takes more than this share of the picks.
DEGENERATE_SHARE = 0.8


def choice_score(metric: str, picks: list[int], golds: list[int], k: int, seed: int) -> Score:
    """The share of right picks, with what says whether it means anything: how often each choice was picked, the
    accuracy of always picking the most frequent gold answer (by index) and the `degenerate` flag: one choice takes
    more than DEGENERATE_SHARE of the picks, or the score is not above that baseline by more than its bootstrap
    standard error (within it, or below it: a score under a constant answer's says no more about the model)."""
    score = _mean_score(metric, [float(pick == gold) for pick, gold in zip(picks, golds, strict=True)], seed,
                        picks=picks)
    counts = [picks.count(j) for j in range(k)]
    baseline = max(golds.count(j) for j in range(k)) / len(golds)
    top_share = max(counts) / len(picks)
    score.extra.update(choice_counts={str(j): count for j, count in enumerate(counts)}, top_choice_share=top_share,
                       majority_baseline=baseline,
                       degenerate=top_share > DEGENERATE_SHARE or score.value - baseline <= score.stderr)
    return score


def extract(text: str, pattern: str | None) -> str:
    """The answer in a completion: the first match of the task's regex (its group 1 if it has one), else the
    stripped completion; "" when the regex finds nothing."""
    if not pattern:
        return text.strip()
    found = re.search(pattern, text)
    if not found:
        return ""
    return (found.group(1) if found.groups() else found.group(0)).strip()


def generation(prepared: Prepared, backend, seed: int) -> list[Score]:
    task = prepared.task
    completions = backend.generate_text(prepared.contexts, task.max_new_tokens, list(task.stop))
    matches = [float(extract(completion, task.extract) == str(example[task.answer_field]).strip())
               for completion, example in zip(completions, prepared.examples, strict=True)]
    tokens = [float(n) for n in backend.count_tokens(completions)]
    budget = {"max_new_tokens": task.max_new_tokens, "stop": list(task.stop)}  # what capped each answer
    return [_mean_score("exact_match", matches, seed, completions=completions[:5]),
            _mean_score("tokens_per_answer", tokens, seed, **budget)]


def perplexity(prepared: Prepared, backend, seed: int) -> list[Score]:
    """Token perplexity exp(-sum log p / tokens) and bits per byte -sum log p / (ln 2 x UTF-8 bytes), pooled over
    the documents; the standard error resamples documents. Beside each, what a model that knew nothing would score
    (`uniform`: every token of the prompt pool equally likely), so a figure says how far from no knowledge it is."""
    texts = [example[prepared.task.text_field] for example in prepared.examples]
    scored = backend.loglikelihood_rolling(texts)
    logprobs = np.array([logprob for logprob, _ in scored])
    tokens = np.array([count for _, count in scored], dtype=float)
    sizes = np.array([len(text.encode()) for text in texts], dtype=float)

    def ppl(indexes):
        return float(pooled("perplexity", -logprobs[indexes], tokens[indexes], sizes[indexes]))

    def bpb(indexes):
        return float(pooled("bits_per_byte", -logprobs[indexes], tokens[indexes], sizes[indexes]))

    everything = np.arange(len(texts))
    per_doc = [float(-lp / count) for lp, count in zip(logprobs, tokens, strict=True)]
    # Each document's counts beside its mean NLL (the samples), so the interval can be bootstrapped from the row.
    extra = {"tokens": int(tokens.sum()), "bytes": int(sizes.sum()), "doc_tokens": [int(t) for t in tokens],
             "doc_bytes": [int(b) for b in sizes]}
    vocabulary = len(backend.prompt_token_pool())
    uniform_bpb = math.log2(vocabulary) * tokens.sum() / sizes.sum()
    return [Score("perplexity", ppl(everything), per_doc, bootstrap_stderr(per_doc, seed, statistic=ppl),
                  {**extra, "uniform": float(vocabulary)}),
            Score("bits_per_byte", bpb(everything), per_doc, bootstrap_stderr(per_doc, seed, statistic=bpb),
                  {**extra, "uniform": float(uniform_bpb)})]


def code(prepared: Prepared, backend, seed: int) -> list[Score]:
    """pass@1 with greedy decoding: the completion runs against the problem's tests in the sandbox."""
    from harness.quality import code as humaneval

    problems = [humaneval.Problem(**{k: e[k] for k in humaneval.Problem.__dataclass_fields__})
                for e in prepared.examples]
    completions = backend.generate_text([p.prompt for p in problems], prepared.task.max_new_tokens,
                                        humaneval.STOP_SEQUENCES)
    outcomes = [humaneval.check(problem, completion) for problem, completion in zip(problems, completions,
                                                                                      strict=True)]
    passed = [float(outcome.passed) for outcome in outcomes]
    reasons = {}
    for outcome in outcomes:
        reasons[outcome.reason.split(":")[0]] = reasons.get(outcome.reason.split(":")[0], 0) + 1
    return [_mean_score("pass_at_1", passed, seed, outcomes=reasons)]


SCORERS = {"multiple_choice": multiple_choice, "generation": generation, "perplexity": perplexity, "code": code}


def score(prepared: Prepared, backend, seed: int) -> list[Score]:
    return SCORERS[prepared.task.scoring](prepared, backend, seed)
