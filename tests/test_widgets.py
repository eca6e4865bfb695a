"""The views: CompareView (and its Refiner), InterpolateView and the panels' colour scale, driven through their
widgets' own observers on a trained run (`run` in conftest.py)."""
from __future__ import annotations

import copy
import io
import threading

import numpy as np
import pytest
import torch

from beetnet_utils.audio import mel_to_audio, wav_bytes
from beetnet_utils.evaluate import metrics
from beetnet_utils.widgets import CompareView, InterpolateView, Refiner


def test_compare_widget_callbacks_update_image_audio_and_readout(run, mid_cache):
    view = CompareView(run, mid_cache)
    first = (view.image.value, view.recon_audio.value, view.readout.value)
    assert first[0][:4] == b"\x89PNG" and first[1][:4] == b"RIFF" and view.original_audio.value[:4] == b"RIFF"
    view.clip.value = 2  # the slider's observer alone must redraw: no manual call before these checks
    assert view.image.value != first[0] and view.recon_audio.value != first[1] and view.readout.value != first[2]
    i = view.current()
    assert mid_cache.names[i] in view.readout.value
    shown = view.show()
    x = mid_cache.mels[i].astype(np.float32)
    expected = np.abs(run.reconstruct(x).numpy() - x).mean() / run.stats["std"]
    assert shown["name"] == mid_cache.names[i] and f"{expected:.4f}" in view.readout.value
    view.split.value = "val"
    assert mid_cache.names[view.current()] in view.readout.value and mid_cache.splits[view.current()] == "val"


def test_compare_widget_refines_a_window_of_clips_at_once_and_each_as_alone(run, mid_cache, monkeypatch):
    view = CompareView(run, mid_cache, background=False)  # a miss refines its window while the slider waits
    view.split.value = "train"  # the longest recordings: more clips than one window
    sel = view.selection()
    assert len(sel) > Refiner.WINDOW
    batches = []
    encode = run.encode
    monkeypatch.setattr(run, "encode", lambda x, *a, **k: batches.append(len(x)) or encode(x, *a, **k))
    for k in range(len(sel)):  # a person stepping through the recording, clip by clip
        view.clip.value = k
    assert sum(batches) == len(sel) - Refiner.WINDOW  # each clip refined once
    assert batches == [min(Refiner.WINDOW, len(sel) - k) for k in range(Refiner.WINDOW, len(sel), Refiner.WINDOW)]
    for j in sel[:: max(1, len(sel) // 5)]:
        x = mid_cache.mels[j].astype(np.float32)
        np.testing.assert_allclose(view.reconstruction(int(j)), run.reconstruct(x).numpy(), atol=1e-3)


@pytest.fixture
def refining(run):
    """The run with a few steps of encode-time refinement, as `best` has: the views' slow case."""
    r = copy.copy(run)
    r.config = run.config.replace(model={"refine_steps": 5})
    return r


def test_compare_widget_refines_the_next_window_before_the_slider_gets_there(refining, mid_cache, monkeypatch):
    run = refining
    batches = []
    encode = run.encode
    monkeypatch.setattr(run, "encode", lambda x, *a, **k: batches.append(len(x)) or encode(x, *a, **k))
    monkeypatch.setattr(Refiner, "WINDOW", 4)  # several windows in the demo set's 17-clip recording
    view = CompareView(run, mid_cache)
    view.split.value = "train"  # refines the recording's first window
    view.wait_for_refinement()
    batches.clear()
    sel = view.selection()
    assert len(sel) > 2 * Refiner.WINDOW
    ready = []
    for k in range(1, len(sel)):
        view.wait_for_refinement()  # a person's pace: the background work is done before the next move
        j = int(sel[k])
        ready.append((j in view.refiner._recons, j in view.refiner._audio))  # before the slider lands on it
        view.clip.value = k
    assert ready == [(True, True)] * (len(sel) - 1)
    view.wait_for_refinement()
    assert sum(batches) == len(sel) - Refiner.WINDOW  # each clip once: no window refined twice
    assert set(view.refiner._recons) == set(map(int, sel))
    last = int(sel[-1])  # its sound was rendered in the background; it is what a render here gives
    heard = mel_to_audio(np.stack([mid_cache.mels[last].astype(np.float32), view.reconstruction(last)]), view.features)
    assert view.recon_audio.value == wav_bytes(heard[1], view.features.sample_rate)
    for j in sel[:: max(1, len(sel) // 5)]:
        x = mid_cache.mels[j].astype(np.float32)
        np.testing.assert_allclose(view.reconstruction(int(j)), run.reconstruct(x).numpy(), atol=1e-3)


def test_compare_widget_draws_an_unrefined_clip_at_once_then_again_refined(refining, mid_cache):
    view = CompareView(refining, mid_cache)
    view.split.value = "train"
    view.wait_for_refinement()
    sel = view.selection()
    assert "data-refined='1'" in view.readout.value  # the first clip, drawn again once refined
    far = int(sel[-1])
    assert len(sel) > Refiner.WINDOW and far not in view.refiner._recons  # beyond the first window
    view.clip.value = len(sel) - 1  # a jump: drawn from the encoder's code, its window queued
    x = mid_cache.mels[far].astype(np.float32)
    plain = metrics(refining.reconstruct(x, refine=False).numpy(), x, refining.stats["std"])["l1_std"]
    assert f"data-l1='{plain:.4f}' data-refined='0'" in view.readout.value and "refining" in view.readout.value
    assert view.recon_audio.value == b"" and view.oracle_audio.value[:4] == b"RIFF"
    view.wait_for_refinement()  # the worker refines the window, then draws the clip again
    refined = metrics(view.reconstruction(far), x, refining.stats["std"])["l1_std"]
    assert f"data-l1='{refined:.4f}' data-refined='1'" in view.readout.value and refined < plain
    assert view.recon_audio.value[:4] == b"RIFF"
    view.clip.value = 0  # already refined: drawn refined at once
    assert "data-refined='1'" in view.readout.value


def test_compare_widget_says_when_refining_in_the_background_fails(refining, mid_cache, monkeypatch):
    reconstruct = refining.reconstruct

    def broken(x, refine=True):
        if refine:
            raise RuntimeError("out of memory")
        return reconstruct(x, refine)

    monkeypatch.setattr(refining, "reconstruct", broken)
    view = CompareView(refining, mid_cache)
    assert "data-refined='0'" in view.readout.value  # drawn from the encoder's code
    view.wait_for_refinement()
    assert "failed: RuntimeError: out of memory" in view.readout.value


def test_panels_png_maps_db_to_the_colour_scale_with_low_bins_at_the_bottom():
    import matplotlib.pyplot as plt

    from beetnet_utils.plots import panels_png

    lo, hi = -40.0, 60.0
    ramp = np.repeat(np.linspace(lo, hi, 96)[:, None], 63, axis=1)  # bin 0 quietest
    img = plt.imread(io.BytesIO(panels_png([ramp, np.full((96, 63), hi)], (lo, hi), zoom=(2, 3), gap=5)))
    magma = plt.get_cmap("magma")
    assert img.shape[:2] == (96 * 2, 63 * 3 * 2 + 5 * 2 + 3 * 3)
    np.testing.assert_allclose(img[-1, 0, :3], magma(0.0)[:3], atol=1 / 255)  # bottom row: bin 0, darkest
    np.testing.assert_allclose(img[0, 0, :3], magma(1.0)[:3], atol=1 / 255)
    np.testing.assert_allclose(img[-1, 63 * 3 + 5, :3], magma(1.0)[:3], atol=1 / 255)  # second panel: all loud
    assert (img[:, 63 * 3:63 * 3 + 5, :3] == 1.0).all()  # white gap between panels


def test_interpolate_widget_follows_the_alpha_slider(run, mid_cache):
    view = InterpolateView(run, mid_cache)
    before = (view.image.value, view.audio.value)
    view.alpha.value = 0.0  # the observer alone redraws
    assert view.image.value != before[0] and view.audio.value != before[1] and "0.00" in view.readout.value
    mix = view.show()
    clip = mid_cache.mels[view.index[view.a.value]].astype(np.float32)
    torch.testing.assert_close(torch.as_tensor(mix), run.reconstruct(clip), atol=1e-4, rtol=0)
    for b in (view.b.value, view.a.options[-1]):  # alpha 1 is clip B, and B follows its dropdown
        view.b.value, view.alpha.value = b, 1.0
        clip = mid_cache.mels[view.index[b]].astype(np.float32)
        torch.testing.assert_close(torch.as_tensor(view.show()), run.reconstruct(clip), atol=1e-4, rtol=0)
        assert f"1.00 × {b}" in view.readout.value


def test_a_window_queued_for_a_drawing_waits_until_that_drawing_is_done(run, mid_cache):
    # the refinement a slider move queues must leave the cores to the move's own drawing until it is done
    sel = mid_cache.indices("test")[:4]
    refiner = Refiner(run, mid_cache, 4, slider=lambda: (sel, 0), drawn=lambda: 0.0, background=False)
    drawing_done = threading.Event()
    refinement = refiner.refinement(int(sel[0]), after=drawing_done)
    with pytest.raises(TimeoutError):
        refinement.result(timeout=2.0)
    assert refiner.refined(int(sel[0])) is None
    drawing_done.set()
    refinement.result(timeout=120)
    assert all(refiner.refined(int(i)) is not None for i in sel)
