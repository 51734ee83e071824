"""Every test that starts Ray carries the `ray` marker, so `-m "not ray"` is the fast part.

Found by reading the test modules (no test is run): a test starts Ray when it, a fixture it
asks for (from its module or `conftest.py`), or a helper it calls (from its module, or
imported from a helper module of `tests/`) calls `ray.init`, `start_ray`, `run_job`,
`start_endpoint` or `serve.run`, or starts a cluster with `ray start`. Its marks are its
own decorators, its class's and the module's `pytestmark`.

A CLI command run with arguments (`main(["run", ...])`) is not counted: whether it reaches
Ray depends on the config (most such unmarked tests exit on a config error first), which
reading the code cannot tell.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
STARTERS = {"ray.init", "init_ray", "start_ray", "run_job", "start_endpoint", "serve.run"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _strings(node: ast.AST) -> list[str]:
    """The string constants of a list / tuple literal argument, in order."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _starts_ray_itself(call: ast.Call) -> bool:
    name = _dotted(call.func)
    if name in STARTERS or name.split(".")[-1] in {"start_ray", "run_job", "start_endpoint"}:
        return True
    return any(_strings(arg)[:2] == ["ray", "start"] for arg in call.args)


def _is_ray_mark(node: ast.AST) -> bool:
    return _dotted(node) == "pytest.mark.ray" or (isinstance(node, ast.Call) and _dotted(node.func) == "pytest.mark.ray")


class Module:
    """One test (or helper) module's functions, fixtures and marks."""

    def __init__(self, source: str, name: str = "") -> None:
        tree = ast.parse(source)
        self.name = name  # module name, for helper modules
        self.imports = {(n.module, a.asname or a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                        for a in n.names}
        self.functions: dict[str, ast.FunctionDef] = {}
        self.tests: list[tuple[str, ast.FunctionDef, bool]] = []  # name, node, marked
        module_marked = False
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(_dotted(t) == "pytestmark" for t in node.targets):
                marks = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
                module_marked = any(_is_ray_mark(m) for m in marks)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
                if node.name.startswith("test"):
                    self.tests.append((node.name, node, module_marked or any(map(_is_ray_mark, node.decorator_list))))
            elif isinstance(node, ast.ClassDef):
                class_marked = module_marked or any(map(_is_ray_mark, node.decorator_list))
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.functions.setdefault(item.name, item)
                        if item.name.startswith("test"):
                            marked = class_marked or any(map(_is_ray_mark, item.decorator_list))
                            self.tests.append((f"{node.name}.{item.name}", item, marked))


def _params(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in fn.args.args + fn.args.kwonlyargs]


def ray_starters(modules: list[Module], seed: frozenset[str] = frozenset()) -> set[str]:
    """Names of the functions and fixtures (across `modules`) that start Ray, directly or
    through another one (or one in `seed`): a fixpoint over calls and fixture parameters."""
    functions: dict[str, list[ast.FunctionDef]] = {}
    for module in modules:
        for name, fn in module.functions.items():
            functions.setdefault(name, []).append(fn)
    starting = set(seed) | {n for n, fns in functions.items() for fn in fns
                            if any(isinstance(c, ast.Call) and _starts_ray_itself(c) for c in ast.walk(fn))}
    while True:
        more = {n for n, fns in functions.items() if n not in starting for fn in fns
                if set(_params(fn)) & starting
                or any(isinstance(c, ast.Call) and _dotted(c.func).split(".")[-1] in starting for c in ast.walk(fn))}
        if not more:
            return starting
        starting |= more


def unmarked(test_module: Module, helpers: list[Module]) -> list[str]:
    """The tests of `test_module` that start Ray but do not carry the `ray` marker.
    Helpers count through conftest's fixtures and the names the test module imports."""
    conftest = [h for h in helpers if h.name == "conftest"]
    seed = set(ray_starters(conftest))
    for helper in helpers:
        seed |= {name for module, name in test_module.imports if module == helper.name} & ray_starters([helper])
    starting = ray_starters([test_module], frozenset(seed))
    bad = []
    for name, fn, marked in test_module.tests:
        if marked:
            continue
        calls = {_dotted(c.func).split(".")[-1] for c in ast.walk(fn) if isinstance(c, ast.Call)}
        direct = any(isinstance(c, ast.Call) and _starts_ray_itself(c) for c in ast.walk(fn))
        if direct or (set(_params(fn)) | calls) & starting:
            bad.append(name)
    return bad


def _helpers() -> list[Module]:
    return [Module(p.read_text(), p.stem) for p in sorted(TESTS.glob("*.py")) if not p.name.startswith("test_")]


def test_every_test_that_starts_ray_is_marked():
    helpers = _helpers()
    offenders = {p.name: bad for p in sorted(TESTS.glob("test_*.py")) if (bad := unmarked(Module(p.read_text()), helpers))}
    assert offenders == {}


def test_the_scan_sees_the_ray_tests():
    # not vacuous: the job tests are found to start Ray (and are marked)
    helpers = _helpers()
    module = Module((TESTS / "test_batch_job.py").read_text())
    starting = ray_starters([module], frozenset(ray_starters([h for h in helpers if h.name == "conftest"])))
    assert "local_ray" in starting
    found = [name for name, fn, _ in module.tests if (set(_params(fn)) | {
        _dotted(c.func).split(".")[-1] for c in ast.walk(fn) if isinstance(c, ast.Call)}) & starting]
    assert len(found) >= 5


def test_the_scan_flags_an_unmarked_ray_test():
    source = '''
import pytest
import ray

@pytest.fixture
def my_ray():
    ray.init(num_cpus=1)
    yield
    ray.shutdown()

def helper(tmp):
    return run_job(tmp)

def test_via_fixture(my_ray):
    pass

def test_via_conftest(local_ray):
    pass

def test_via_helper(tmp_path):
    helper(tmp_path)

def test_via_cluster(tmp_path):
    subprocess.run(["ray", "start", "--head"])

def test_validate_only(tmp_path):
    main(["validate", str(tmp_path)])

def test_unrelated_helper(tmp_path):
    scenario(tmp_path)

@pytest.mark.ray
def test_marked(my_ray):
    pass

class TestGroup:
    def test_in_class(self, my_ray):
        pass
'''
    conftest = Module("import ray\nimport pytest\n@pytest.fixture\ndef local_ray():\n    ray.init()\n    yield ray\n", "conftest")
    # a helper module's function that starts Ray counts only where a test module imports it
    other = Module("import ray\ndef scenario(tmp):\n    ray.init()\n", "scenarios")
    assert unmarked(Module(source), [conftest, other]) == [
        "test_via_fixture", "test_via_conftest", "test_via_helper", "test_via_cluster", "TestGroup.test_in_class"]
    imported = unmarked(Module("from scenarios import scenario\n" + source), [conftest, other])
    assert "test_unrelated_helper" in imported
    assert unmarked(Module("import pytest\npytestmark = [pytest.mark.ray]\n" + source), [conftest, other]) == []
