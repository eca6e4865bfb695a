"""Colab, end to end, against a stand-in: the Colab image's Python and packages (.venv-colab, built by
`make colab-venv` from tests/colab-image.txt), a stand-in google.colab (tests/standins), a folder for
/content, a folder for Google Drive, and Kaggle on loopback. The four notebooks run in real kernels of
that Python, their set-up cell cloning the code and running colab_setup.sh as in Colab. Notebook 03 trains
the default preset (dropout and random moves: every random state must come back) and loses its VM twice,
once after a checkpoint and once in the middle of writing one; the run resumed from Drive equals one
trained straight through. Then notebook 04's views are driven in its kernel, under ipywidgets 7."""
from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from beetnet_utils import download, get_config, runtime
from beetnet_utils import session as sessions
from beetnet_utils.config import DEFAULT_PRESET, FINETUNED

from helpers import kaggle_port
from journey import REPO, STANDINS, code_repository, run_notebook, serve_kaggle, zip_of

COLAB_PYTHON = REPO / ".venv-colab" / "bin" / "python"
TOKEN = "KGAT_standin_token_0123456789"
EPOCHS = 2  # notebook 03's run: lost after epoch 1's checkpoint, lost while writing epoch 2's, then finished
STALLED_DISK = STANDINS / "stalled_disk"  # on PYTHONPATH: last.pt's temporary file stops after 4 KiB


def freeze() -> list[str]:
    return subprocess.run([COLAB_PYTHON, "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True,
                          text=True).stdout.splitlines()


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """The folders and the kernel environment of a Colab VM, and a loopback Kaggle serving the smoke clips."""
    assert COLAB_PYTHON.exists(), "the Colab stand-in is missing: run `make colab-venv` (make test does)"
    root = tmp_path_factory.mktemp("colab")
    clips = download("demo", root / "demo-clips", get_config("smoke"), progress=False)
    assert len(clips.recordings) >= 6  # enough recordings for a train/val/test split
    (root / "secrets.json").write_text(json.dumps({"KAGGLE_API_TOKEN": TOKEN}))
    for d in ("content", "drive", "home"):
        (root / d).mkdir()
    env = {
        "PATH": f"{COLAB_PYTHON.parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root / "home"), "LANG": "C.UTF-8",
        "PYTHONPATH": str(STANDINS), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "MPLBACKEND": "Agg",
        # what Colab's runtime sets (TBE_RUNTIME_ADDR: its Kaggle cache service, here the loopback)
        "COLAB_RELEASE_TAG": "release-colab-external_20260801-060000_RC00", "TBE_RUNTIME_ADDR": "127.0.0.1:7777",
        "COLAB_STANDIN_DRIVE": str(root / "drive"), "COLAB_STANDIN_SECRETS": str(root / "secrets.json"),
        "COLAB_STANDIN_LOG": str(root / "calls.log"),
        "BEETNET_CONTENT_ROOT": str(root / "content"), "BEETNET_CODE_URL": str(code_repository(root / "code")),
        "BEETNET_PROFILE": "smoke", "BEETNET_SOURCE": "kaggle", "BEETNET_PRESET": DEFAULT_PRESET,
        "BEETNET_EPOCHS": str(EPOCHS),
        "KAGGLE_API_ENVIRONMENT": "TEST", "KAGGLEHUB_CACHE": str(root / "content" / ".cache" / "kagglehub"),
    }
    with kaggle_port():
        kaggle, server = serve_kaggle(zip_of(clips.path))
        yield root, env, kaggle
        server.shutdown()
        server.server_close()


def new_vm(root) -> None:
    """A new VM: /content is empty (the clone, the clips, the cache, kagglehub's cache); Drive keeps its files.
    Colab gives each notebook its own VM, and a disconnect loses it."""
    shutil.rmtree(root / "content")
    (root / "content").mkdir()


def checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def drive_the_views(compare, walk, run, cache) -> dict:
    """Run in notebook 04's kernel, on its own views: what a person sees when moving them, and which thread
    refined and drew. The compare view's refinement (`run.reconstruct`, the seam it calls) is wrapped to be
    counted, then to fail once (as running out of memory does, after the work) and then every time."""
    import threading

    import ipywidgets
    import numpy as np

    def threads_setting(widget):
        names = []
        widget.observe(lambda change: names.append(threading.current_thread().name), names="value")
        return names

    reconstruct, refined_on, failures = run.reconstruct, [], []

    def counted(x, refine=True):
        if refine:
            refined_on.append(threading.current_thread().name)
        return reconstruct(x, refine)

    def fails_once(x, refine=True):
        out = counted(x, refine)
        if refine and not failures:
            failures.append(threading.current_thread().name)
            raise RuntimeError("CUDA out of memory")
        return out

    def fails_always(x, refine=True):
        if refine:
            failures.append(threading.current_thread().name)
            raise RuntimeError("CUDA out of memory")
        return reconstruct(x, refine)

    facts = {"ipywidgets": ipywidgets.__version__, "background": compare.background, "tries": compare.refiner.TRIES}
    compare.n_iter = 4  # Griffin-Lim iterations of the sound rendered ahead: its quality is not what is driven here
    compare.wait_for_refinement()  # the worker idle, as after a person's pause
    drawn_on = threads_setting(compare.image)
    run.reconstruct = counted
    compare.split.value = "train"  # new clips: drawn at once from the encoder's code, refined by the worker
    facts["new clips"] = {"at once": compare.readout.value}
    compare.wait_for_refinement()
    facts["new clips"] |= {"refined": compare.readout.value, "refined on": refined_on[:],
                           "drawn on": sorted(set(drawn_on))}

    image, sound, refined_on[:] = compare.image.value, compare.recon_audio.value, []
    compare.clip.value = 3  # refined ahead by the worker: the move only draws
    x = cache.mels[compare.current()].astype(np.float32)
    facts["slider"] = {"image changed": compare.image.value != image,
                       "sound changed": compare.recon_audio.value != sound,
                       "readout": compare.readout.value, "clip": cache.names[compare.current()],
                       "l1": float(np.abs(reconstruct(x).numpy() - x).mean() / run.stats["std"]),
                       "refined on": refined_on[:]}

    image = walk.image.value
    walk.alpha.value = 0.2
    facts["walk"] = {"image changed": walk.image.value != image, "readout": walk.readout.value}

    recordings = list(compare.recording.options)
    run.reconstruct, refined_on[:] = fails_once, []
    compare.recording.value = recordings[1]  # its window's refinement fails once
    compare.wait_for_refinement()
    failed = compare.readout.value
    compare.clip.value = 4  # a later move: queued again, refined
    compare.wait_for_refinement()
    facts["fails once"] = {"failed": failed, "then": compare.readout.value, "clip": cache.names[compare.current()],
                           "failed on": failures[:], "refined on": refined_on[:]}

    run.reconstruct, failures[:] = fails_always, []
    compare.recording.value = recordings[2]  # every refinement fails
    compare.wait_for_refinement()
    for k in range(6):
        compare.clip.value = k
        compare.wait_for_refinement()
    facts["fails always"] = {"failed on": failures[:], "readout": compare.readout.value}
    run.reconstruct = reconstruct
    return facts


def test_the_whole_journey_in_colab_with_two_disconnects_during_training(colab):
    root, env, kaggle = colab
    content, runs = root / "content", root / "drive" / "beetnet" / "runs"
    image = freeze()

    said = run_notebook("01_download", content, env, COLAB_PYTHON)
    assert freeze() == image  # colab_setup.sh installed nothing: torch, torchaudio, numpy, ipywidgets untouched
    assert (content / "beetnet" / "beetnet_utils").is_dir()  # the set-up cell cloned the code
    assert "running on: Google Colab" in said and "profile:    smoke (source kaggle" in said
    assert "skipped inputs: none" in said
    # Colab's Kaggle cache service was asked first (not cached there), then Kaggle's API, with the token
    # from a Colab secret
    assert kaggle.seen == [("is_supported", f"Bearer {TOKEN}"), ("DownloadDataset", f"Bearer {TOKEN}")]
    calls = (root / "calls.log").read_text()
    assert "userdata.get KAGGLE_API_TOKEN" in calls and f"drive.mount {content / 'drive'} ok" in calls
    assert "enable_custom_widget_manager" not in calls  # ipywidgets 7.7.1 in Colab's image: not to be called

    new_vm(root)
    said = run_notebook("02_preprocess_cache", content, env, COLAB_PYTHON)
    assert "the clips are not on this machine" in said
    assert (root / "drive" / "beetnet" / "cache.tar").is_file() and "copying the cache to Drive" in said

    run = runs / f"smoke-{FINETUNED}"  # notebook 03 fine-tunes the pretrained best
    mounted = content / "drive" / "MyDrive" / "beetnet" / "runs" / run.name  # the same folder, as mounted
    new_vm(root)
    run_notebook("03_train_gpu", content, env, COLAB_PYTHON, kill_when=lambda: (run / "last.pt").exists())
    done = checkpoint(run / "last.pt")["history"]  # history.json may lag
    assert 1 <= len(done) < EPOCHS, "the kernel was to be killed in the middle of training"

    def torn() -> list:  # last.pt's temporary file, with bytes on disk: a checkpoint being written
        return [p for p in run.glob(".last.pt.staging-*") if p.stat().st_size]

    # lost again, in the middle of writing the next epoch's last.pt (the stalled disk holds it there)
    new_vm(root)
    said = run_notebook("03_train_gpu", content, env | {"PYTHONPATH": f"{STALLED_DISK}:{STANDINS}"}, COLAB_PYTHON,
                        kill_when=lambda: bool(torn()))
    assert f"resuming {mounted} after epoch {len(done)}" in said
    assert len(torn()) == 1 and torn()[0].stat().st_size < (run / "last.pt").stat().st_size  # killed mid-write
    assert checkpoint(run / "last.pt")["history"] == done  # the previous last.pt, whole

    new_vm(root)
    said = run_notebook("03_train_gpu", content, env, COLAB_PYTHON)
    assert "restored the cache from" in said and f"resuming {mounted} after epoch {len(done)}" in said
    assert f"epoch {len(done)}: train L1" not in said and f"epoch {EPOCHS}: train L1" in said  # only the rest
    history = json.loads((run / "history.json").read_text())
    assert len(history) == EPOCHS and history[:len(done)] == done  # read back, timings and all: not retrained
    assert not list(run.glob(".*staging*"))  # the torn file the lost VM left was removed
    new_vm(root)

    views = (f"import json\n{inspect.getsource(drive_the_views)}\n"
             "print('VIEWS', json.dumps(drive_the_views(compare, walk, run, cache)))")
    said = run_notebook("04_evaluate", content, env, COLAB_PYTHON, then=views)
    assert "restored the cache from" in said
    assert f"models: {FINETUNED}, pretrained; the views below use {FINETUNED}" in said
    assert (runs / "report.json").is_file()
    check_the_views_under_ipywidgets_7(json.loads(said.split("VIEWS ", 1)[1].splitlines()[0]))

    # the same run trained without a break, in the same Python, on the same cache
    straight = root / "straight"
    subprocess.run([COLAB_PYTHON, "-m", "beetnet_utils", "train", "--profile", "smoke", "--preset", DEFAULT_PRESET,
                    "--init", "pretrained", "--epochs", str(EPOCHS), "--device", "cpu",
                    "--cache", content / "beetnet_data" / "cache", "--run", straight],
                   cwd=REPO, env=env | {"PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    resumed, whole = checkpoint(run / "last.pt"), checkpoint(straight / "last.pt")
    assert resumed["epoch"] == whole["epoch"] == EPOCHS
    assert resumed["model"].keys() == whole["model"].keys()
    for name, weights in whole["model"].items():
        assert torch.equal(resumed["model"][name], weights), name


def check_the_views_under_ipywidgets_7(facts: dict) -> None:
    assert facts["ipywidgets"] == "7.7.1" and facts["background"]
    new, worker = facts["new clips"], ["beetnet-refine_0"]
    assert "data-refined='0'" in new["at once"] and "data-refined='1'" in new["refined"]
    assert new["refined on"] == worker and new["drawn on"] == ["MainThread", *worker]  # once; the worker redrew it

    moved = facts["slider"]
    assert moved["image changed"] and moved["sound changed"] and moved["refined on"] == []  # refined ahead
    shown = re.search(r"data-clip='(.*?)' data-l1='(.*?)' data-refined='1'", moved["readout"])
    assert shown and shown[1] == moved["clip"] and float(shown[2]) == pytest.approx(moved["l1"], abs=2e-4)
    assert facts["walk"]["image changed"] and "data-alpha='0.20'" in facts["walk"]["readout"]

    once = facts["fails once"]  # the failed window, queued again by the next move
    assert once["failed on"] == worker and "failed: RuntimeError: CUDA out of memory; a later move" in once["failed"]
    assert once["refined on"] == worker * 2 and f"data-clip='{once['clip']}'" in once["then"]
    assert "data-refined='1'" in once["then"]
    always, tries = facts["fails always"], facts["tries"]  # six moves: tried TRIES times, then left failed
    assert always["failed on"] == worker * tries and f"gave up after {tries} tries" in always["readout"]


@pytest.fixture
def colab_here(monkeypatch, tmp_path):
    """This process as a Colab VM, with the stand-in google.colab importable."""
    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.delenv("BEETNET_HOME", raising=False)  # it would take precedence over Colab's folders
    for name, value in {"COLAB_RELEASE_TAG": "release-x", "BEETNET_CONTENT_ROOT": str(tmp_path / "content"),
                        "COLAB_STANDIN_DRIVE": str(tmp_path / "drive"),
                        "COLAB_STANDIN_LOG": str(tmp_path / "calls.log"),
                        "COLAB_STANDIN_SECRETS": str(tmp_path / "secrets.json")}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "drive").mkdir()
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("google.colab")]:  # or later tests would be "in Colab"
        del sys.modules[name]


@pytest.mark.parametrize("mode", ["fail", "timeout"])
def test_a_drive_that_does_not_mount_falls_back_to_local_folders_with_a_warning(colab_here, monkeypatch, capsys, mode):
    monkeypatch.setenv("COLAB_STANDIN_DRIVE_MODE", mode)
    s = sessions.start("smoke")
    said = capsys.readouterr().out
    warning = [line for line in said.splitlines() if line.startswith("warning: Google Drive did not mount")]
    assert len(warning) == 1 and "will NOT survive a disconnect" in warning[0]
    assert s.paths.runs == colab_here / "content" / "beetnet_data" / "runs" and s.paths.cache_archive is None
    assert f"drive.mount {colab_here / 'content' / 'drive'} {mode}" in (colab_here / "calls.log").read_text()


def test_drive_mounted_keeps_runs_on_drive_and_ipywidgets_8_gets_the_widget_manager(colab_here, capsys):
    s = sessions.start("smoke")
    assert s.paths.runs == colab_here / "content" / "drive" / "MyDrive" / "beetnet" / "runs"
    assert s.paths.runs.resolve().parent.parent == colab_here / "drive"
    assert "warning" not in capsys.readouterr().out
    assert runtime.widgets_major() >= 8  # this venv's ipywidgets
    assert "output.enable_custom_widget_manager" in (colab_here / "calls.log").read_text()


def test_kaggle_credentials_come_from_colab_secrets_unless_set(colab_here, monkeypatch):
    for name in runtime.KAGGLE_SECRETS:  # absent here, and absent again after the test
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    env = runtime.detect()
    assert runtime.colab_secrets(env, {}) == {}  # no secrets file: SecretNotFoundError for each, none found
    (colab_here / "secrets.json").write_text(json.dumps({"KAGGLE_USERNAME": "ann", "KAGGLE_KEY": " k \n"}))
    assert runtime.colab_secrets(env, {}) == {"KAGGLE_USERNAME": "ann", "KAGGLE_KEY": "k"}
    assert runtime.colab_secrets(env, {"KAGGLE_API_TOKEN": "mine"}) == {}  # the environment wins
    sessions.start("smoke")
    assert os.environ["KAGGLE_USERNAME"] == "ann"
