"""Routers that need no training: one fixed expert, or ordered rules on the text.

Every router, trained or not, exposes the same `route(questions, contexts)` call, so
the batch job and the online endpoint take one code path whatever the config says.
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

from routing.core.config import CascadeRouter, CheckpointRouter, FixedRouter, LearnedCascadeRouter, Rule, RuleRouter


class Router(Protocol):
    expert_names: list[str]

    def route(self, questions: Sequence[str], contexts: Sequence[str]) -> list[str]: ...


class FixedPolicy:
    def __init__(self, expert: str) -> None:
        self.expert = expert
        self.expert_names = [expert]

    def route(self, questions: Sequence[str], contexts: Sequence[str]) -> list[str]:
        return [self.expert] * len(questions)


def _rule_matches(rule: Rule, pattern: "re.Pattern[str] | None", question: str, context: str) -> bool:
    checks = (
        (rule.min_context_chars, lambda v: len(context) >= v),
        (rule.max_context_chars, lambda v: len(context) <= v),
        (rule.min_question_chars, lambda v: len(question) >= v),
        (rule.max_question_chars, lambda v: len(question) <= v),
    )
    if any(limit is not None and not ok(limit) for limit, ok in checks):
        return False
    return pattern is None or pattern.search(question) is not None


class RulePolicy:
    """First matching rule wins; `default` answers the rest."""

    def __init__(self, rules: Sequence[Rule], default: str) -> None:
        self.rules = list(rules)
        self.default = default
        self._patterns = [re.compile(r.question_regex) if r.question_regex else None for r in self.rules]
        self.expert_names = sorted({r.expert for r in self.rules} | {default})

    def route(self, questions: Sequence[str], contexts: Sequence[str]) -> list[str]:
        out = []
        for q, c in zip(questions, contexts):
            for rule, pattern in zip(self.rules, self._patterns):
                if _rule_matches(rule, pattern, q, c):
                    out.append(rule.expert)
                    break
            else:
                out.append(self.default)
        return out


def build_router(spec: FixedRouter | RuleRouter | CheckpointRouter | CascadeRouter | LearnedCascadeRouter) -> Router:
    if isinstance(spec, FixedRouter):
        return FixedPolicy(spec.expert)
    if isinstance(spec, RuleRouter):
        return RulePolicy(spec.rules, spec.default)
    if isinstance(spec, CascadeRouter):
        # Its route() only sends every question to the first stage; the expert stages
        # take the cascade's later decisions (operators/cascade_stages.py).
        from routing.cascades.agreement_plan import CascadePlan

        return CascadePlan.from_spec(spec)
    if isinstance(spec, LearnedCascadeRouter):
        from routing.cascades.checkpoint import plan_from_spec

        return plan_from_spec(spec)
    from routing.routers.checkpoint import RouterCheckpoint  # trained routers load torch; only when asked

    return RouterCheckpoint.load(spec.checkpoint).policy(
        budget_per_item=spec.budget_per_item,
        accuracy_target=spec.accuracy_target,
        confidence=spec.confidence,
        lam=spec.lam,
    )
