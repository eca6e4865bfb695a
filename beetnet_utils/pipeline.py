"""`make demo`: execute the four notebooks headless, keep the executed copies and their figures.

The committed notebooks are never touched: executed copies go to OUT/notebooks, every image
they show to OUT/figures, and data, cache and runs to OUT. Each notebook's choices (profile,
home folder, preset) reach it through its own kernel's environment only; this process's
environment is left as it was. What the notebooks print (the epoch lines of training, say)
is streamed to the terminal as it happens.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from .audio import listen_runs, save_wav
from .cache import load_cache
from .config import DEFAULT_PRESET, FINETUNED, PRESETS, PRETRAINED
from .evaluate import markdown_table
from .pretrained import load_pretrained
from .run import load_run
from .storage import claim_dir

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Step:
    notebook: str
    name: str  # of the executed copy
    env: dict[str, str] = field(default_factory=dict)


# 03 runs once per preset from scratch (the specification's and ours), then fine-tunes the pretrained `best`;
# 04 compares the three with the pretrained model.
STEPS = (Step("01_download", "01_download"), Step("02_preprocess_cache", "02_preprocess_cache"),
         *(Step("03_train_gpu", f"03_train_gpu-{p}", {"BEETNET_PRESET": p, "BEETNET_INIT": "scratch"})
           for p in PRESETS),
         Step("03_train_gpu", f"03_train_gpu-{FINETUNED}",
              {"BEETNET_PRESET": DEFAULT_PRESET, "BEETNET_INIT": "pretrained"}),
         Step("04_evaluate", "04_evaluate"))


# What a person running make demo wants to see as it happens; the rest stays in the executed notebooks.
ECHOED = re.compile(r"^(epoch \d|resuming|time budget|the run's time budget|note:|warning|error)")


class EchoingClient(NotebookClient):
    """A notebook client that also prints, as they arrive, the lines of a cell's text output that a person
    watches for (ECHOED: the epochs of training, warnings, errors)."""

    def __init__(self, nb, prefix: str, **kw):
        super().__init__(nb, **kw)
        self.prefix = prefix

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "stream":
            for line in msg["content"]["text"].splitlines():
                if ECHOED.match(line.strip()):
                    print(f"[{self.prefix}] {line.strip()}", flush=True)
        return super().output(outs, msg, display_id, cell_index)


def save_figures(nb, folder: Path, name: str) -> None:
    for i, cell in enumerate(nb.cells):
        for j, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                (folder / f"{name}_cell{i:02d}_{j}.png").write_bytes(base64.b64decode(png))


def run_notebook(notebook: Path, executed: Path, env: dict[str, str], name: str, figures: Path | None = None) -> None:
    """Execute one notebook in a fresh kernel whose environment is `env`; save the executed copy."""
    nb = nbformat.read(notebook, as_version=4)
    # IPC sockets, not TCP on localhost: nothing listens on a port, and no kernel warning about plain-text TCP.
    # Their path is absolute (a relative one is bound in the kernel's working folder) and short (Unix: ~107 bytes).
    sockets = Path(tempfile.mkdtemp(prefix="beetnet-ipc-"))
    km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "kernel"))
    client = EchoingClient(nb, name, km=km, timeout=None, resources={"metadata": {"path": str(notebook.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute(env=env)
    finally:
        if km.has_kernel:  # a kernel manager passed in is the caller's to shut down
            run_sync(km.shutdown_kernel)(now=True)
        shutil.rmtree(sockets, ignore_errors=True)
        executed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed)
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
            save_figures(nb, figures, name)
    print(f"[{name}] finished in {time.perf_counter() - t0:.0f} s", flush=True)


def run_notebooks(out: Path, profile: str = "demo", steps: tuple[Step, ...] = STEPS,
                  notebooks_dir: Path = REPO / "notebooks", extra_env: dict[str, str] | None = None) -> Path:
    """Run the notebooks in order, each with BEETNET_PROFILE and BEETNET_HOME in its kernel's environment."""
    out = claim_dir(Path(out).resolve(), "demo")  # never a folder of other files: the repository's root, say
    for folder in (out / "notebooks", out / "figures"):  # fail here, before any kernel starts
        folder.mkdir(parents=True, exist_ok=True)
    base = dict(os.environ) | {"BEETNET_PROFILE": profile, "BEETNET_HOME": str(out)}
    started = time.perf_counter()
    for step in steps:
        run_notebook(notebooks_dir / f"{step.notebook}.ipynb", out / "notebooks" / f"{step.name}.ipynb",
                     base | (extra_env or {}) | step.env, step.name, out / "figures")
    print(f"all notebooks ran in {time.perf_counter() - started:.0f} s")
    return out / "runs" / "report.json"


def listening_files(out: Path, profile: str) -> dict[str, Path]:
    """One held-out clip as WAVs, to hear beside each other: the real clip, its own mel inverted (what the
    inversion alone does to it), and each model's reconstruction."""
    cache = load_cache(out / "cache")
    runs = {p: load_run(out / "runs" / f"{profile}-{p}") for p in (*PRESETS, FINETUNED)
            if (out / "runs" / f"{profile}-{p}" / "best.pt").exists()} | {PRETRAINED: load_pretrained()}
    index = int(cache.indices("test")[0])
    sounds = listen_runs(runs, cache, index)
    clip = Path(cache.names[index]).stem
    return {name: save_wav(wave, out / "listen" / f"{clip}-{name.replace(' ', '_')}.wav", cache.features.sample_rate)
            for name, wave in sounds.items()}


def demo(out: Path, profile: str = "demo") -> None:
    out = Path(out).resolve()
    report_path = run_notebooks(out, profile)
    wavs = listening_files(out, profile)
    print()
    print(markdown_table(json.loads(report_path.read_text())))
    print(f"""
executed notebooks: {out}/notebooks/  (open them: every table, figure and player)
figures:            {out}/figures/
listen:             {'  '.join(str(p.relative_to(out)) for p in wavs.values())}  (in {out})
clips, cache, runs: {out}/clips  {out}/cache  {out}/runs
report (JSON):      {report_path}""")
