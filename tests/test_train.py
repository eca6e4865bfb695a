"""The model as specified; training that learns, resumes exactly and survives SIGKILL."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from beetnet_utils import BeetNetError, get_config, load_cache, with_preset
from beetnet_utils.model import build_model, count_parameters
from beetnet_utils.run import load_checkpoint, load_run
from beetnet_utils.train import objective, train

from helpers import smoke_preset

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


def val_l1_of(prediction, x) -> float:
    return float((prediction - x).abs().mean())


def test_short_training_of_the_original_model_learns(tmp_path, mid, mid_cache):
    """The specification's model, from scratch: the train loss falls and validation beats the mean clip."""
    history = train(mid_cache, tmp_path / "run", mid, **quiet)
    assert len(history) == mid.train.epochs and history[-1]["train_l1"] < 0.9 * history[0]["train_l1"]
    x_train, x_val = mid_cache.standardised("train"), mid_cache.standardised("val")
    best = min(h["val_l1"] for h in history)
    assert best < 0.97 * val_l1_of(x_train.mean(0), x_val)
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert history[-1]["val_l1_db"] == pytest.approx(history[-1]["val_l1"] * mid_cache.std)


def strip_timing(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "wall", "samples_per_s")} for h in history]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


EVERY_MOVE = {"shift_mels": 2, "gain_db": 3.0, "tilt_db": 3.0, "eq_db": 2.0, "flux_weight": 0.5}


@pytest.mark.parametrize("preset,moves", [("original", {}), ("best", {}), ("local", EVERY_MOVE)],
                         ids=["original", "best", "local-every-move"])  # dropout, random moves: all resumed
def test_resume_is_exactly_equivalent_to_training_straight_through(tmp_path, smoke, smoke_cache, preset, moves):
    cfg = smoke_preset(smoke, preset).replace(model={"refine_steps": 0}, train=moves)
    two = cfg.replace(train={"epochs": 2})
    straight = train(smoke_cache, tmp_path / "a", two, **quiet)
    train(smoke_cache, tmp_path / "b", cfg.replace(train={"epochs": 1}), **quiet)
    said = []
    resumed = train(smoke_cache, tmp_path / "b", two, progress=False, log=said.append)
    assert any("resuming" in s and "after epoch 1" in s for s in said)
    assert strip_timing(straight) == strip_timing(resumed)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert train(smoke_cache, tmp_path / "b", two, **quiet) == resumed  # finished: nothing more to do


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_last_checkpoint_falls_back_to_best_and_still_ends_exactly(tmp_path, smoke, smoke_cache, damage):
    """best.pt is a complete checkpoint too: resuming from it retrains the later epochs to the same weights."""
    three = with_preset(smoke, "best").replace(train={"epochs": 3}, model={"refine_steps": 0})
    train(smoke_cache, tmp_path / "a", three, **quiet)
    train(smoke_cache, tmp_path / "b", three, **quiet)
    last = tmp_path / "b" / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    else:
        last.unlink()
    said = []
    best_epoch = torch.load(tmp_path / "b" / "best.pt", weights_only=False)["epoch"]
    history = train(smoke_cache, tmp_path / "b", three, progress=False, log=said.append)
    assert any("using best.pt" in s for s in said) and any(f"after epoch {best_epoch}" in s for s in said)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert_same_weights(tmp_path / "a", tmp_path / "b")


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


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(tmp_path, smoke, smoke_cache):
    """A checkpoint from an older version lacks settings added since; they count as their defaults."""
    cfg = smoke.replace(train={"epochs": 2})
    train(smoke_cache, tmp_path / "run", cfg.replace(train={"epochs": 1}), **quiet)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    for key in ("flux_weight", "shift_mels", "gain_db", "tilt_db", "eq_db"):
        del ckpt["config"]["train"][key]
    del ckpt["config"]["model"]["local"]
    ckpt["rng"]["shift"] = ckpt["rng"].pop("augment")["time"]  # as the time shift's state was saved before
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    assert [h["epoch"] for h in train(smoke_cache, tmp_path / "run", cfg, **quiet)] == [1, 2]
    with pytest.raises(BeetNetError, match=r"train.flux_weight 0.0 -> 0.5"):
        train(smoke_cache, tmp_path / "run", cfg.replace(train={"flux_weight": 0.5, "epochs": 3}), **quiet)


def test_the_flux_term_prefers_a_sharp_guess_where_plain_l1_cannot_choose():
    """Repeated notes whose phase the decoder cannot know: L1 scores the flat average and a sharp guess the
    same; the flux term prefers the guess that moves as much as the clips do."""
    a = torch.tensor([[[0.0, 1.0, 0.0, 1.0, 0.0]]])
    b = 1 - a
    flat, sharp = torch.full_like(a, 0.5), a.clone()
    expected = lambda pred, w=0.0: float(objective(pred, a, w)[0] + objective(pred, b, w)[0]) / 2  # noqa: E731
    assert expected(flat) == pytest.approx(expected(sharp)) == pytest.approx(0.5)
    assert expected(sharp, 1.0) == pytest.approx(0.5) and expected(flat, 1.0) == pytest.approx(1.5)


def test_time_budget_stops_after_the_epoch_that_crosses_it(tmp_path, smoke, smoke_cache):
    said = []
    h = train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 5, "minutes": 1e-6}),
              progress=False, log=said.append)
    assert len(h) == 1 and "time budget" in said[-1]
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1


def test_a_run_stopped_by_its_session_budget_and_resumed_ends_where_a_straight_run_ends(tmp_path, smoke, smoke_cache):
    """The Colab advice: MINUTES set, one epoch a session. A cosine preset's learning rates follow the epochs,
    not the time spent, so four one-epoch sessions equal four epochs straight through, bit for bit."""
    cfg = with_preset(smoke, "best").replace(train={"epochs": 4}, model={"refine_steps": 0})
    assert cfg.train.schedule == "cosine"
    straight = train(smoke_cache, tmp_path / "a", cfg, **quiet)
    said = []
    for session in range(4):
        resumed = train(smoke_cache, tmp_path / "b", cfg.replace(train={"minutes": 1e-6}), progress=False,
                        log=said.append)
        assert len(resumed) == session + 1
    assert sum("time budget of 1e-06 min reached" in s for s in said) == 3  # the fourth session ends the run
    lrs = [h["lr"] for h in straight]
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3] > cfg.train.lr_floor * cfg.train.lr  # annealing, not yet at the floor
    assert strip_timing(resumed) == strip_timing(straight)
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_a_whole_run_budget_anneals_over_the_time_of_every_session_and_is_fixed_when_the_run_starts(
        tmp_path, smoke, smoke_cache):
    from beetnet_utils.train import set_learning_rate

    tc = dataclasses.replace(with_preset(smoke, "best").train, epochs=100, budget_minutes=10.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tc.lr)
    floor = tc.lr_floor * tc.lr
    for seconds, expected in ((0.0, tc.lr), (300.0, floor + (tc.lr - floor) / 2), (600.0, floor), (900.0, floor)):
        set_learning_rate(opt, tc, 1, seconds)  # epoch 1 of 100: the time is further along
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    set_learning_rate(opt, tc, 51, 0.0)  # epoch 51 of 100, no time spent: the epochs are further along
    assert opt.param_groups[0]["lr"] == pytest.approx(floor + (tc.lr - floor) / 2)

    cfg = smoke.replace(train={"epochs": 5, "budget_minutes": 1e-6})
    said = []
    assert len(train(smoke_cache, tmp_path / "run", cfg, progress=False, log=said.append)) == 1
    assert "the run's time budget of 1e-06 min spent after epoch 1" in said[-1]
    again = []
    assert len(train(smoke_cache, tmp_path / "run", cfg, progress=False, log=again.append)) == 1  # spent: no more
    assert "spent after epoch 1" in again[-1]
    with pytest.raises(BeetNetError, match=r"train.budget_minutes 1e-06 -> 5"):
        train(smoke_cache, tmp_path / "run", cfg.replace(train={"budget_minutes": 5.0}), **quiet)


def test_a_config_that_cannot_be_built_is_refused_before_the_run_folder_is_made(tmp_path, smoke, smoke_cache):
    with pytest.raises(ValueError, match="unknown architecture 'fancy'"):
        train(smoke_cache, tmp_path / "run", smoke.replace(model={"architecture": "fancy"}), **quiet)
    assert not (tmp_path / "run").exists()


def test_mixed_precision_path_runs_on_the_cpu(tmp_path, smoke, smoke_cache):
    """The autocast path (bfloat16 on the CPU, the same code as float16 on CUDA) really computes in lower
    precision: its losses differ from float32's, yet it learns the same."""
    said = []
    low = train(smoke_cache, tmp_path / "low", smoke.replace(train={"epochs": 2, "amp": "on"}),
                progress=False, log=said.append)
    full = train(smoke_cache, tmp_path / "full", smoke.replace(train={"epochs": 2, "amp": "off"}), **quiet)
    assert "AMP bfloat16" in said[0]
    for a, b in zip(low, full):
        assert a["train_l1"] != b["train_l1"] and a["train_l1"] == pytest.approx(b["train_l1"], rel=0.05)
        assert a["val_l1"] == pytest.approx(b["val_l1"], rel=0.05)


def test_load_run_round_trip_in_db(tmp_path, smoke, smoke_cache):
    train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 2}), **quiet)
    run = load_run(tmp_path / "run")
    mel = smoke_cache.clips("val").db[:3]
    z = run.encode(mel)
    assert z.shape == (3, smoke.model.latent_dim) and run.encode(mel[0]).shape == (smoke.model.latent_dim,)
    rec = run.reconstruct(mel)
    assert rec.shape == mel.shape and rec.min() >= -40 and rec.max() <= 60
    assert torch.allclose(run.decode(z), rec)
    standardised = torch.as_tensor((mel - smoke_cache.mean) / smoke_cache.std)
    expected = run.model(standardised) * smoke_cache.std + smoke_cache.mean
    assert torch.allclose(rec, expected.detach().clamp(-40, 60), atol=1e-4)
    assert run.stats == {"mean": smoke_cache.mean, "std": smoke_cache.std}
    with pytest.raises(BeetNetError, match="no checkpoint"):
        load_run(tmp_path / "empty")


# The kill lands while the real bytes of the second epoch's last.pt are being written (the first 4 KiB
# are on disk): what is tested is that the previous last.pt survives, whole.
KILLER = r"""
import sys, time
from pathlib import Path
from beetnet_utils import get_config, load_cache
from beetnet_utils.train import train
real_write, writes = Path.write_bytes, []
def dying_write(self, data):  # the second last.pt: write its first bytes, then hang until killed
    if ".last.pt." in self.name:
        writes.append(self)
        if len(writes) == 2:
            real_write(self, bytes(data)[:4096])
            print("WRITING", flush=True)
            time.sleep(60)
    return real_write(self, data)
Path.write_bytes = dying_write
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
    assert list(run.glob(".last.pt.staging-*")), "the kill should have hit mid-write"
    ckpt = load_checkpoint(run)
    assert ckpt["epoch"] == 1  # the intact previous checkpoint
    said = []
    history = train(smoke_cache, run, smoke.replace(train={"epochs": 3}), progress=False, log=said.append)
    assert "after epoch 1" in said[0] and [h["epoch"] for h in history] == [1, 2, 3]
    assert not list(run.glob(".*staging*"))


def test_a_run_streamed_from_the_mapped_cache_equals_a_resident_run_bit_for_bit(tmp_path, smoke, smoke_cache):
    """`best` (initialised from the train split, dropout, a random EQ): every batch read from mels.npy on disk by
    the prefetch thread gives the weights of the split held whole, to the last bit."""
    mapped = load_cache(smoke_cache.path, in_memory=0)
    assert isinstance(mapped.mels, np.memmap) and not isinstance(smoke_cache.mels, np.memmap)
    cfg = smoke_preset(smoke, "best").replace(model={"refine_steps": 0}, train={"epochs": 2})
    said, kept = [], []
    streamed = train(mapped, tmp_path / "streamed", cfg, progress=False, log=said.append, resident_bytes=0)
    resident = train(smoke_cache, tmp_path / "resident", cfg, progress=False, log=kept.append)
    assert "streamed from the cache" in said[0] and "streamed" not in kept[0]
    assert strip_timing(streamed) == strip_timing(resident)
    assert_same_weights(tmp_path / "streamed", tmp_path / "resident")


def test_prefetch_keeps_the_order_stops_with_its_loop_and_raises_its_errors():
    from beetnet_utils.batches import prefetch

    made = []
    batches = prefetch(lambda i: made.append(i) or torch.tensor(i), range(1000), ahead=2)
    assert [int(next(batches)) for _ in range(3)] == [0, 1, 2]
    batches.close()  # the loop stopped: so does the thread, a few items ahead at most
    assert made == list(range(len(made))) and len(made) <= 3 + 2 + 1

    def broken(i):
        if i == 2:
            raise ValueError("clip 2 is unreadable")
        return torch.tensor(i)

    got = []
    with pytest.raises(ValueError, match="clip 2 is unreadable"):
        got.extend(int(x) for x in prefetch(broken, range(5)))
    assert got == [0, 1]


def test_load_run_takes_best_pt_unless_told_last(tmp_path, smoke, smoke_cache):
    """By validation L1, as the README says: best.pt, even when last.pt is newer."""
    import shutil

    run = tmp_path / "run"
    cfg = with_preset(smoke, "original")
    train(smoke_cache, run, cfg.replace(train={"epochs": 1}), progress=False, log=lambda m: None)
    first = shutil.copyfile(run / "best.pt", tmp_path / "epoch1.pt")
    train(smoke_cache, run, cfg.replace(train={"epochs": 2}), progress=False, log=lambda m: None)
    shutil.copyfile(first, run / "best.pt")  # as if epoch 2 had scored worse
    assert load_run(run).epoch == 1 and load_run(run, "best").epoch == 1 and load_run(run, "last").epoch == 2
