"""The model as specified; training that learns, resumes exactly and survives SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from beetnet_utils import BeetNetError, get_config
from beetnet_utils.model import build_model, count_parameters
from beetnet_utils.train import load_checkpoint, load_run, train

ROOT = Path(__file__).parents[1]
quiet = dict(progress=False, log=lambda m: None)


def gru_params(inp: int, hidden: int, layers: int, directions: int = 1) -> int:
    per = lambda i: 3 * (i * hidden + hidden * hidden + 2 * hidden)  # noqa: E731  (W_ih, W_hh, b_ih, b_hh)
    return directions * (per(inp) + (layers - 1) * per(hidden * directions))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes_and_parameter_count_match_the_specification(bidirectional):
    cfg = get_config("full").replace(model={"bidirectional": bidirectional})
    model = build_model(cfg)
    x = torch.randn(3, 96, 63)
    z = model.encode(x)
    assert z.shape == (3, 256) and model.decode(z).shape == (3, 96, 63) and model(x).shape == (3, 96, 63)
    d = 2 if bidirectional else 1
    expected = (96 * 256 + 256 + gru_params(256, 256, 2, d) + ((2 * 256 * 256 + 256) if bidirectional else 0)
                + 256 * 256 + 256 + gru_params(256, 256, 2) + 256 * 96 + 96)
    assert count_parameters(model) == expected


def test_unidirectional_z_is_the_last_output_as_in_the_notebook():
    model = build_model(get_config("smoke").replace(model={"bidirectional": False}))
    x = torch.randn(2, 96, 63)
    out, _ = model.encoder(model.proj(x.transpose(1, 2)))
    assert torch.allclose(model.encode(x), out[:, -1])


def mean_baseline_l1(cache) -> float:
    template = cache.standardised("train").mean(0)
    return float((cache.standardised("val") - template).abs().mean())


def test_short_training_on_demo_data_beats_the_global_mean_baseline(tmp_path, mid, mid_cache):
    history = train(mid_cache, tmp_path / "run", mid, **quiet)
    assert len(history) == mid.train.epochs and history[-1]["train_l1"] < history[0]["train_l1"]
    best = min(h["val_l1"] for h in history)
    baseline = mean_baseline_l1(mid_cache)
    assert best < 0.97 * baseline, (best, baseline)
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert history[-1]["val_l1_db"] == pytest.approx(history[-1]["val_l1"] * mid_cache.std)


def strip_timing(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "wall", "samples_per_s")} for h in history]


def test_resume_is_exactly_equivalent_to_training_straight_through(tmp_path, smoke, smoke_cache):
    two = smoke.replace(train={"epochs": 2})
    straight = train(smoke_cache, tmp_path / "a", two, **quiet)
    train(smoke_cache, tmp_path / "b", smoke.replace(train={"epochs": 1}), **quiet)
    said = []
    resumed = train(smoke_cache, tmp_path / "b", two, progress=False, log=said.append)
    assert any("resuming" in s and "after epoch 1" in s for s in said)
    assert strip_timing(straight) == strip_timing(resumed)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert train(smoke_cache, tmp_path / "b", two, **quiet) == resumed  # finished: nothing more to do


def test_a_run_with_other_settings_or_another_cache_is_refused(tmp_path, smoke, smoke_cache):
    train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 1}), **quiet)
    with pytest.raises(BeetNetError, match=r"other settings \(model.latent_dim 32 -> 16\)"):
        train(smoke_cache, tmp_path / "run", smoke.replace(model={"latent_dim": 16}), **quiet)
    with pytest.raises(BeetNetError, match="train.lr"):
        train(smoke_cache, tmp_path / "run", smoke.replace(train={"lr": 0.01}), **quiet)
    import copy

    other = copy.copy(smoke_cache)
    other.meta = smoke_cache.meta | {"clips_hash": "0" * 16}
    with pytest.raises(BeetNetError, match="the mel cache"):
        train(other, tmp_path / "run", smoke, **quiet)


def test_time_budget_stops_after_the_epoch_that_crosses_it(tmp_path, smoke, smoke_cache):
    said = []
    h = train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 5, "minutes": 1e-6}),
              progress=False, log=said.append)
    assert len(h) == 1 and "time budget" in said[-1]
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1


def test_mixed_precision_path_runs_on_the_cpu(tmp_path, smoke, smoke_cache):
    said = []
    h = train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 1, "amp": "on"}),
              progress=False, log=said.append)
    assert "AMP bfloat16" in said[0] and all(torch.isfinite(torch.tensor([h[0]["train_l1"], h[0]["val_l1"]])))


def test_load_run_round_trip_in_db(tmp_path, smoke, smoke_cache):
    train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 2}), **quiet)
    run = load_run(tmp_path / "run")
    mel = smoke_cache.db("val")[:3]
    z = run.encode(mel)
    assert z.shape == (3, smoke.model.latent_dim) and run.encode(mel[0]).shape == (smoke.model.latent_dim,)
    rec = run.reconstruct(mel)
    assert rec.shape == mel.shape and rec.min() >= -40 and rec.max() <= 60
    assert torch.allclose(run.decode(z), rec)
    expected = run.model(torch.as_tensor((mel - smoke_cache.mean) / smoke_cache.std)) * smoke_cache.std + smoke_cache.mean
    assert torch.allclose(rec, expected.detach().clamp(-40, 60), atol=1e-4)
    assert run.stats == {"mean": smoke_cache.mean, "std": smoke_cache.std}
    with pytest.raises(BeetNetError, match="no checkpoint"):
        load_run(tmp_path / "empty")


KILLER = r"""
import os, sys, time, torch
from beetnet_utils import get_config, load_cache
from beetnet_utils.train import train
real_save = torch.save
saves = []
def slow_save(obj, path, *a, **k):
    saves.append(path)
    if obj.get("epoch") == 2 and "optimizer" in obj:  # the second epoch's last.pt: write half, then hang
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a checkpoint")
            f.flush()
        print("WRITING", flush=True)
        time.sleep(60)
    return real_save(obj, path, *a, **k)
torch.save = slow_save
cfg = get_config("smoke").replace(train={"epochs": 3})
train(load_cache(sys.argv[1]), sys.argv[2], cfg, progress=False)
"""


def test_sigkill_while_writing_a_checkpoint_leaves_a_loadable_one(tmp_path, smoke, smoke_cache):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(smoke_cache.path), str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    line = ""
    while "WRITING" not in line and time.time() < deadline:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(run.glob(".last.pt.*.tmp")), "the kill should have hit mid-write"
    ckpt = load_checkpoint(run)
    assert ckpt["epoch"] == 1  # the intact previous checkpoint
    said = []
    history = train(smoke_cache, run, smoke.replace(train={"epochs": 3}), progress=False, log=said.append)
    assert "after epoch 1" in said[0] and [h["epoch"] for h in history] == [1, 2, 3]
    assert not list(run.glob(".*.tmp"))
