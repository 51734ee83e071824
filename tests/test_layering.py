"""Data flows one way: pipelines -> operators -> routing; routing knows nothing of Ray.

Inside each layer the subpackages are ordered too (each `__init__.py` states its rule):
a module may import its own unit and the units listed for it below, nothing else of the
three packages. Every `.py` file under the packages is checked, at any depth, and every
import counts, also the ones deferred into a function body (they run all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("routing", "operators", "pipelines")

_ROUTING_BASE = {"routing.answers", "routing.core"}
# unit -> the other units it may import. A unit is a subpackage, or one top-level module
# named here; a layer's other top-level modules form the unit named like the layer, and
# "layer.*" stands for every unit of that layer.
ALLOWED: dict[str, set[str]] = {
    # routing: answers at the bottom, then core, then what builds on them
    "routing": set(),  # routing/__init__.py
    "routing.answers": set(),
    "routing.core": {"routing.answers"},
    "routing.replay": _ROUTING_BASE,
    "routing.features": _ROUTING_BASE,
    "routing.calibration": _ROUTING_BASE | {"routing.replay"},
    "routing.routers": _ROUTING_BASE | {"routing.replay", "routing.calibration", "routing.features"},
    # cascades read question features for their skip gate, as routers do
    "routing.cascades": _ROUTING_BASE | {"routing.replay", "routing.calibration", "routing.features"},
    "routing.evaluation": _ROUTING_BASE
    | {"routing.replay", "routing.calibration", "routing.features", "routing.routers", "routing.cascades"},
    "routing.rules": _ROUTING_BASE | {"routing.routers", "routing.cascades"},
    "routing.training": _ROUTING_BASE
    | {"routing.replay", "routing.calibration", "routing.features", "routing.routers", "routing.cascades"},
    # operators: runners below the stages
    "operators.runners": {"routing.*"},
    "operators": {"routing.*", "operators.runners"},
    # pipelines: the job's modules, then reports / serve / demo, then the CLI on top
    "pipelines": {"routing.*", "operators.*"},
    "pipelines.reports": {"routing.*", "operators.*", "pipelines"},
    "pipelines.serve": {"routing.*", "operators.*", "pipelines"},
    "pipelines.demo": {"routing.*", "operators.*", "pipelines", "pipelines.reports"},
    "pipelines.cli": {"routing.*", "operators.*", "pipelines", "pipelines.reports", "pipelines.serve", "pipelines.demo"},
}
# What each layer may import from outside the project, by exclusion.
FORBIDDEN_THIRD_PARTY = {"routing": {"ray"}}


def _modules() -> dict[str, Path]:
    """Every module of the three packages, by dotted name, found by walking the tree."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def unit_of(module: str) -> str:
    """The unit a dotted module name belongs to: the longest key of ALLOWED that is the
    module itself or one of its packages, else the layer (a top-level module of it)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ALLOWED:
            return ".".join(parts[:n])
    raise KeyError(module)


def imported_names(path: Path) -> set[str]:
    """Dotted names this file imports (`from a.b import c` yields `a.b.c` when that is a
    module of ours, else `a.b`), wherever in the file the import is written."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names}
    return names


def expand(allowed: set[str]) -> set[str]:
    """The units a rule names, with "layer.*" spelled out."""
    units = set()
    for entry in allowed:
        if entry.endswith(".*"):
            units |= {u for u in ALLOWED if u.split(".")[0] == entry[:-2]}
        else:
            units.add(entry)
    return units


def test_the_walk_finds_the_subpackages():
    # the old check globbed routing/*.py; make sure the new one sees nested modules
    assert "routing.cascades.learned" in MODULES
    assert "operators.runners.hf_qa" in MODULES
    assert "pipelines.cli.run" in MODULES
    assert all(unit_of(m) in ALLOWED for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    own = unit_of(module)
    bad = []
    for name in sorted(imported_names(MODULES[module])):
        top = name.split(".")[0]
        if top in FORBIDDEN_THIRD_PARTY.get(module.split(".")[0], set()):
            bad.append(name)
        if top not in PACKAGES:
            continue
        target = unit_of(name)
        if target == own or target in expand(ALLOWED[own]):
            continue
        bad.append(name)
    assert bad == [], f"{module} ({own}) may import only {sorted(ALLOWED[own])}"


def test_unit_rules_are_one_way():
    """No two units allow each other, directly or through others: the order is a DAG."""
    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for unit in expand(ALLOWED[todo.pop()]) - seen:
                seen.add(unit)
                todo.append(unit)
        return seen

    assert [u for u in ALLOWED if u in reaches(u)] == []


# Modules that fit or cross-validate: the driver and the CLI use them; the job's actors
# (operators/) take only the run-time plans (routing/cascades/*_plan.py).
FITTING_MODULES = {"routing.cascades.agreement", "routing.cascades.learned", "routing.training", "routing.evaluation"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "operators"))
def test_workers_import_plans_not_fitting_code(module):
    bad = sorted(
        name for name in imported_names(MODULES[module])
        if any(name == f or name.startswith(f + ".") for f in FITTING_MODULES)
    )
    assert bad == [], f"{module} imports fitting code {bad}; import the plan modules (routing/cascades/*_plan.py)"


def test_plan_modules_do_not_import_their_fitting_modules():
    for plan in ("routing.cascades.agreement_plan", "routing.cascades.learned_plan"):
        assert not imported_names(MODULES[plan]) & FITTING_MODULES, plan
