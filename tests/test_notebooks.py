"""The notebooks as committed: paired with their py:percent twins, stripped of outputs, thin.

Executing them is `make test`'s second pytest call (nbmake, smoke profile, a temporary home).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == ["01_download", "02_preprocess_cache", "03_train_gpu", "04_evaluate"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_is_in_sync(nb):
    twin = nb.with_suffix(".py").read_text()
    regenerated = subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "py:percent", "-o", "-", nb],
                                 capture_output=True, text=True, check=True).stdout
    assert regenerated == twin, f"{nb.name} and its .py differ: run `jupytext --sync {nb}`"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(nb):
    cells = json.loads(nb.read_text())["cells"]
    dirty = [i for i, c in enumerate(cells)
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{nb.name} holds outputs in cells {dirty}: jupyter nbconvert --clear-output --inplace {nb}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_are_thin(nb):
    """No logic in cells: no function or class definitions, no loops longer than a display line."""
    for cell in json.loads(nb.read_text())["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert "def " not in src and "class " not in src, src
            assert len(src.splitlines()) <= 16, src


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_twin_is_valid_python_without_unused_imports(nb):
    """The .py twin is what reviewers read and linters check: it must parse, and import only what it uses."""
    tree = ast.parse(nb.with_suffix(".py").read_text())
    imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert imported and not imported - used, f"unused imports in {nb.with_suffix('.py').name}: {imported - used}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_plot_or_table_is_followed_by_what_to_look_for(nb):
    """fastbook's rule: after an output that is the point, a sentence that says what to see in it."""
    cells = json.loads(nb.read_text())["cells"]
    for i, cell in enumerate(cells):
        src = "".join(cell["source"])
        shows = cell["cell_type"] == "code" and ("bn.plots." in src or "markdown_table" in src)
        if shows and i + 1 < len(cells):
            after = cells[i + 1]
            assert after["cell_type"] == "markdown" and len("".join(after["source"]).split("\n\n")[0].split()) >= 12, \
                f"cell {i} of {nb.name} needs a sentence after it: {src}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_opens_with_at_most_15_lines_of_markdown(nb):
    """Issue 24: what this step does and what you will see, then the first cell; the rest of the text sits
    beside the cell it explains."""
    cells = json.loads(nb.read_text())["cells"]
    first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
    opening = [line for c in cells[:first_code] for line in "".join(c["source"]).splitlines() if line.strip()]
    assert opening and len(opening) <= 15, f"{nb.name} opens with {len(opening)} lines of markdown before a cell"
