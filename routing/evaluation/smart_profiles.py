"""The SMART paper's published profiling figures, and what each model costs per item.

`smart_profiles.csv` (see data/README.md) lists, per dataset and model, the
tokens and the cost of 100 profiled items and the model's conformity with GPT-4. The
simulation needs a cost per item; we derive it from the tokens and the per-1k-token
prices the paper used rather than trusting the `cost` column, and keep the column as a
cross-check: if the two disagree, either the prices or the token counts are not what we
think, and every savings figure built on them would be off. For the published file they
agree exactly, up to floating-point rounding (relative differences of about 2e-16).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

# USD per 1,000 tokens (prompt, completion), the prices the SMART paper used.
PRICES_PER_1K: dict[str, tuple[float, float]] = {
    "gpt-4": (0.03, 0.06),
    "gpt-3.5-turbo-1106": (0.001, 0.002),
    "gpt-3.5-turbo-instruct": (0.0015, 0.002),
    "davinci-002": (0.002, 0.002),
    "babbage-002": (0.0004, 0.0004),
}

REFERENCE_MODEL = "gpt-4"


@dataclass(frozen=True)
class ModelProfile:
    """One model on one dataset, as profiled in the paper."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    processed: int
    conformity: float
    reported_cost: float

    def cost_from_prices(self, prices: Mapping[str, tuple[float, float]] = PRICES_PER_1K) -> float:
        """Cost of the profiled items, recomputed from tokens and per-1k prices."""
        prompt_price, completion_price = prices[self.model]
        return (self.prompt_tokens * prompt_price + self.completion_tokens * completion_price) / 1000.0

    def cost_per_item(self, prices: Mapping[str, tuple[float, float]] = PRICES_PER_1K) -> float:
        """Average cost of one item; the simulation charges this for every item."""
        return self.cost_from_prices(prices) / self.processed

    def cost_discrepancy(self, prices: Mapping[str, tuple[float, float]] = PRICES_PER_1K) -> float:
        """Relative difference between the recomputed and the published cost."""
        recomputed = self.cost_from_prices(prices)
        if self.reported_cost == 0:
            return 0.0 if recomputed == 0 else float("inf")
        return abs(recomputed - self.reported_cost) / self.reported_cost


@dataclass(frozen=True)
class DatasetProfile:
    """All models profiled on one dataset; `items` is the size of the whole job."""

    name: str
    items: int
    models: dict[str, ModelProfile]

    def costs_per_item(self, prices: Mapping[str, tuple[float, float]] = PRICES_PER_1K) -> dict[str, float]:
        return {m: p.cost_per_item(prices) for m, p in self.models.items()}

    def conformity(self) -> dict[str, float]:
        return {m: p.conformity for m, p in self.models.items()}


def load_profiles(path: Union[str, Path]) -> dict[str, DatasetProfile]:
    """Read the csv into one `DatasetProfile` per dataset, in file order."""
    rows: dict[str, list[dict[str, str]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["dataset"], []).append(row)
    datasets: dict[str, DatasetProfile] = {}
    for name, group in rows.items():
        sizes = {int(r["nr_items"]) for r in group}
        if len(sizes) != 1:
            raise ValueError(f"dataset {name} lists different item counts: {sorted(sizes)}")
        models = {
            r["model"]: ModelProfile(
                model=r["model"],
                prompt_tokens=int(r["nr_prompt_tokens"]),
                completion_tokens=int(r["nr_completion_tokens"]),
                processed=int(r["nr_processed"]),
                conformity=float(r["conformity"]),
                reported_cost=float(r["cost"]),
            )
            for r in group
        }
        unknown = sorted(set(models) - set(PRICES_PER_1K))
        if unknown:
            raise ValueError(f"no prices for models {unknown} in dataset {name}")
        datasets[name] = DatasetProfile(name=name, items=sizes.pop(), models=models)
    return datasets


def cost_check(datasets: Mapping[str, DatasetProfile]) -> dict[str, dict[str, float]]:
    """Relative difference between recomputed and published cost, per dataset and model."""
    return {
        name: {m: p.cost_discrepancy() for m, p in ds.models.items()}
        for name, ds in datasets.items()
    }
