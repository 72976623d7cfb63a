"""MMLU scoring: parsing the shipped file's format, the lm-evaluation-harness prompt, and the pick of answers."""

from pathlib import Path

import pytest

from harness.quality import mmlu

FIXTURE = Path(__file__).parent / "fixtures" / "mmlu_fixture.jsonl"


def test_parse_skips_header_rows_and_reads_answers():
    questions = mmlu.parse(FIXTURE)
    assert len(questions) == 4  # the header row whose answer field reads "answer" is skipped
    assert questions[0].question == "What is the capital of France?"
    assert questions[0].choices[questions[0].answer] == "Paris"
    assert [q.answer for q in questions] == [1, 0, 3, 2]


def test_prompt_is_lm_evaluation_harness_format():
    question = mmlu.parse(FIXTURE)[0]
    assert mmlu.prompt(question) == (
        "The following are multiple choice questions (with answers) about geography.\n\n"
        "What is the capital of France?\nA. Berlin\nB. Paris\nC. Madrid\nD. Rome\nAnswer:"
    )
    assert [c for _, c in mmlu.requests([question])] == [" A", " B", " C", " D"]


def test_picks_choose_the_most_likely_answer_of_each_question():
    loglikelihoods = [(-3.0, False), (-1.0, True), (-2.0, False), (-5.0, False),   # B
                      (-0.5, True), (-0.9, False), (-2.0, False), (-0.7, False),   # A
                      (-4.0, False), (-4.0, False), (-4.0, False), (-4.0, False)]  # tie: first, A
    assert mmlu.picks(loglikelihoods) == [1, 0, 0]


def test_select_is_seeded_and_stable():
    questions = [mmlu.Question("s", f"q{i}", ("a", "b", "c", "d"), i % 4) for i in range(50)]
    first = mmlu.select(questions, 10, seed=1234)
    assert first == mmlu.select(questions, 10, seed=1234)
    assert first != mmlu.select(questions, 10, seed=99)
    assert mmlu.examples_hash(first) != mmlu.examples_hash(mmlu.select(questions, 10, seed=99))
    assert mmlu.select(questions, 500, seed=1) == questions


@pytest.mark.slow
def test_shipped_mmlu_file_is_fetched_checked_and_parsed():
    questions = mmlu.parse(mmlu.data_path(progress=False))
    assert len(questions) == 14042
    assert {q.answer for q in questions} == {0, 1, 2, 3}


@pytest.mark.slow
def test_scorer_on_a_real_model_picks_the_answer_its_log_likelihoods_favour(smollm2_backend):
    """The scorer's picks on the fixture equal an independent argmax over each question's four log-likelihoods,
    and a pretrained model puts the right answer's text first when the answer is spelled out (cloze check)."""
    questions = mmlu.parse(FIXTURE)
    scored = smollm2_backend.loglikelihood(mmlu.requests(questions))
    for index, pick in enumerate(mmlu.picks(scored)):
        four = [ll for ll, _ in scored[index * 4:(index + 1) * 4]]
        assert four[pick] == max(four)
    cloze = [(f"Question: {q.question}\nAnswer:", f" {choice}") for q in questions for choice in q.choices]
    cloze_picks = mmlu.picks(smollm2_backend.loglikelihood(cloze))
    assert sum(p == q.answer for p, q in zip(cloze_picks, questions, strict=True)) >= 3
