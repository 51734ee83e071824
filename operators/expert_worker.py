"""An expert as a plain Ray actor, for callers that send it sub-batches themselves
(profiling, the online endpoint) instead of streaming a dataset through a pool."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from operators.schema import WORK_SCHEMA
from operators.stages import AnswerWithExpert
from routing.core.config import HFExtractiveQAExpert, ReplayExpert


class ExpertWorker:
    def __init__(self, spec: HFExtractiveQAExpert | ReplayExpert) -> None:
        self.name = spec.name
        self.stage = AnswerWithExpert(spec)

    def answer_table(self, table: pa.Table) -> pa.Table:
        """Answer every row of a WORK_SCHEMA table with this expert (the same code path,
        pricing included, as the batch job's expert pools)."""
        table = table.set_column(
            WORK_SCHEMA.get_field_index("expert"), "expert", pa.array([self.name] * table.num_rows, pa.string())
        )
        return self.stage(table)


def start_worker(spec: HFExtractiveQAExpert | ReplayExpert) -> Any:
    """Start one actor for an expert with the resources its config asks for."""
    import ray

    return ray.remote(ExpertWorker).options(**spec.resources.ray_options()).remote(spec)
