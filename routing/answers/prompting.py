"""Prompts in, short answers out: the text side of the generative experts.

Generative experts (a local causal LM, a paid chat endpoint) are asked the same
question the extractive readers answer, and their output lands in the same `answer`
column that SQuAD scoring reads. Two things therefore have to be pinned down in one
place, free of any model or HTTP code so they are testable in milliseconds:

* how a question and its context become a prompt (`render_prompt`), with templates
  checked before any compute starts (`check_template`), and
* how a free-form completion becomes a SQuAD-style short answer (`extract_answer`):
  chat models like to say "Answer: **Paris**." or "The context does not say.", and
  SQuAD 2.0 scores "no answer" only when the prediction is the empty string.
"""

from __future__ import annotations

import re
import string
from typing import Optional

TEMPLATE_FIELDS: frozenset[str] = frozenset({"question", "context"})

DEFAULT_PROMPT_TEMPLATE = (
    "Answer the question using only the context. Reply with the shortest span of the "
    "context that answers it, or with \"unanswerable\" if the context does not contain "
    "the answer.\n\nContext: {context}\n\nQuestion: {question}\n\nAnswer:"
)


def template_problem(template: str) -> Optional[str]:
    """Why `template` cannot be used as a prompt template, or None when it can.

    Only the bare placeholders `{question}` and `{context}` are allowed: a format spec
    or attribute access (`{context.__class__}`) in a config file has no legitimate use
    and would fail, or leak internals, only at run time on a worker. Literal braces
    are written `{{` and `}}`, as in `str.format`.
    """
    seen: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # unbalanced braces
        return f"is not a valid template ({exc}); write literal braces as {{{{ and }}}}"
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS:
            shown = field if field else "{}"
            return (
                f"has an unknown placeholder {{{shown}}}; only {{question}} and {{context}} "
                "are filled in (write literal braces as {{ and }})"
            )
        if spec or conversion:
            return f"placeholder {{{field}}} must be bare (no format spec or conversion)"
        seen.add(field)
    missing = [f for f in ("question", "context") if f not in seen]
    if missing:
        return "must contain " + " and ".join(f"{{{m}}}" for m in missing)
    return None


def check_template(template: str) -> str:
    """Return `template` unchanged, or raise ValueError saying what is wrong with it."""
    problem = template_problem(template)
    if problem is not None:
        raise ValueError(f"prompt_template {problem}")
    return template


def render_prompt(template: str, question: str, context: str) -> str:
    """Fill in a checked template.

    `str.format` substitutes the values without re-parsing them, so braces inside a
    question or context are safe.
    """
    return template.format(question=question, context=context)


# Completions that mean "the context does not answer this", compared after
# `_normalise` (lower case, punctuation and surrounding white space removed).
NO_ANSWER_PHRASES: frozenset[str] = frozenset(
    {
        "unanswerable",
        "not answerable",
        "no answer",
        "no answer found",
        "none",
        "n/a",
        "na",
        "null",
        "unknown",
        "not known",
        "not mentioned",
        "not stated",
        "not specified",
        "not provided",
        "not given",
        "no information",
        "cannot be answered",
        "cannot answer",
        "can not be answered",
        "i dont know",
        "i do not know",
        "it is unanswerable",
        "the question is unanswerable",
        "this question is unanswerable",
        "the question cannot be answered",
        "not in the context",
        "not in the passage",
        "not in the text",
    }
)

_NO_ANSWER_PREFIXES = re.compile(
    r"^(?:"
    r"(?:the |this )?(?:context|passage|text|article|document) (?:does not|doesnt|do not) "
    r"(?:say|mention|contain|provide|specify|state|include|give|answer)"
    r"|there is no (?:answer|information|mention)"
    r"|(?:i )?(?:cannot|can not|cant|am unable to|am not able to) (?:answer|determine|find|tell)"
    r"|(?:the )?answer (?:is )?(?:not|cannot be) (?:found|given|determined|mentioned|stated)"
    r")\b"
)

# Labels models put before the answer itself; removed repeatedly, so
# "Answer: The answer is X" gives "X". SmolLM2-135M-Instruct (tests/test_real_llm.py)
# opens a good share of its answers with 'The answer to this question is: "X"'.
_LEADING_LABELS = re.compile(
    r"^\s*(?:(?:final\s+)?answer\s*[:\-]|a\s*:"
    r"|the\s+(?:final\s+|short\s+)?answer\s+(?:to\s+(?:this|the|your)\s+question\s+)?is\s*:?"
    r"|response\s*:)\s*",
    re.IGNORECASE,
)
_THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_WRAPPERS = "\"'`*_“”‘’«» "
_PUNCT = set(string.punctuation) | {"“", "”", "‘", "’", "«", "»"}


def _normalise(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT or ch == "/")
    return " ".join(text.split())


def is_no_answer(text: str) -> bool:
    """Whether a (label-stripped) completion says that there is no answer."""
    norm = _normalise(text)
    if not norm:
        return True
    return norm in NO_ANSWER_PHRASES or norm.replace("/", "") in NO_ANSWER_PHRASES or bool(
        _NO_ANSWER_PREFIXES.match(norm)
    )


def extract_answer(completion: Optional[str]) -> str:
    """The short answer in a model's completion; "" means "no answer" (SQuAD 2.0).

    Steps, each fixing a habit of real models: drop a leading `<think>` block
    (reasoning models); keep the first non-empty line (base models run on into a new
    "Question:"); drop labels such as "Answer:" or "The answer is"; drop wrapping
    quotes, backticks and markdown emphasis; drop one trailing full stop unless the
    answer holds other dots (so "Paris." gives "Paris" but "D.C." stays); and map
    refusals such as "unanswerable" or "The context does not say" to "".
    """
    if not completion:
        return ""
    text = _THINK_BLOCK.sub("", completion)
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    answer = line.strip()
    for _ in range(3):
        stripped = _LEADING_LABELS.sub("", answer).strip().strip(_WRAPPERS).strip()
        if stripped == answer:
            break
        answer = stripped
    if answer.endswith(".") and "." not in answer[:-1]:
        answer = answer[:-1].rstrip().strip(_WRAPPERS)
    if is_no_answer(answer):
        return ""
    return answer


__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "NO_ANSWER_PHRASES",
    "TEMPLATE_FIELDS",
    "check_template",
    "extract_answer",
    "is_no_answer",
    "render_prompt",
    "template_problem",
]
