"""The package's shape, checked: small modules, layers that only import downwards, no import cycle.

Every import counts, including the late ones inside functions: a cycle hidden in a function
is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labkit"
MAX_LINES = 400
# Lower layers first; a module may import its own layer and the ones before it, never a later one.
LAYERS = ("errors", "core", "stack", "faas", "pipeline", "analysis", "experiments", "teaching", "cli")
# The FaaS runner is a server the stack runs; it needs nothing of labkit but the error types and core.
ALLOWED_BELOW = {"faas": {"errors", "core"}}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The labkit modules ``path`` imports anywhere in it (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known}
    # The root package is imported before any module of it anyway; its lazy `labkit.Lab` is not a layer.
    return {m for m in found if m in known and m not in (name, "labkit")}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, name, set(mods)) for name, path in mods.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def test_no_module_is_longer_than_400_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (lines): {long}"


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodules is how packages work
            if state[nxt] == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if state[start] == 0 and (cycle := visit(start)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for module, targets in graph().items():
        mine = layer(module)
        if mine == "root":
            continue
        allowed = ALLOWED_BELOW.get(mine, set(LAYERS[: LAYERS.index(mine) + 1]))
        wrong += [f"{module} -> {t}" for t in sorted(targets) if layer(t) not in allowed | {mine, "root"}]
    assert not wrong, "imports against the layers (see labkit/__init__.py):\n" + "\n".join(wrong)


def test_the_layers_named_here_are_the_packages_on_disk() -> None:
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    on_disk |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert on_disk == set(LAYERS)
