"""make demo's notebook driver, for real: every notebook in a real kernel on the smoke profile, through
each branch a person can take (04 before any training, on the pretrained model alone; 03 with either preset and
with a time budget, `best` fine-tuning the pretrained model as notebook 03 does by default; 04 with two runs)."""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime

import nbformat

from beetnet_utils.pipeline import Step, run_notebooks


def outputs(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells for o in c.get("outputs", []))


class Stamped:
    """Stands in for sys.stdout: each line written, with when it arrived."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.lines += [(time.time(), line) for line in text.splitlines() if line]
        return len(text)

    def flush(self) -> None:
        pass

    def when(self, start: str) -> float:
        return next(t for t, line in self.lines if line.startswith(start))


def ran(cell) -> tuple[float, float]:
    """When the kernel started and finished executing `cell` (nbclient's record of the kernel's messages)."""
    timing = cell.metadata.execution
    return tuple(datetime.fromisoformat(timing[k].replace("Z", "+00:00")).timestamp()
                 for k in ("iopub.execute_input", "shell.execute_reply"))


def test_the_driver_runs_every_notebook_path_and_leaves_its_own_environment_alone(tmp_path, monkeypatch):
    before = dict(os.environ)
    printed = Stamped()
    monkeypatch.setattr(sys, "stdout", printed)
    steps = (Step("01_download", "01"), Step("02_preprocess_cache", "02"),
             Step("04_evaluate", "04-no-run"),
             Step("03_train_gpu", "03-original", {"BEETNET_PRESET": "original", "BEETNET_MINUTES": "0.0001"}),
             Step("03_train_gpu", "03-best", {"BEETNET_PRESET": "best"}),
             Step("04_evaluate", "04-two-runs"))
    report_path = run_notebooks(tmp_path, "smoke", steps)
    assert dict(os.environ) == before

    monkeypatch.undo()
    said = "\n".join(line for _, line in printed.lines)
    assert "[03-original] epoch 1: train L1" in said
    assert "[03-original] time budget of 0.0001 min reached after epoch 1" in said
    assert "[03-best] epoch 2: train L1" in said
    # a person's view: one line per notebook with its time, the epochs; the rest stays in the notebooks
    assert all(f"[{step.name}] finished in" in said for step in steps)
    assert "running on:" not in said and "profile:" not in said
    # streamed while the training cell ran (epoch 2 trains after epoch 1's line), not printed after it
    executed = tmp_path / "notebooks"
    cells = nbformat.read(executed / "03-best.ipynb", as_version=4).cells
    started, finished = ran(next(c for c in cells if "session.train(" in c.source))
    assert started < printed.when("[03-best] epoch 1: train L1") < finished
    runs = tmp_path / "runs"
    assert json.loads((runs / "smoke-original" / "history.json").read_text())[-1]["epoch"] == 1
    assert len(json.loads((runs / "smoke-finetuned" / "history.json").read_text())) == 2
    assert not (runs / "smoke-best").exists()  # notebook 03's best fine-tunes by default: the run is `finetuned`
    assert "fine-tuned from the pretrained model" in outputs(executed / "03-best.ipynb")

    before_training = outputs(executed / "04-no-run.ipynb")
    assert "showing the pretrained BeetNet" in before_training
    assert "models: pretrained; the views below use pretrained" in before_training
    assert "models: original, finetuned, pretrained; the views below use finetuned" in outputs(
        executed / "04-two-runs.ipynb")
    report = json.loads(report_path.read_text())
    assert list(report["runs"]) == ["original", "finetuned", "pretrained"]
    assert len(list((tmp_path / "figures").glob("04-two-runs_*.png"))) >= 6
