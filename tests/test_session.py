"""The notebook session: profile choice, and the Colab cache round trip through a stand-in Drive."""
from __future__ import annotations

import shutil

import numpy as np

from beetnet_utils import runtime


def test_start_picks_demo_locally_and_respects_the_environment(tmp_path, capsys):
    s = runtime.start(environ={"BEETNET_HOME": str(tmp_path)})
    assert s.config.profile == "demo" and s.paths.runs == tmp_path / "runs"
    assert "profile:    demo" in capsys.readouterr().out
    assert runtime.start(environ={"BEETNET_HOME": str(tmp_path), "BEETNET_PROFILE": "smoke"}).config.profile == "smoke"
    assert s.preset == "best" and s.run_dir() == tmp_path / "runs" / "demo-best"
    assert runtime.start(environ={"BEETNET_HOME": str(tmp_path), "BEETNET_PRESET": "seed"}).run_dir().name == "demo-seed"


def test_cache_kept_on_drive_survives_a_lost_vm(tmp_path, smoke, smoke_clips):
    """Colab's layout with local folders standing in for /content and Drive."""
    local, drive = tmp_path / "content", tmp_path / "drive"
    paths = runtime.Paths(local, local / "clips", local / "cache", drive / "runs", drive / "cache.tar")
    session = runtime.Session(runtime.Environment(in_colab=True, gpu_name="Tesla T4"), paths, smoke)
    built = session.cache(smoke_clips.path, progress=False)
    assert paths.cache_archive.exists()
    shutil.rmtree(local)  # the VM was recycled
    restored = session.load_cache()
    assert restored.names == built.names and np.array_equal(restored.mels, built.mels)
