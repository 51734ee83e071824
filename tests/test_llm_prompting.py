"""Prompt templates and answer extraction for the generative experts (pure, fast)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.answers.prompting import (
    DEFAULT_PROMPT_TEMPLATE,
    check_template,
    extract_answer,
    is_no_answer,
    render_prompt,
    template_problem,
)
from routing.answers.squad import exact_match


def test_default_template_is_valid_and_renders_both_fields() -> None:
    assert template_problem(DEFAULT_PROMPT_TEMPLATE) is None
    prompt = render_prompt(DEFAULT_PROMPT_TEMPLATE, "Who built it?", "Ada built the mill.")
    assert "Who built it?" in prompt and "Ada built the mill." in prompt
    assert "{" not in prompt


def test_braces_in_question_or_context_are_not_reinterpreted() -> None:
    template = "C={context}\nQ={question}\nLiteral {{braces}}"
    prompt = render_prompt(check_template(template), "What is {x}?", "f(x) = {context} and {0}")
    assert prompt == "C=f(x) = {context} and {0}\nQ=What is {x}?\nLiteral {braces}"


@pytest.mark.parametrize(
    "template, fragment",
    [
        ("Question: {question}", "{context}"),
        ("Context: {context}", "{question}"),
        ("no fields at all", "{question} and {context}"),
        ("{question} {context} {answer}", "{answer}"),
        ("{question} {context} {}", "{}"),
        ("{question} {context.__class__}", "{context.__class__}"),
        ("{question!r} {context}", "bare"),
        ("{question:>20} {context}", "bare"),
        ("{question} {context", "not a valid template"),
    ],
)
def test_bad_templates_are_refused_with_a_reason(template: str, fragment: str) -> None:
    with pytest.raises(ValueError) as err:
        check_template(template)
    assert "prompt_template" in str(err.value) and fragment in str(err.value)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("Paris", "Paris"),
        ("  Paris  \nQuestion: what else?", "Paris"),
        ("\n\n  Answer: 1889\n", "1889"),
        ("answer - the Harlow family", "the Harlow family"),
        ("A: Denver Broncos", "Denver Broncos"),
        ("The answer is: Santa Clara", "Santa Clara"),
        ("Answer: The answer is \"Levi's Stadium\".", "Levi's Stadium"),
        ("**Paris**.", "Paris"),
        ("`gold`", "gold"),
        ("“Normandy”", "Normandy"),
        ("Washington D.C.", "Washington D.C."),
        ("Paris.", "Paris"),
        ("<think>The context says 1066, so...</think>\n1066", "1066"),
        ("10th and 11th centuries", "10th and 11th centuries"),
        ("None of the above were built", "None of the above were built"),
        # SmolLM2-135M-Instruct's habits on SQuAD (tests/test_real_llm.py runs the model itself).
        ('The answer to this question is "Christian"', "Christian"),
        ('The answer to the question is: "The river Epte"', "The river Epte"),
    ],
)
def test_short_answer_is_extracted(completion: str, expected: str) -> None:
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "   \n  ",
        "unanswerable",
        "Unanswerable.",
        "Answer: unanswerable",
        "No answer",
        "none",
        "None.",
        "N/A",
        "\"unanswerable\"",
        "The context does not say.",
        "The passage doesn't mention who built it.",
        "There is no answer in the context.",
        "I cannot answer this from the context.",
        "The question is unanswerable.",
        'The answer to this question is: "unanswerable"',
        'The answer to this question is: "unanswerable',  # cut off by max_new_tokens
        "The context does not contain the answer to the question.",
        "Not mentioned",
        None,
    ],
)
def test_refusals_become_the_empty_answer(completion: str | None) -> None:
    assert extract_answer(completion) == ""


def test_extracted_answers_score_against_squad_gold() -> None:
    # The point of extraction: verbose but right completions earn exact match, and a
    # refusal earns it on an unanswerable (SQuAD 2.0) question.
    assert exact_match(extract_answer("Answer: **the Denver Broncos**."), "Denver Broncos") == 1.0
    assert exact_match(extract_answer("The context does not mention it."), "") == 1.0
    assert exact_match(extract_answer("Answer: Carolina Panthers"), "Denver Broncos") == 0.0


def test_is_no_answer_does_not_swallow_real_answers() -> None:
    for real in ("Nonesuch", "No", "Unknown Pleasures", "not 42", "Noneth", "the context"):
        assert not is_no_answer(real), real
    assert extract_answer("Unknown Pleasures") == "Unknown Pleasures"


@given(st.text(max_size=200))
def test_extraction_is_total_and_single_line(text: str) -> None:
    answer = extract_answer(text)
    assert isinstance(answer, str)
    assert "\n" not in answer and "\r" not in answer
    assert answer == answer.strip()
    # Idempotent: an extracted answer is already as short as extraction makes it.
    assert extract_answer(answer) in (answer, "")
