"""A file from elsewhere is data, never code: hostile checkpoints through every path that loads one.

Each hostile checkpoint is a real BeetNet checkpoint with one extra pickled object whose unpickling would
run a command (the classic `__reduce__` -> `os.system`). The command would create a marker file: every
test asserts the one-line refusal and that the marker never appeared.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from beetnet_utils import BeetNetError, load_run, run_summary, session as sessions
from beetnet_utils.run import CHECKPOINT_FORMAT, ForeignCheckpoint, load_checkpoint
from beetnet_utils.train import train

from journey import tree
from test_attacks import assert_one_line_error, cli

quiet = dict(progress=False, log=lambda m: None)
REFUSAL = "objects other than tensors, numbers, strings, lists and dicts"


class Payload:
    """Unpickled, this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke, smoke_cache):
    run = tmp_path_factory.mktemp("safe") / "run"
    train(smoke_cache, run, smoke.replace(train={"epochs": 2}), **quiet)
    return run


def poison(run: Path, marker: Path, names: tuple[str, ...] = ("last.pt", "best.pt")) -> Path:
    """Add a pickled command to each checkpoint of `run`, which otherwise stays a valid one."""
    for name in names:
        ckpt = torch.load(run / name, weights_only=True)
        torch.save(ckpt | {"note": Payload(marker)}, run / name)
    return run


def hostile(trained: Path, tmp_path: Path, names: tuple[str, ...] = ("last.pt", "best.pt")) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return poison(shutil.copytree(trained, tmp_path / "run"), marker, names), marker


def test_the_payload_does_run_when_unpickled_unsafely(tmp_path, trained):
    """The attack is real: loading the same file the old way runs the command."""
    run, marker = hostile(trained, tmp_path)
    torch.load(run / "last.pt", weights_only=False)
    assert marker.exists()


def test_checkpoints_hold_plain_data_only_and_load_with_the_safe_unpickler(trained):
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(trained / name, weights_only=True)
        assert ckpt["format"] == CHECKPOINT_FORMAT and isinstance(ckpt["config"], dict)
        assert all(torch.is_tensor(v) for v in ckpt["rng"]["augment"].values()) and torch.is_tensor(ckpt["rng"]["torch"])


@pytest.mark.parametrize("names", [("last.pt", "best.pt"), ("best.pt",), ("last.pt",)])
def test_hostile_checkpoint_through_the_api_is_refused_in_one_line_and_never_runs(tmp_path, trained, names):
    run, marker = hostile(trained, tmp_path, names)
    before = tree(tmp_path)
    poisoned = [n.removesuffix(".pt") for n in names]
    loads = [*(lambda w=w: load_run(run, w) for w in poisoned), *(lambda w=w: load_checkpoint(run, w) for w in poisoned),
             *([lambda: run_summary(run)] if "last" in poisoned else [])]
    for load in loads:  # never skipped for the other checkpoint: a hostile file is refused, not worked around
        with pytest.raises(ForeignCheckpoint) as exc:
            load()
        msg = str(exc.value)
        assert "\n" not in msg and REFUSAL in msg and "delete it" in msg, msg
    assert not marker.exists()
    assert tree(tmp_path) == before


def test_hostile_checkpoint_through_the_cli_evaluate_and_resume_is_refused_and_never_runs(tmp_path, trained,
                                                                                           smoke_cache):
    run, marker = hostile(trained, tmp_path)
    before = tree(tmp_path)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, REFUSAL)
    r = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--preset", "original",
            "--epochs", "4")
    assert_one_line_error(r, REFUSAL, str(run / "last.pt"))
    assert not marker.exists()
    assert tree(tmp_path) == before


def test_hostile_run_attached_in_kaggle_is_refused_when_loaded_and_never_runs(tmp_path, trained, smoke_cache,
                                                                             monkeypatch):
    """Kaggle: start() copies an attached earlier version's run into working/; the next load refuses it."""
    kaggle = tmp_path / "kaggle"
    for d in ("working", "temp", "input"):
        (kaggle / d).mkdir(parents=True)
    marker = tmp_path / "PWNED"
    poison(shutil.copytree(trained, kaggle / "input" / "shared-model" / "runs" / "smoke-original"), marker)
    shutil.copytree(smoke_cache.path, kaggle / "temp" / "beetnet" / "cache")
    environ = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "BEETNET_KAGGLE_ROOT": str(kaggle),
               "BEETNET_PROFILE": "smoke"}
    monkeypatch.chdir(tmp_path)
    session = sessions.start(environ=environ)
    adopted = session.paths.runs / "smoke-original"
    assert (adopted / "last.pt").is_file()  # copied as data: copying runs nothing
    with pytest.raises(BeetNetError) as exc:
        session.load_runs()
    assert REFUSAL in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(BeetNetError):
        session.train("original")  # resuming it
    assert not marker.exists()


def test_a_run_saved_before_plain_checkpoints_is_refused_in_one_line(tmp_path, trained, smoke_cache):
    run = shutil.copytree(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        torch.save(ckpt | {"format": CHECKPOINT_FORMAT - 1}, run / name)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, f"format {CHECKPOINT_FORMAT - 1}", "another version of BeetNet")
