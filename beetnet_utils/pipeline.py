"""`make demo`: execute the four notebooks headless, keep the executed copies and their figures.

The committed notebooks are never touched: executed copies go to OUT/notebooks, every image
they show to OUT/figures, and data, cache and runs to OUT (BEETNET_HOME).
"""
from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

# (notebook, extra environment, name of the executed copy): 03 runs once per model preset
STEPS = (("01_download", {}, "01_download"), ("02_preprocess_cache", {}, "02_preprocess_cache"),
         ("03_train_gpu", {"BEETNET_PRESET": "seed"}, "03_train_gpu-seed"),
         ("03_train_gpu", {"BEETNET_PRESET": "best"}, "03_train_gpu-best"), ("04_evaluate", {}, "04_evaluate"))
REPO = Path(__file__).resolve().parents[1]


def run_notebooks(out: Path, profile: str = "demo", notebooks_dir: Path = REPO / "notebooks") -> Path:
    """Run the notebooks in order with BEETNET_PROFILE and BEETNET_HOME set; returns the report path."""
    import nbformat
    from nbclient import NotebookClient

    out = Path(out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    os.environ["BEETNET_PROFILE"], os.environ["BEETNET_HOME"] = profile, str(out)  # the kernels inherit these
    started = time.perf_counter()
    for notebook, extra_env, name in STEPS:
        os.environ.update(extra_env)
        nb = nbformat.read(notebooks_dir / f"{notebook}.ipynb", as_version=4)
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        t0 = time.perf_counter()

        def progress(cell, cell_index, execute_reply, name=name, code=code, t0=t0):
            print(f"[{name}] cell {code.index(cell_index) + 1}/{len(code)} done "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

        client = NotebookClient(nb, timeout=None, kernel_name="python3",
                                resources={"metadata": {"path": str(notebooks_dir)}}, on_cell_executed=progress)
        try:
            client.execute()
        finally:
            nbformat.write(nb, out / "notebooks" / f"{name}.ipynb")
        for i, cell in enumerate(nb.cells):
            for j, output in enumerate(cell.get("outputs", [])):
                png = output.get("data", {}).get("image/png")
                if png:
                    (out / "figures" / f"{name}_cell{i:02d}_{j}.png").write_bytes(base64.b64decode(png))
        print(f"[{name}] finished in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"all four notebooks ran in {time.perf_counter() - started:.0f} s")
    return out / "runs" / "report.json"


def demo(out: Path, profile: str = "demo") -> None:
    from .evaluate import markdown_table

    out = Path(out).resolve()
    report_path = run_notebooks(out, profile)
    print()
    print(markdown_table(json.loads(report_path.read_text())))
    print(f"""
executed notebooks: {out}/notebooks/
figures:            {out}/figures/
clips, cache, runs: {out}/clips  {out}/cache  {out}/runs
report (JSON):      {report_path}""")
