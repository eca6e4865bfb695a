"""The notebook session: profile and preset choice, the steps, and the Colab cache round trip."""
from __future__ import annotations

import shutil
import sys

import numpy as np

from beetnet_utils import runtime
from beetnet_utils import session as sessions
from beetnet_utils.cli import parser
from beetnet_utils.config import DEFAULT_PRESET
from beetnet_utils.run import Run


def test_start_picks_demo_locally_and_respects_the_kernels_environment(tmp_path, capsys):
    s = sessions.start(environ={"BEETNET_HOME": str(tmp_path)})
    assert s.config.profile == "demo" and s.paths.runs == tmp_path / "runs" and s.minutes is None
    assert "profile:    demo" in capsys.readouterr().out
    assert sessions.start(environ={"BEETNET_HOME": str(tmp_path), "BEETNET_PROFILE": "smoke"}).config.profile == "smoke"
    assert s.preset == "best" and s.run_dir() == tmp_path / "runs" / "demo-best"
    other = sessions.start(environ={"BEETNET_HOME": str(tmp_path), "BEETNET_PRESET": "original",
                                    "BEETNET_MINUTES": "2.5"})
    assert other.run_dir().name == "demo-original" and other.minutes == 2.5


def test_notebook_and_cli_default_to_the_same_preset():
    assert sessions.Session.__dataclass_fields__["preset"].default == DEFAULT_PRESET == "best"
    assert parser().parse_args(["train", "--cache", "c", "--run", "r"]).preset == DEFAULT_PRESET


def test_the_four_steps_on_explicit_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["beetnet_utils.evaluate"], "FIT_CLIPS", 30)  # smoke has 48 train clips
    s = sessions.for_folders("smoke", clips=tmp_path / "clips", cache=tmp_path / "cache", runs=tmp_path / "runs")
    clips = s.download(progress=False)
    cache = s.cache(progress=False)
    assert clips.clips == len(cache.names) + sum(cache.meta["skipped"].values())
    history = s.train("original", progress=False, epochs=1)
    assert len(history) == 1 and (s.run_dir("original") / "best.pt").exists()
    encoded, encode = [], Run.encode
    monkeypatch.setattr(Run, "encode", lambda run, x, refine=True: encoded.append(len(x)) or encode(run, x, refine))
    report = s.evaluate()
    assert list(report["splits"]["test"]["models"])[0] == "original"
    realism = report["realism"]["original"]["clips"]  # the train clips refined for it are capped
    held_out = report["splits"]["val"]["clips"] + report["splits"]["test"]["clips"]
    assert realism["fit"] + realism["unseen"] == 30 and realism["held-out"] == held_out
    assert sum(encoded) == len(report["runs"]) * (held_out + 30)  # once each: realism reuses the scored codes
    assert (tmp_path / "runs" / "report.json").exists()


def test_cache_kept_on_drive_survives_a_lost_vm(tmp_path, smoke, smoke_clips):
    """Colab's layout with local folders standing in for /content and Drive."""
    local, drive = tmp_path / "content", tmp_path / "drive"
    paths = runtime.Paths(local, smoke_clips.path, local / "cache", drive / "runs", drive / "cache.tar")
    session = sessions.Session(runtime.Environment(in_colab=True, gpu_name="Tesla T4"), paths, smoke)
    built = session.cache(progress=False)
    assert paths.cache_archive.exists()
    shutil.rmtree(local)  # the VM was recycled
    restored = session.load_cache()
    assert restored.names == built.names and np.array_equal(restored.mels, built.mels)


def test_your_own_recordings_are_fetched_again_on_a_hosted_runtimes_new_machine(tmp_path):
    """In Colab each notebook has its own machine: notebook 02 fetches the clips again, and must fetch the
    ones notebook 01 made (your recordings on Drive), not the profile's source (Kaggle's set)."""
    from helpers import tone, write_wav

    drive, vm = tmp_path / "drive", tmp_path / "content"
    for i in range(6):
        write_wav(drive / "my piano" / f"take {i}.wav", tone(9.0, freq=220 + 55 * i))
    env = runtime.Environment(in_colab=True, gpu_name=None)
    where = runtime.Paths(vm, vm / "clips", vm / "cache", drive / "runs", None)
    cfg = sessions.get_config("smoke")
    assert cfg.data.source == "demo"
    s = sessions.Session(env, where, cfg)
    s.download("folder", drive / "my piano", progress=False)
    shutil.rmtree(vm)  # notebook 02 runs on a new machine
    again = sessions.Session(env, where, cfg)
    cache = again.cache(progress=False)
    assert set(cache.recordings) == {f"take-{i}" for i in range(6)}  # your recordings, not the demo piano
