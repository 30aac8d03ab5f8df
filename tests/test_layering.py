"""Imports point down the stack only: files -> clips -> model -> loss or tracks -> results ->
metrics, an application layer on top, commands above it.

Every module of ifc_jax is read with `ast` (function-level imports included) and each import of
another ifc_jax package is checked against the stack below: a package may import packages of
a lower level, and itself; never a higher level, nor a sibling of its own level.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "ifc_jax")

# First name under ifc_jax -> level. Siblings (same level) must not import each other.
LEVELS = {
    "storage": 0, "host": 0,  # local and cloud files; the machine's CPU cores
    "io": 1,
    "config": 2,
    "models": 3, "checkpoints": 3,
    "data": 4, "flops": 4,
    "train": 5, "inference": 5, "convert": 5,
    "evaluation": 6, "visualize": 6,
    "benchmarks": 7,
    "api": 8,
    "commands": 9,
    "cli": 10,
    "__main__": 11, "__init__": 11,  # `python -m ifc_jax`; the package's facade (ifc_jax.load)
}


def _unit(module: str) -> str:
    """'ifc_jax.data.clips' -> 'data'; 'ifc_jax' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: str, module: str) -> list[tuple[int, str]]:
    """(line, imported ifc_jax module) of every import in the file."""
    with open(path, encoding="utf-8") as stream:
        tree = ast.parse(stream.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name.split(".")[0] == "ifc_jax"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "ifc_jax":
                continue
            if name == "ifc_jax":  # `from ifc_jax import visualize`: the names are modules
                found += [(node.lineno, f"ifc_jax.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, name))
    return found


def _modules() -> list[tuple[str, str]]:
    modules = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                modules.append((path, relative.removesuffix(".__init__")))
    return sorted(modules)


def upward_imports(modules: list[tuple[str, str]]) -> list[str]:
    problems = []
    for path, module in modules:
        unit = _unit(module)
        for line, imported in _imports(path, module):
            target = _unit(imported)
            if target == unit:
                continue
            if unit not in LEVELS or target not in LEVELS:
                problems.append(f"{module}:{line}: {imported}: not in the LEVELS table")
            elif LEVELS[target] >= LEVELS[unit]:
                problems.append(f"{module}:{line} imports {imported} "
                                f"({target} is level {LEVELS[target]}, {unit} {LEVELS[unit]})")
    return problems


def test_every_import_points_down_the_stack():
    modules = _modules()
    assert len(modules) > 40  # the walk found the package
    assert upward_imports(modules) == []


@pytest.mark.parametrize("source,message", [
    ("from ifc_jax.inference import predictor\n", "ifc_jax.inference"),  # data -> inference
    ("import ifc_jax.api.model\n", "ifc_jax.api.model"),
    ("from ifc_jax import visualize\n", "ifc_jax.visualize"),
    ("def f():\n    from ifc_jax.flops import encoder_flops\n", "ifc_jax.flops"),  # sibling
])
def test_an_upward_import_is_caught(tmp_path, source, message):
    path = tmp_path / "bad.py"
    path.write_text(source)
    problems = upward_imports([(str(path), "ifc_jax.data.bad")])
    assert len(problems) == 1 and message in problems[0]


def test_a_downward_import_passes(tmp_path):
    path = tmp_path / "good.py"
    path.write_text("from ifc_jax.io import UserError\nfrom ifc_jax.models import ifc\n"
                    "from . import masks\n")
    assert upward_imports([(str(path), "ifc_jax.data.good")]) == []
