"""The import rules of ARCHITECTURE.md, read from the source: each subpackage imports only the ones
beneath it, only ``cli/`` parses arguments, and no module imports itself back through others.

The rules are checked on every ``import`` in the package, including imports inside functions
(a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qhybrid"

#: Shared basics at the top of the package; they import no subpackage.
CORE = {"qhybrid", "qhybrid.errors", "qhybrid.io", "qhybrid.config", "qhybrid.devices", "qhybrid.plots",
        "qhybrid.versions"}

#: Each area and the areas it may import (besides itself). ``core`` is CORE minus plots, for the
#: areas that know nothing of images.
ALLOWED = {
    "core": {"core"},
    "quantum": {"core"},
    "data": {"core", "plots"},
    "models": {"core", "quantum"},
    "diffusion": {"core", "quantum", "models"},
    "evaluation": {"core", "plots", "data", "models", "diffusion"},
    "training": {"core", "plots", "quantum", "data", "models", "diffusion", "evaluation"},
    "pretrained": {"core", "models"},
    "workflows": {"core", "plots", "quantum", "data", "models", "diffusion", "evaluation", "training", "pretrained"},
    "cli": {"core", "plots", "quantum", "data", "models", "diffusion", "evaluation", "training", "pretrained",
            "workflows"},
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def area(module: str) -> str:
    if module == "qhybrid.plots":
        return "plots"
    if module in CORE:
        return "core"
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    """Every module (qhybrid or not) that ``path`` imports, anywhere in the file."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, name: str, is_package: bool = False) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            # 'from qhybrid.models import checkpoint' imports the module qhybrid.models.checkpoint
            # (the package is only its namespace); 'from qhybrid.models.vae import VAE' the module itself
            submodules = {f"{module}.{alias.name}" for alias in node.names} & set(MODULES)
            found |= submodules if len(submodules) == len(node.names) else submodules | {module}
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_the_rules_cover_every_subpackage():
    areas = {area(m) for m in MODULES}
    assert areas <= set(ALLOWED) | {"plots"}, areas - set(ALLOWED)


def forbidden(module: str, imported: set[str]) -> list[str]:
    """The qhybrid modules among ``imported`` that ``module``'s area may not import."""
    mine = area(module)
    allowed = ALLOWED[mine] | {mine}
    return sorted(m for m in imported if m in MODULES and m != module and area(m) not in allowed)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if area(m) != "plots"))
def test_each_module_imports_only_what_its_area_may(module):
    wrong = forbidden(module, GRAPH[module])
    assert not wrong, f"{module} ({area(module)}) imports {wrong}; it may import {sorted(ALLOWED[area(module)])}"


def test_plots_imports_only_the_core():
    assert {area(m) for m in GRAPH["qhybrid.plots"]} <= {"core"}


def test_only_the_cli_parses_arguments():
    users = sorted(m for m, path in MODULES.items() if "argparse" in imports_of(path) and area(m) != "cli")
    assert not users, f"argparse outside qhybrid/cli: {users}"


def test_no_module_imports_itself_back():
    """No cycles: a depth-first search over the import graph finds no back edge."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_checker_sees_forbidden_and_lazy_imports():
    """The rules are not vacuous: a quantum module importing models (even inside a function, even
    relatively) is flagged, and the same import from a workflow is not."""
    source = "def f():\n    from ..models.vae import VAE\n    from qhybrid.training import vae\n"
    found = imports_in(source, "qhybrid.quantum.circuits")
    assert forbidden("qhybrid.quantum.circuits", found) == ["qhybrid.models.vae", "qhybrid.training.vae"]
    assert forbidden("qhybrid.workflows.demo", imports_in(source, "qhybrid.workflows.demo")) == []
