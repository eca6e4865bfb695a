"""The package's layers (docs/ARCHITECTURE.md): a module imports only from layers below its own,
at the top of the file. A circle, or an import hidden in a function to dodge one, fails here."""
from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "beetnet_utils"
LAYERS = [
    {"config", "storage", "augment"},                       # settings, atomic files, errors; tensor shifts
    {"runtime", "synth", "pca", "plots"},                   # environment facts, pure helpers
    {"data", "model"},                                      # clip folders; the architectures
    {"features", "run", "realism"},                         # the mel cache; a trained run; realism measures
    {"audio", "train", "evaluate", "generate"},             # what is done with runs and caches
    {"widgets"},                                            # interactive views
    {"session"},                                            # the notebook's steps
    {"pipeline"},                                           # make demo's notebook driver
    {"cli"},                                                # the shell's verbs
    {"__init__", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def internal_imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at top level) for every import of a sibling module."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            found += [(n.split(".")[0], node.lineno, id(node) in top) for n in names]
    return found


def test_every_module_has_a_layer():
    assert set(MODULES) <= set(LAYER), f"add these to LAYERS and docs/ARCHITECTURE.md: {set(MODULES) - set(LAYER)}"


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_go_down_and_sit_at_the_top(module):
    for name, line, at_top in internal_imports(module):
        assert at_top, f"{module}.py:{line} imports .{name} inside a function or block"
        assert LAYER[name] < LAYER[module], f"{module}.py:{line} imports .{name}, which is not in a lower layer"


def test_public_names_are_the_functions_and_classes_not_their_modules():
    """`bn.train` and `bn.evaluate` share their modules' names: the package must bind the functions, even
    after something imports those modules."""
    import importlib

    import beetnet_utils as bn
    for module in set(MODULES) - {"__main__"}:  # __main__ would run the command line
        importlib.import_module(f"beetnet_utils.{module}")
    modules = {"audio", "features", "generate", "model", "plots", "runtime", "widgets"}
    for name in bn.__all__:
        assert isinstance(getattr(bn, name), types.ModuleType) == (name in modules), name
