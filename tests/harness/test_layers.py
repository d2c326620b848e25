"""The package's layers (ARCHITECTURE.md): a module imports only from its own layer or below, no
import cycle among project modules, and no function-local imports of project modules (those hide
cycles). Function-level and TYPE_CHECKING imports are part of the graph; optional third-party
packages (ray, nats_bench, xautodl...) are not project modules and may be imported anywhere."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "methods")

# module-name prefix -> layer; the longest matching prefix wins
LAYERS = {
    "harness": 1, "harness.core": 1,
    "harness.spaces.base": 2, "harness.budgets": 2, "harness.metrics": 2, "harness.paired": 2,
    "harness.data": 3, "harness.spaces": 3, "harness.spaces.registry": 3, "harness.archsets": 3, "harness.profile": 3,
    "harness.groundtruth": 3, "harness.groundtruth.base": 3, "harness.groundtruth.table": 3,
    "harness.groundtruth.noise": 3,
    "harness.engine": 4,
    "methods": 5, "harness.groundtruth.benchmark": 5, "harness.groundtruth.standalone": 5,
    "harness.groundtruth.providers": 5,
    "harness.suites": 5, "harness.executors": 5,
    "harness.study": 6,
    "harness.report": 7, "harness.plots": 7, "harness.check": 7, "harness.pdf": 7,
    "harness.cli": 8,
}
LAYER_NAMES = {1: "core", 2: "spaces/base, budgets, metrics", 3: "data, spaces", 4: "engine", 5: "plugins",
               6: "study", 7: "report, check", 8: "cli"}


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


MODULES = module_files()


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def project_module(name: str) -> str | None:
    """The project module an import names (``harness.x.y`` where ``y`` may be an attribute)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for every import statement in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                names = [f"{mod}.{a.name}" for a in child.names] + [mod]
            for n in dict.fromkeys(project_module(n) for n in names):
                if n and n != module:
                    found.append((n, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    assert all(layer_of(m) for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_downwards(module):
    mine = layer_of(module)
    upward = [f"{module}:{line} imports {target} (layer {layer_of(target)} {LAYER_NAMES[layer_of(target)]}; "
              f"{module} is layer {mine} {LAYER_NAMES[mine]})"
              for target, line, _ in GRAPH[module] if layer_of(target) > mine]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_local_project_imports(module):
    local = [f"{module}:{line} imports {target} inside a function" for target, line, inner in GRAPH[module] if inner]
    assert not local, "\n".join(local)


def test_no_import_cycle():
    edges = {m: sorted({t for t, _, _ in GRAPH[m]}) for m in MODULES}
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    edges = {m: [t for t in ts if not t.startswith(m + ".")] for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            dfs(m)


def test_core_never_imports_plugins():
    bad = [(m, t) for m in MODULES if layer_of(m) == 1 for t, _, _ in GRAPH[m] if t.split(".")[0] == "methods"]
    assert not bad


def test_check_does_not_import_matplotlib():
    """`harness check` runs in CI gates without a plotting stack: no module it imports may import
    matplotlib (transitively through project modules)."""
    seen, todo = set(), ["harness.check"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [t for t, _, _ in GRAPH[m]]
    plotting = [m for m in seen if "matplotlib" in MODULES[m].read_text()]
    assert not plotting, f"harness check imports {plotting}, which import matplotlib"
