"""Data flows one way: pipelines -> operators -> routing; routing knows nothing of Ray."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "package, forbidden",
    [("routing", {"ray", "operators", "pipelines"}), ("operators", {"pipelines"})],
)
def test_no_upward_imports(package, forbidden):
    offenders = {
        str(p.relative_to(REPO)): sorted(_imports(p) & forbidden)
        for p in sorted((REPO / package).glob("*.py"))
        if _imports(p) & forbidden
    }
    assert offenders == {}
