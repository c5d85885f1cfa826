"""The layer rules of docs/architecture.md, read from the code's own imports.

Every `import mmtune.x` / `from mmtune.x import y` in the package (at module level or inside a
function) is an edge. An edge may only go to the same package or to a floor below; data and models
are side by side and import neither each other; no import cycle between modules.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mmtune

PACKAGE = Path(mmtune.__file__).parent

# From the ground floor up; a module may import its own package and the floors below.
FLOORS = [
    {"mmtune", "errors", "rundir", "constants", "warning_filters"},
    {"config", "jinja_content"},
    {"data", "models"},
    {"builders", "estimate"},
    {"infer"},
    {"eval"},
    {"train"},
    {"export"},
    {"testing"},
    {"cli"},
    {"__main__"},
]
SIDE_BY_SIDE = [("data", "models"), ("builders", "estimate")]  # same floor, but neither imports the other


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    return names


def import_edges() -> dict[str, set[str]]:
    """module -> the mmtune modules it imports (a `from pkg import name` of a submodule counts as it)."""
    modules = module_names()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t if t in modules else node.module for t in targets]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{name}: use absolute imports"
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mmtune"


def floor_of(package: str) -> int:
    for i, floor in enumerate(FLOORS):
        if package in floor:
            return i
    raise AssertionError(f"package mmtune.{package} is on no floor: add it to FLOORS and docs/architecture.md")


def test_every_package_has_a_floor():
    for module in module_names():
        floor_of(package_of(module))


def back_imports(edges: dict[str, set[str]]) -> list[str]:
    """The edges that go up a floor, or across to another package of the same floor."""
    wrong = []
    for module, targets in sorted(edges.items()):
        here = package_of(module)
        for target in sorted(targets):
            there = package_of(target)
            if there != here and (floor_of(there) > floor_of(here)
                                  or (floor_of(there) == floor_of(here) and "mmtune" not in (here, there))):
                wrong.append(f"{module} -> {target}")
    return wrong


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Each import cycle between modules, found by a depth-first walk."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


def test_imports_only_go_down_or_within_a_package():
    wrong = back_imports(import_edges())
    assert not wrong, "imports up a floor or across a side-by-side pair:\n" + "\n".join(wrong)


def test_no_import_cycles():
    found = cycles(import_edges())
    assert not found, "import cycles:\n" + "\n".join(found)


def test_the_rules_catch_a_back_import_a_sibling_import_and_a_cycle():
    edges = {
        "mmtune.infer.load": {"mmtune.train.callbacks", "mmtune.data.encode"},  # up; down
        "mmtune.data.encode": {"mmtune.models.load", "mmtune.errors"},  # sideways; down
        "mmtune.eval.answer": {"mmtune.eval.vlm"},
        "mmtune.eval.vlm": {"mmtune.eval.answer"},
    }
    assert back_imports(edges) == ["mmtune.data.encode -> mmtune.models.load",
                                   "mmtune.infer.load -> mmtune.train.callbacks"]
    assert cycles(edges) == ["mmtune.eval.answer -> mmtune.eval.vlm -> mmtune.eval.answer"]


def test_architecture_doc_names_every_package():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for floor in FLOORS:
        for package in floor - {"mmtune", "__main__"}:
            assert f"`{package}" in doc, f"docs/architecture.md does not mention {package}"
