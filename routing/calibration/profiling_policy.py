"""When to stop profiling: SMART's trade-off between learning more and paying for it.

Profiling runs every sampled item on the reference *and* on every cheap model still
under study, so each profiled item costs more than simply answering it with the
reference. It pays off only through a cheaper plan for the items that remain: tighter
conformity bounds let the mix program (`routing.calibration.model_mix`) send more items to cheap
models. This module holds that decision as pure bookkeeping: callers run the models
and report agreements; the profiler says which models are still worth running, when to
stop, and what plan to follow afterwards. It never runs a model and never draws random
numbers, so the same observations always give the same decisions.

Two kinds of decision are made:

* Per model (`active_models`): a model leaves the profiling set once its bounds settle
  its role. Either its lower bound already reaches the planning target (the target for
  the remaining items, see `planning_target`; the model can take every remaining item
  alone and more evidence would not change that), or it is
  *dominated*: even at its optimistic upper bound, some mix of the other models at
  their pessimistic lower bounds is at least as accurate for no more money, so no plan
  would ever need it. Note what domination does *not* say: a cheap model that is often
  wrong is still useful to the program, which may spend the allowed error budget on it
  (sending it a share of items it will mostly get wrong); only being beaten on both
  price and accuracy removes it. Decisions are sticky, so a model's role never flips
  back and forth as noise moves its bounds.

* Overall (`should_stop`): compare the cost of finishing the job with today's bounds
  against profiling one more batch first and then following the plan that the
  expected, tighter bounds would allow. "Expected" means the observed agreement rate
  holds for the new items, so each active model's bound is recomputed at the same rate
  on more trials. Profiling stops when the expected saving on the remaining items is
  no larger than what the extra batch costs. With `lookahead > 1`, horizons of 1, 2, 4,
  ... up to `lookahead` batches are tried and profiling continues if any pays, which
  guards against stopping where one batch is too little to move a plan but a few are
  not (the default, 1, is the plain one-batch rule; on the SMART profiles a lookahead
  of 8 changed almost nothing). A consequence worth knowing: at tight targets the plan
  sends much of the work to the reference anyway, so a profiled item really costs only
  the cheap models' price on top of an answer that was needed regardless, and the
  rule rightly keeps profiling for a long time.

Batches may grow with the sample (`next_batch_size`): at least `batch` items, and at
least `growth` times the items profiled so far. The value of one more item shrinks as
the sample grows, so looking every 20 items after 20,000 buys nothing but bookkeeping
and more looks at the data; growing batches keep the number of decisions logarithmic in
the sample while overshooting the ideal stopping point by at most a `growth` fraction.
The default, growth 0, keeps batches fixed: the trade-off must be judged for the batch
the caller will really run, and a caller with fixed batches (`pipelines.profiling`)
would otherwise be told about batches it never profiles. Callers that size their
batches with `next_batch_size`, like the SMART simulation, can turn growth on.

Statistical caveat: bounds are recomputed after every batch and profiling stops when
they look good enough, so the final bounds are read at a data-dependent time. Fixed-n
Clopper-Pearson bounds do not account for that (a lucky early streak can carry a bound
over the target). The Bonferroni split over models (see `routing.calibration.model_mix`) leaves
some slack, and the SMART simulation (`routing.evaluation.smart_sim`) measures the guarantee
rather than taking it on faith; the worst case is a model whose true conformity sits
exactly on the target. An anytime-valid bound (a confidence sequence) would close the
gap at the price of wider bounds.
"""

from __future__ import annotations

import enum
from functools import lru_cache
from typing import Iterable, Mapping, Optional

from routing.calibration.guarantees import clopper_pearson_lower, clopper_pearson_upper
from routing.calibration.model_mix import (
    Correction,
    Guarantee,
    MixPlan,
    min_mix_cost,
    per_model_confidence,
    realised_target,
    remaining_target,
    solve_mix,
)

# Bounds depend only on (agreements, trials, confidence) and are asked for again and
# again (each batch, each what-if plan, each target in a sweep over the same items).
_lower = lru_cache(maxsize=1 << 16)(clopper_pearson_lower)
_upper = lru_cache(maxsize=1 << 16)(clopper_pearson_upper)
_realised = lru_cache(maxsize=1 << 16)(realised_target)


class ModelState(str, enum.Enum):
    """Where a cheap model stands in profiling."""

    ACTIVE = "active"
    MEETS_TARGET = "meets_target"
    DOMINATED = "dominated"


class AdaptiveProfiler:
    """Decides, batch by batch, which models to profile and when to stop.

    `costs` maps every model, the reference included, to its cost per item. `target` is
    the conformity promised for the whole job (1 - delta) over `total_items` items, with
    joint `confidence`. Feed results with `update`/`observe` after each batch, then ask
    `active_models()` which models to run on the next batch and `should_stop()` whether
    to run one at all; `plan()` gives the mix for the items not profiled.

    `guarantee="realised"` (the default) promises the delivered share of agreeing
    answers, which is how a job is judged; the failure budget is then split over the
    candidate models plus the scatter of the outcome (see `routing.calibration.model_mix`).
    `"expected"` promises only the expected share and splits it over the models.
    """

    def __init__(
        self,
        costs: Mapping[str, float],
        reference: str,
        target: float,
        confidence: float,
        total_items: int,
        batch: int = 20,
        *,
        correction: Correction = "bonferroni",
        guarantee: Guarantee = "realised",
        lookahead: int = 1,
        growth: float = 0.0,
        min_items: Optional[int] = None,
    ) -> None:
        if reference not in costs:
            raise ValueError(f"reference {reference!r} has no cost")
        if len(costs) < 2:
            raise ValueError("need at least one model besides the reference")
        if any(c < 0 for c in costs.values()):
            raise ValueError("costs must be non-negative")
        if not 0 < target <= 1:
            raise ValueError(f"target must lie in (0, 1], got {target}")
        if total_items <= 0:
            raise ValueError(f"total_items must be positive, got {total_items}")
        if guarantee not in ("realised", "expected"):
            raise ValueError(f"unknown guarantee {guarantee!r}; use 'realised' or 'expected'")
        if batch <= 0 or lookahead <= 0:
            raise ValueError("batch and lookahead must be positive")
        if growth < 0:
            raise ValueError(f"growth must be non-negative, got {growth}")
        self.costs = dict(costs)
        self.reference = reference
        self.target = float(target)
        self.confidence = float(confidence)
        self.total_items = int(total_items)
        self.batch = int(batch)
        self.lookahead = int(lookahead)
        self.growth = float(growth)
        # Before any evidence there is no rate to project, so a first batch is always
        # profiled; that is the smallest sample the trade-off can be judged from.
        self.min_items = self.batch if min_items is None else int(min_items)
        # Cheapest first: domination checks run in this order, which keeps them
        # deterministic and lets an expensive model be beaten by cheaper survivors.
        self.candidates = sorted((m for m in costs if m != reference), key=lambda m: (costs[m], m))
        self.guarantee = guarantee
        events = len(self.candidates) + (1 if guarantee == "realised" else 0)
        # Every event (each model's bound, and the outcome's scatter) gets the same share.
        self.model_confidence = per_model_confidence(confidence, events, correction)
        self._agree: dict[str, float] = {m: 0.0 for m in self.candidates}
        self._seen: dict[str, int] = {m: 0 for m in self.candidates}
        self._state: dict[str, ModelState] = {m: ModelState.ACTIVE for m in self.candidates}
        # Decisions depend only on the counts; re-deciding without new counts is wasted work.
        self._updates = 0
        self._refreshed_at = -1

    # ---------------------------------------------------------------- observations

    def update(self, model: str, n_agree: float, n_seen: int) -> None:
        """Add `n_seen` more profiled items of `model`, `n_agree` of them agreeing."""
        if model == self.reference:
            raise ValueError("the reference agrees with itself by definition; report only cheap models")
        if model not in self._seen:
            raise KeyError(f"unknown model {model!r}")
        if n_seen < 0 or not 0 <= n_agree <= n_seen:
            raise ValueError(f"need 0 <= n_agree <= n_seen, got {n_agree}, {n_seen}")
        if self._seen[model] + n_seen > self.total_items:
            raise ValueError(f"{model} would have seen more than the {self.total_items} items of the job")
        self._agree[model] += n_agree
        self._seen[model] += int(n_seen)
        self._updates += 1

    def observe(self, model: str, agree_flags: Iterable[bool]) -> None:
        """Add per-item agreement flags of `model` (True: same answer as the reference)."""
        flags = [bool(f) for f in agree_flags]
        self.update(model, sum(flags), len(flags))

    @property
    def items_profiled(self) -> int:
        """Items answered during profiling. Every profiled item goes to all active
        models, so the model observed longest has seen every one of them."""
        return max(self._seen.values())

    @property
    def remaining_items(self) -> int:
        return self.total_items - self.items_profiled

    @property
    def next_batch_size(self) -> int:
        """Items to profile next: `batch`, or `growth` times the sample if that is more,
        never more than what is left."""
        size = max(self.batch, int(self.growth * self.items_profiled))
        return min(size, self.remaining_items)

    def remaining_target(self) -> float:
        """Conformity the unprofiled items need (profiled ones count as correct)."""
        return remaining_target(self.target, self.total_items, self.items_profiled)

    def planning_target(self) -> float:
        """Conformity bound a plan must reach: the remaining target, plus, for a
        realised guarantee, the margin for the scatter of the delivered answers."""
        return self._planning_target(self.items_profiled)

    def _planning_target(self, profiled: int) -> float:
        target = remaining_target(self.target, self.total_items, profiled)
        if self.guarantee == "expected":
            return target
        return _realised(target, self.total_items - profiled, self.model_confidence)

    def counts(self) -> dict[str, tuple[float, int]]:
        return {m: (self._agree[m], self._seen[m]) for m in self.candidates}

    def lower_bounds(self) -> dict[str, float]:
        return {m: self._bound_lower(self._agree[m], self._seen[m]) for m in self.candidates}

    def upper_bounds(self) -> dict[str, float]:
        return {
            m: (_upper(self._agree[m], self._seen[m], self.model_confidence) if self._seen[m] else 1.0)
            for m in self.candidates
        }

    def _bound_lower(self, agree: float, seen: float) -> float:
        return _lower(agree, int(seen), self.model_confidence) if seen else 0.0

    # --------------------------------------------------------------- model decisions

    def state(self, model: str) -> ModelState:
        self._refresh()
        return self._state[model]

    def active_models(self) -> list[str]:
        """Models to run on the next profiled batch, cheapest first."""
        self._refresh()
        return [m for m in self.candidates if self._state[m] is ModelState.ACTIVE]

    def _refresh(self) -> None:
        """Settle the role of every active model that the current bounds decide."""
        if self._refreshed_at == self._updates:
            return
        self._refreshed_at = self._updates
        target = self.planning_target()
        lower, upper = self.lower_bounds(), self.upper_bounds()
        for model in self.candidates:
            if self._state[model] is not ModelState.ACTIVE or self._seen[model] == 0:
                continue
            if lower[model] >= target:
                self._state[model] = ModelState.MEETS_TARGET
            elif self._is_dominated(model, lower, upper[model]):
                self._state[model] = ModelState.DOMINATED

    def _is_dominated(self, model: str, lower: Mapping[str, float], upper: float) -> bool:
        """True when the other models, at their lower bounds, can match `model` at its
        upper bound (as a mix) for no more than its own cost."""
        others = [m for m in self.candidates if m != model and self._state[m] is not ModelState.DOMINATED]
        costs = [self.costs[self.reference]] + [self.costs[m] for m in others]
        accs = [1.0] + [lower[m] for m in others]
        best = min_mix_cost(costs, accs, upper)
        return best is not None and best <= self.costs[model]

    # -------------------------------------------------------------- overall stopping

    def profiling_cost_per_item(self, models: Optional[Iterable[str]] = None) -> float:
        """Cost of profiling one item: the reference plus every model under study."""
        chosen = self.active_models() if models is None else list(models)
        return self.costs[self.reference] + sum(self.costs[m] for m in chosen)

    def profiling_tradeoff(self, batches: int = 1) -> tuple[float, float]:
        """(expected saving, cost) of profiling `batches` more batches of the next batch
        size before planning.

        The saving is what finishing the job with today's plan costs minus what the
        unprofiled rest would cost under the plan that the projected bounds allow. Items
        profiled in the extra batches are answered by the reference (so they count as
        correct) and are paid for in the cost part, not the saving part.
        """
        active = self.active_models()
        remaining = self.remaining_items
        horizon = min(batches * self.next_batch_size, remaining)
        now = self._plan_total(self.lower_bounds(), self.items_profiled)
        projected_lower = self.lower_bounds()
        for m in active:
            seen = self._seen[m]
            rate = self._agree[m] / seen if seen else 0.0
            projected_lower[m] = self._bound_lower(rate * (seen + horizon), seen + horizon)
        later = self._plan_total(projected_lower, self.items_profiled + horizon)
        return now - later, horizon * self.profiling_cost_per_item(active)

    def should_stop(self) -> bool:
        """Stop when no horizon up to `lookahead` batches pays for its profiling."""
        if self.remaining_items <= 0:
            return True
        if not self.active_models():
            return True  # nothing left to learn; more profiling is reference-only work
        if self.items_profiled < min(self.min_items, self.total_items):
            return False
        batches = 1
        while batches <= self.lookahead:
            saving, cost = self.profiling_tradeoff(batches)
            if saving > cost:
                return False
            if batches * self.next_batch_size >= self.remaining_items:
                break
            batches *= 2
        return True

    def _plan_total(self, lower: Mapping[str, float], profiled: int) -> float:
        """Cost of answering every unprofiled item with the best plan at `lower`."""
        remaining = self.total_items - profiled
        if remaining <= 0:
            return 0.0
        target = self._planning_target(profiled)
        costs = [self.costs[self.reference]] + [self.costs[m] for m in self.candidates]
        accs = [1.0] + [lower[m] for m in self.candidates]
        per_item = min_mix_cost(costs, accs, target)
        if per_item is None:  # cannot happen for target <= 1, but stay safe
            per_item = self.costs[self.reference]
        return per_item * remaining

    # ------------------------------------------------------------------------- plan

    def plan(self) -> MixPlan:
        """The mix for the unprofiled items, solved (exactly, by its vertices) at the current bounds.

        Every candidate takes part with its current lower bound, whatever its profiling
        state: a dominated model simply receives nothing, and a model that met the target
        early keeps the bound it earned.
        """
        return solve_mix(self.costs, self.lower_bounds(), self.planning_target(), self.reference)
