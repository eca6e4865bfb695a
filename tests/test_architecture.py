"""The package's layers (docs/ARCHITECTURE.md): a module imports only from layers below its own,
at the top of the file. A circle, or an import hidden in a function to dodge one, fails here, whether
written relative (`from .session import x`) or absolute (`import beetnet_utils.cli`); the checker
itself is tried on small sources that break the rule in each of those ways."""
from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "beetnet_utils"
LAYERS = [
    {"config", "storage", "augment"},                       # settings, atomic files, errors; tensor shifts
    {"runtime", "synth", "pca", "plots", "distributed"},    # environment facts, pure helpers; torchrun's ranks
    {"data", "model"},                                      # clip folders; the architectures
    {"features", "cache", "sources", "run", "realism"},     # the mel; its cache; the clip sources; a run; realism
    {"cache_build", "batches", "pretrained"},               # building the cache; training's batches; the shipped model
    {"audio", "train", "generate"},                         # listening; the loop; new spectrograms
    {"evaluate"},                                           # the report: scores, baselines, realism, tables
    {"widgets"},                                            # interactive views
    {"session"},                                            # the notebook's steps
    {"pipeline"},                                           # make demo's notebook driver
    {"cli"},                                                # the shell's verbs
    {"rank"},                                               # one process of a training in several (torchrun)
    {"__init__", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def imported_modules(node: ast.AST) -> list[str]:
    """The package's own modules an import statement reads, however it is written: relative (`from .x import y`,
    `from . import x`) or absolute (`from beetnet_utils.x import y`, `import beetnet_utils.x`, `from beetnet_utils
    import x`). A name that is no module (`import beetnet_utils`, `from beetnet_utils import BeetNetError`) is the
    package itself, `__init__`, which imports every layer."""
    if isinstance(node, ast.Import):
        paths = [alias.name.split(".") for alias in node.names]
        return [path[1] if len(path) > 1 else "__init__" for path in paths if path[0] == PACKAGE.name]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level == 1:
        path = node.module.split(".") if node.module else []
    elif node.level == 0 and node.module and node.module.split(".")[0] == PACKAGE.name:
        path = node.module.split(".")[1:]
    else:
        return []  # another package, or above this one
    if path:
        return [path[0]]
    return [alias.name if alias.name in MODULES else "__init__" for alias in node.names]


def violations(module: str, source: str) -> list[str]:
    """What in `module`'s source breaks the layers: an import of a module not below it, or one not at the top."""
    tree = ast.parse(source)
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        for name in imported_modules(node):
            if id(node) not in top:
                found.append(f"{module}.py:{node.lineno} imports {name} inside a function or block")
            elif LAYER.get(name, len(LAYERS)) >= LAYER[module]:
                found.append(f"{module}.py:{node.lineno} imports {name}, which is not in a lower layer")
    return found


def test_every_module_has_a_layer():
    assert set(MODULES) <= set(LAYER), f"add these to LAYERS and docs/ARCHITECTURE.md: {set(MODULES) - set(LAYER)}"


def test_the_module_table_of_architecture_md_is_these_layers():
    """docs/ARCHITECTURE.md's table names every module in the layer this test enforces, and no other."""
    text = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ((?:`\w+`(?:, )?)+) \|", text, re.MULTILINE)
    documented = {name: int(layer) for layer, names in rows for name in re.findall(r"`(\w+)`", names)}
    assert documented == {name: layer for name, layer in LAYER.items() if name not in ("__init__", "__main__")}


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_go_down_and_sit_at_the_top(module):
    assert violations(module, (PACKAGE / f"{module}.py").read_text()) == []


UPWARD = [  # in model.py (layer 2): each imports a module that is not below it
    "from .session import Session", "from . import session", "from .data import list_clips",  # data: the same layer
    "from beetnet_utils.session import Session", "from beetnet_utils.train.loop import x", "import beetnet_utils.cli",
    "import beetnet_utils.cli as cli", "import torch, beetnet_utils.run", "from beetnet_utils import train",
    "from beetnet_utils import BeetNetError", "import beetnet_utils",
]
HIDDEN = [  # in model.py: downward, but not at the top of the file; the import is on the second line
    "def f():\n    from .config import Config", "if True:\n    from beetnet_utils.pca import PCA",
    "try:\n    import beetnet_utils.config\nexcept ImportError:\n    pass", "class A:\n    from . import config",
]


@pytest.mark.parametrize("source", UPWARD + HIDDEN)
def test_the_checker_flags_every_way_of_writing_a_bad_import(source):
    line, why = (2, "inside a function or block") if source in HIDDEN else (1, "not in a lower layer")
    found = violations("model", "import numpy as np\n\n" + source)  # two lines before it
    assert len(found) == 1 and found[0].startswith(f"model.py:{line + 2} ") and why in found[0], found


def test_the_checker_lets_downward_imports_at_the_top_pass():
    source = """from __future__ import annotations
import torch
from torch import nn
import beetnet_utils_extra
from .config import Config
from .pca import PCA
from . import storage, augment
from beetnet_utils.runtime import pick_device
from beetnet_utils import synth
import beetnet_utils.plots as plots
def f():
    import json
    from sklearn.mixture import GaussianMixture
"""
    assert violations("model", source) == []


def test_public_names_are_the_functions_and_classes_not_their_modules():
    """`bn.train` and `bn.evaluate` share their modules' names: the package must bind the functions, even
    after something imports those modules."""
    import importlib

    import beetnet_utils as bn
    for module in set(MODULES) - {"__main__"}:  # __main__ would run the command line
        importlib.import_module(f"beetnet_utils.{module}")
    modules = {"audio", "cache", "features", "generate", "model", "plots", "runtime", "widgets"}
    for name in bn.__all__:
        assert isinstance(getattr(bn, name), types.ModuleType) == (name in modules), name
