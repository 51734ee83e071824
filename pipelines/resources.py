"""Plan the job's resources up front, and refuse plans that cannot run.

Ray Data does not fail a plan whose stages ask for more than the cluster has: it
waits ("backpressured: ResourceBudget"), for ever. We measured an 8-minute stall with
zero rows done on a 2-CPU node. So before any compute starts, every stage's demand is
checked against the nodes, and the first stage that cannot be placed is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from routing.core.config import JobConfig

# CPU share of the light stages (reading, parsing, writing): small, so that on a
# 2-core machine they never starve the experts, but non-zero, so Ray can place them.
LIGHT_TASK_CPUS = 0.25
DEDUPE_ACTOR_CPUS = 0.1
ROUTER_ACTOR_CPUS = 0.25


@dataclass(frozen=True)
class StageDemand:
    stage: str  # the config field a user would change, e.g. "experts.large"
    per_actor: Mapping[str, float]
    min_actors: int
    fix: str = ""

    def total(self) -> dict[str, float]:
        return {k: v * self.min_actors for k, v in self.per_actor.items() if v}


@dataclass
class ResourcePlan:
    stages: list[StageDemand] = field(default_factory=list)

    def total(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.stages:
            for k, v in s.total().items():
                out[k] = out.get(k, 0.0) + v
        return out


class PlanDoesNotFit(RuntimeError):
    """The cluster cannot run the plan; the message names the stage and the fix."""


def plan_resources(config: JobConfig) -> ResourcePlan:
    plan = ResourcePlan()
    # One light task at a time must always fit beside the actors, or reading stalls.
    plan.stages.append(StageDemand("input (read/parse/write tasks)", {"CPU": LIGHT_TASK_CPUS}, 1))
    # One actor checks duplicate ids and routes (pipelines/batch_job.py, CheckAndRoute).
    plan.stages.append(StageDemand("duplicate-id check and router", {"CPU": ROUTER_ACTOR_CPUS}, 1))
    for e in config.experts:
        per_actor = e.resources.demand()
        plan.stages.append(
            StageDemand(
                f"experts.{e.name}",
                per_actor,
                e.pool.min_actors,
                fix=f"lower experts.{e.name}.resources or pool.min_actors, or add nodes that have them",
            )
        )
    return plan


def _fits(demand: Mapping[str, float], available: Mapping[str, float]) -> bool:
    return all(available.get(k, 0.0) + 1e-9 >= v for k, v in demand.items() if v)


def _fmt(res: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(res.items()) if v) or "nothing"


def check_plan_fits(plan: ResourcePlan, nodes: Iterable[Mapping[str, float]]) -> None:
    """Raise PlanDoesNotFit unless every actor fits some node and all minimum pools fit
    together. `nodes` are the resources of each node (as ray.nodes() reports them)."""
    nodes = [dict(n) for n in nodes]
    if not nodes:
        raise PlanDoesNotFit("the Ray cluster has no alive nodes")
    for s in plan.stages:
        one = {k: v for k, v in s.per_actor.items() if v}
        if not any(_fits(one, n) for n in nodes):
            best = max(nodes, key=lambda n: sum(n.get(k, 0.0) >= v for k, v in one.items()))
            raise PlanDoesNotFit(
                f"{s.stage}: one actor needs {_fmt(one)} but no node has that much "
                f"(largest node: {_fmt({k: best.get(k, 0.0) for k in one})}); {s.fix or 'reduce its resources'}"
            )
    # Greedy first-fit of all minimum actors, largest first: a fast, conservative
    # stand-in for Ray's scheduler that catches plans which only fit stage by stage.
    free = [dict(n) for n in nodes]
    placements = sorted(
        ((s, {k: v for k, v in s.per_actor.items() if v}) for s in plan.stages for _ in range(s.min_actors)),
        key=lambda sd: -sum(sd[1].values()),
    )
    for stage, demand in placements:
        for node in free:
            if _fits(demand, node):
                for k, v in demand.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            raise PlanDoesNotFit(
                f"{stage.stage}: its {stage.min_actors} minimum actor(s) ({_fmt(demand)} each) do not fit beside the "
                f"other stages (whole plan needs {_fmt(plan.total())}; cluster has {_fmt(_sum(nodes))}); {stage.fix or 'reduce its resources'}"
            )


def _sum(nodes: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in nodes:
        for k, v in n.items():
            if k in ("CPU", "GPU") or not (k.startswith("node:") or k in ("memory", "object_store_memory")):
                out[k] = out.get(k, 0.0) + v
    return out


def cluster_nodes() -> list[dict[str, float]]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


# Where the cluster launcher leaves the cluster's config on the head node.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def autoscaler_nodes(cluster_config: str) -> list[dict[str, float]]:
    """The nodes an autoscaling cluster may add: `max_workers` of each worker node
    type of a cluster-launcher YAML, with the resources the type declares. A type that
    declares none (the launcher detects them for known instance types) is skipped, so
    the check can only err towards refusing, never towards a stall."""
    import yaml

    from routing.core.storage import read_bytes

    config = yaml.safe_load(read_bytes(cluster_config)) or {}
    head = config.get("head_node_type")
    nodes: list[dict[str, float]] = []
    for name, node_type in (config.get("available_node_types") or {}).items():
        resources = node_type.get("resources") or {}
        if name == head or not resources:
            continue
        nodes += [{k: float(v) for k, v in resources.items()}] * int(min(node_type.get("max_workers", 0), 1000))
    return nodes


def reachable_nodes(cluster_config: str | None, address: str | None) -> list[dict[str, float]]:
    """Nodes alive now plus the ones the autoscaler may add."""
    import os

    nodes = cluster_nodes()
    path = cluster_config
    if path is None and address:
        candidate = os.path.expanduser(BOOTSTRAP_CONFIG)
        path = candidate if os.path.exists(candidate) else None
    if path:
        nodes += autoscaler_nodes(path)
    return nodes
