"""The compare and interpolate views in a real browser: Voila serves them, Debian's Chromium shows them.

Playwright drives the system Chromium (never a downloaded one). If the browser cannot start, the
test fails and says why; it never skips.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from beetnet_utils.run import load_run
from beetnet_utils.train import train

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).parents[1]
REFINE = 5  # steps of encode-time refinement given to the tiny run, as `best` has 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def views_app(tmp_path_factory, smoke, smoke_cache):
    """A tiny trained run on smoke data and a notebook that shows both views, served by Voila."""
    root = tmp_path_factory.mktemp("browser")
    run_dir = root / "run"
    train(smoke_cache, run_dir, smoke.replace(train={"epochs": 2}), progress=False, log=lambda m: None)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import beetnet_utils as bn\n"
        f"run, cache = bn.load_run({str(run_dir)!r}), bn.load_cache({str(smoke_cache.path)!r})\n"
        f"run.config = run.config.replace(model={{'refine_steps': {REFINE}}})  # as best: the worker thread's case\n"
        "compare = bn.widgets.CompareView(run, cache, n_iter=4)\n"
        "walk = bn.widgets.InterpolateView(run, cache, n_iter=4)\n"
        "display(compare.widget, walk.widget)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "views.ipynb")
    port = free_port()
    log = open(root / "voila.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(root / "views.ipynb"), "--no-browser",
                             f"--port={port}", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=root)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None, (root / "voila.log").read_text()
        time.sleep(0.2)
    run = load_run(run_dir)
    run.config = run.config.replace(model={"refine_steps": REFINE})
    yield {"url": f"http://127.0.0.1:{port}/", "root": root, "run": run, "cache": smoke_cache}
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make browser` (apt-get install -y chromium)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        except Exception as exc:
            pytest.fail(f"Chromium at {CHROMIUM} could not start: {exc}")
        yield b
        b.close()


def readout(page, n: int) -> dict:
    return page.locator(".beetnet-readout").nth(n).evaluate("e => Object.assign({}, e.dataset)")


def settle(page, selector: str, n: int, old: str, shots: Path, name: str, timeout: float = 60) -> str:
    """Wait until the n-th element's src differs from `old` and then stays put for a second."""
    deadline, last, since = time.time() + timeout, None, time.time()
    while time.time() < deadline:
        src = page.locator(selector).nth(n).get_attribute("src")
        if src != last:
            last, since = src, time.time()
        elif src != old and time.time() - since > 1.0:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            return src
        page.wait_for_timeout(100)
    page.screenshot(path=str(shots / f"{name}-timeout.png"), full_page=True)
    raise AssertionError(f"{selector}[{n}] did not change and settle within {timeout} s (see {shots})")


def press_slider(page, slider: int, key: str, times: int, image: int, audio: int, shots: Path, name: str):
    """Move the slider-th slider with the keyboard; wait until its view's image and audio change and settle."""
    old_image = page.locator("img").nth(image).get_attribute("src")
    old_audio = page.locator("audio").nth(audio).get_attribute("src")
    handle = page.locator(".noUi-handle").nth(slider)
    handle.focus()
    for _ in range(times):
        handle.press(key)
    settle(page, "img", image, old_image, shots, f"{name}-image")
    settle(page, "audio", audio, old_audio, shots, f"{name}-audio")
    return float(handle.get_attribute("aria-valuenow"))


def test_views_respond_to_the_keyboard_in_chromium(views_app, browser):
    run, cache, shots = views_app["run"], views_app["cache"], views_app["root"]
    page = browser.new_page(viewport={"width": 1300, "height": 1600})
    page.goto(views_app["url"], timeout=120_000)
    # The compare view draws its first clip from the encoder's code; its worker thread draws it again,
    # refined, with the reconstruction's audio: widget updates from a background thread reach the page.
    page.wait_for_function("document.querySelectorAll('.beetnet-readout').length == 2 && "
                           "document.querySelector('.beetnet-readout').dataset.refined == '1' && "
                           "document.querySelectorAll('audio[src]').length == 4", timeout=120_000)
    page.screenshot(path=str(shots / "0-loaded.png"), full_page=True)
    assert readout(page, 0)["clip"] == cache.names[cache.indices("test")[0]]

    # compare view: three steps right on the clip slider (image 0, reconstruction audio 2)
    assert press_slider(page, 0, "ArrowRight", 3, image=0, audio=2, shots=shots, name="1-compare") == 3.0
    test = cache.indices("test")
    first_recording = sorted(set(cache.recordings[test]))[0]
    chosen = test[cache.recordings[test] == first_recording][3]
    x = cache.mels[chosen].astype(np.float32)
    expected = np.abs(run.reconstruct(x).numpy() - x).mean() / run.stats["std"]
    shown = readout(page, 0)
    assert shown["clip"] == cache.names[chosen]
    assert float(shown["l1"]) == pytest.approx(expected, abs=2e-4)
    assert re.search(rf"{cache.names[chosen]}</b>: L1 {float(shown['l1']):.4f}", page.content())

    # interpolation view: alpha from 0.50 down to 0.30 (image 1, the mix's audio 3)
    alpha = press_slider(page, 1, "ArrowLeft", 4, image=1, audio=3, shots=shots, name="2-interpolate")
    assert alpha == pytest.approx(0.30) and readout(page, 1)["alpha"] == "0.30"
