"""docs/configuration.md against the job config schema, both ways.

The reference is written by hand, so it drifts from the schema unless a test holds
them together: a field added to the schema without a line in the docs, a field
renamed or removed while the docs keep the old name, or a default changed in one place
only. This test reads every table row of docs/configuration.md whose first cell is a
backticked dotted path (the page states the convention) and compares the set of paths,
and every default written as a literal, with a recursive walk of the pydantic models
from `JobConfig` down. No Ray, no models: it reads text and class definitions only.

Path convention (see "How to read the tables" in the page): `input.columns.id` for
nested sections, `experts[KIND].field` for one member of a discriminated union
(`experts[*]` = every member, `experts[a|b]` = members `a` and `b`), and `rules[]` for
the entries of a list of models.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pydantic import BaseModel

from routing.core.config import JobConfig, parse_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REQUIRED = object()  # the schema's marker for "no default" in the walk below


@dataclass(frozen=True)
class SchemaField:
    path: str
    default: Any  # REQUIRED when the field must be given


def _members(annotation: Any) -> list[Any]:
    """The types a (possibly Optional / Annotated / Union) annotation may hold, None left out."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _kind_of(model: type[BaseModel]) -> str:
    """The discriminator value of one union member: its `kind: Literal[...]`."""
    (value,) = typing.get_args(model.model_fields["kind"].annotation)
    return value


def schema_fields(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None) -> Iterator[SchemaField]:
    """Every leaf field under `model`, as the docs name it.

    `defaults` is the parent's default instance of `model` when there is one: a nested
    section's effective defaults are that instance's values (`ReplayExpert.resources`
    defaults to `Resources(num_cpus=0.1)`, not to `Resources()`).
    """
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if defaults is not None:
            default: Any = getattr(defaults, name)
        elif info.is_required():
            default = REQUIRED
        elif info.default_factory is not None:
            default = info.default_factory()
        else:
            default = info.default
        annotation = info.annotation
        if typing.get_origin(annotation) is list:
            items = _members(typing.get_args(annotation)[0])
            if items and all(_is_model(m) for m in items):
                if len(items) == 1:
                    yield from schema_fields(items[0], f"{path}[]")
                else:
                    for member in items:
                        yield from schema_fields(member, f"{path}[{_kind_of(member)}]")
                continue
        members = _members(annotation)
        if members and all(_is_model(m) for m in members):
            if len(members) == 1:
                yield from schema_fields(members[0], path, default if isinstance(default, BaseModel) else None)
            else:
                for member in members:
                    yield from schema_fields(member, f"{path}[{_kind_of(member)}]")
            continue
        yield SchemaField(path, default)


@dataclass(frozen=True)
class DocRow:
    line: int
    path: str  # as written, before expanding [*] and [a|b]
    default_cell: str


_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_PATH_CELL = re.compile(r"^`([a-z_]+(?:\[[^\]]*\])?(?:\.[a-z0-9_]+(?:\[[^\]]*\])?)*)`$")


def doc_rows(text: str) -> list[DocRow]:
    """Table rows whose first cell is one backticked dotted path, with their default cell."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(line.strip().strip("|"))]
        match = _PATH_CELL.match(cells[0])
        if match and len(cells) >= 4:
            rows.append(DocRow(number, match.group(1), cells[2]))
    return rows


def expand(path: str, kinds: dict[str, list[str]]) -> list[str]:
    """`experts[*].x` -> one path per expert kind; `experts[a|b].x` -> kinds a and b."""
    match = re.match(r"^([a-z_]+)\[([^\]]+)\](.*)$", path)
    if not match or match.group(2) == "":
        return [path]
    section, selector, rest = match.groups()
    chosen = kinds.get(section, []) if selector == "*" else selector.split("|")
    return [f"{section}[{kind}]{rest}" for kind in chosen]


def _kinds(fields: list[SchemaField]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for f in fields:
        match = re.match(r"^([a-z_]+)\[([^\]]+)\]", f.path)
        if match and match.group(2) not in kinds.setdefault(match.group(1), []):
            kinds[match.group(1)].append(match.group(2))
    return kinds


@pytest.fixture(scope="module")
def schema() -> dict[str, SchemaField]:
    fields = list(schema_fields(JobConfig))
    assert len(fields) == len({f.path for f in fields})
    return {f.path: f for f in fields}


@pytest.fixture(scope="module")
def documented(schema: dict[str, SchemaField]) -> dict[str, DocRow]:
    kinds = _kinds(list(schema.values()))
    out: dict[str, DocRow] = {}
    for row in doc_rows(DOC.read_text(encoding="utf-8")):
        for path in expand(row.path, kinds):
            assert path not in out, f"docs/configuration.md:{row.line}: {path} is documented twice (also line {out[path].line})"
            out[path] = row
    return out


def test_the_walk_sees_every_section_and_kind(schema: dict[str, SchemaField]) -> None:
    """Guards the walk itself: a walk that silently stopped at a union would make the
    two-way check below pass on a fraction of the schema."""
    kinds = _kinds(list(schema.values()))
    assert set(kinds["experts"]) == {"hf-extractive-qa", "replay", "hf-causal-lm", "openai-compatible"}
    assert set(kinds["router"]) == {"fixed", "rule", "checkpoint", "cascade", "learned-cascade"}
    assert {p.split(".")[0].split("[")[0] for p in schema} == set(JobConfig.model_fields)
    assert schema["experts[replay].resources.num_cpus"].default == 0.1
    assert schema["router[rule].rules[].expert"].default is REQUIRED


def test_every_documented_field_exists_in_the_schema(schema: dict[str, SchemaField], documented: dict[str, DocRow]) -> None:
    unknown = sorted(f"line {row.line}: {path}" for path, row in documented.items() if path not in schema)
    assert not unknown, f"docs/configuration.md documents fields the schema does not have: {unknown}"


def test_every_schema_field_is_documented(schema: dict[str, SchemaField], documented: dict[str, DocRow]) -> None:
    missing = sorted(set(schema) - set(documented))
    assert not missing, f"schema fields with no row in docs/configuration.md: {missing}"


def test_documented_defaults_match_the_schema(schema: dict[str, SchemaField], documented: dict[str, DocRow]) -> None:
    """`required` must mean required, and a default written as one backticked literal
    (read as YAML, as a config would be) must equal the schema's default. Free text
    (such as "built in" for the long prompt template) is not compared."""
    wrong = []
    checked = 0
    for path, row in documented.items():
        field = schema.get(path)
        if field is None:
            continue
        cell = row.default_cell
        if cell == "required":
            ok, checked = field.default is REQUIRED, checked + 1
        elif re.fullmatch(r"`[^`]*`", cell):
            expected = yaml.safe_load(cell[1:-1])
            ok, checked = field.default is not REQUIRED and field.default == expected, checked + 1
        else:
            ok = field.default is not REQUIRED
        if not ok:
            shown = "required" if field.default is REQUIRED else repr(field.default)
            wrong.append(f"line {row.line}: {path}: docs say {cell}, schema has {shown}")
    assert not wrong, "\n".join(wrong)
    assert checked >= len(documented) - 5, "most defaults should be written as literals so that they are checked"


def test_the_full_example_is_a_valid_config() -> None:
    """The page's "A full example" block is the first YAML block; it must pass the schema."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    config = parse_config(yaml.safe_load(blocks[0]))
    assert {e.kind for e in config.experts} == {"hf-extractive-qa", "replay"}
    assert config.router.kind == "rule"


def test_the_convention_parser_reads_escaped_pipes_and_expands_kinds() -> None:
    text = "| `experts[a\\|b].x` | t | `3` | m |\n| not a row |\n| `experts[*].y` | t | required | m |\n"
    rows = doc_rows(text)
    assert [(r.path, r.default_cell) for r in rows] == [("experts[a|b].x", "`3`"), ("experts[*].y", "required")]
    kinds = {"experts": ["a", "b", "c"]}
    assert expand("experts[a|b].x", kinds) == ["experts[a].x", "experts[b].x"]
    assert expand("experts[*].y", kinds) == ["experts[a].y", "experts[b].y", "experts[c].y"]
    assert expand("router[rule].rules[].expert", kinds) == ["router[rule].rules[].expert"]
