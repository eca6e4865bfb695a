"""The original notebook's numbers, pinned by behaviour.

Each test computes something through the product and compares it with an independent computation
written here with the specification's literal numbers (torchaudio's transforms, numpy statistics,
torch's own Adam and GRU, a hand-made gradient clip), never by reading a config value back:
mel 16000/2048/512/96, power 1, dB clamped to [-40, 60], 96 x 63 per 2 s clip; peak normalisation
and the 1e-3 silence rule; statistics from the train split only, split by recording; the `original`
GRU autoencoder (256 wide, 2 + 2 layers, z from the top layer's final states); L1, Adam 1e-3
(0.5, 0.999), gradient norm clipped to 1.0, batches of 32, shuffled each epoch, last partial batch dropped.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from torch import nn

from beetnet_utils import Config, FeatureConfig, with_preset
from beetnet_utils.augment import Augment
from beetnet_utils.batches import Batches, Resident
from beetnet_utils.features import load_clip, mel_db
from beetnet_utils.model import build_model
from beetnet_utils.train import Precision, State, objective, train, train_epoch

SR, SAMPLES, N_MELS, FRAMES, WIDTH = 16000, 32000, 96, 63, 256
DB_MIN, DB_MAX = -40.0, 60.0
CPU = torch.device("cpu")
quiet = dict(progress=False, log=lambda m: None)


def original(**model) -> Config:
    """The full profile with the `original` preset (the specification's model and training)."""
    return with_preset(Config().replace(model=model) if model else Config(), "original")


def reference_db(wav: torch.Tensor) -> torch.Tensor:
    """Unclamped mel dB with the notebook's literal settings."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=2048, hop_length=512, n_mels=96, power=1.0)
    return torchaudio.transforms.AmplitudeToDB(stype="amplitude")(mel(wav))


def chirp(seconds: float = 1.0) -> torch.Tensor:
    """50 Hz -> 7 kHz at full scale for `seconds`, then silence, to 2 s."""
    t = torch.arange(SAMPLES, dtype=torch.float64) / SR
    sweep = torch.sin(2 * torch.pi * (50 * t + (7000 - 50) / (2 * seconds) * t ** 2))
    return torch.where(t < seconds, sweep, torch.zeros(())).float()


def write_float_wav(path, audio: np.ndarray):
    sf.write(path, audio.astype(np.float32), SR, subtype="FLOAT")  # exact samples: no 16-bit rounding
    return path


# --- features -------------------------------------------------------------------------------------

def test_mel_db_is_torchaudio_mel_in_db_clamped_to_minus_40_and_60():
    wav = chirp()
    ref = reference_db(wav)
    assert (ref > DB_MAX).any() and (ref < DB_MIN).any(), "the chirp must pass both clamp ends"
    got = mel_db(wav, FeatureConfig())
    assert tuple(got.shape) == (N_MELS, FRAMES)
    assert float(got.max()) == DB_MAX and float(got.min()) == DB_MIN
    torch.testing.assert_close(got, ref.clamp(DB_MIN, DB_MAX), atol=1e-4, rtol=0)


def test_load_clip_peak_normalises_so_level_does_not_change_the_mel(tmp_path):
    rng = np.random.default_rng(0)
    signal = chirp().numpy() * np.exp(-np.arange(SAMPLES) / SR) + 0.01 * rng.standard_normal(SAMPLES)
    signal = signal / np.abs(signal).max()
    mels = []
    for level in (0.8, 0.4):
        wav, reason, _ = load_clip(write_float_wav(tmp_path / f"1_{level}.wav", level * signal), FeatureConfig())
        assert reason is None
        np.testing.assert_allclose(wav.numpy(), signal, atol=1e-6)  # divided by its own peak
        mels.append(mel_db(wav, FeatureConfig()))
    torch.testing.assert_close(mels[0], mels[1], atol=1e-3, rtol=0)
    expected = reference_db(torch.from_numpy(signal.astype(np.float32))).clamp(DB_MIN, DB_MAX)
    torch.testing.assert_close(mels[0], expected, atol=1e-3, rtol=0)


def spike_clip(peak: float, ratio: float) -> np.ndarray:
    """One sample at `peak`, the rest ±c with alternating signs, so that mean|x| / peak == ratio."""
    c = (ratio * SAMPLES * peak - peak) / (SAMPLES - 1)
    x = np.where(np.arange(SAMPLES) % 2 == 0, c, -c)
    x[SAMPLES // 2] = peak
    return x.astype(np.float32)


@pytest.mark.parametrize("peak, ratio, silent", [
    (1.0, 0.99e-3, True),  # just below the threshold
    (1.0, 1.01e-3, False),  # just above
    (0.01, 1.2e-3, False),  # quiet (mean |wav| 1.2e-5) but not silent once peak-normalised
    (4.0, 0.9e-3, True),  # loud float file (mean |wav| 3.6e-3), silent once peak-normalised
])
def test_silence_is_mean_abs_below_1e_3_after_peak_normalisation(tmp_path, peak, ratio, silent):
    x = spike_clip(peak, ratio)
    mean_abs, top = float(np.abs(x.astype(np.float64)).mean()), float(np.abs(x).max())
    assert mean_abs / top == pytest.approx(ratio, rel=1e-4) and top == pytest.approx(peak)
    wav, reason, _ = load_clip(write_float_wav(tmp_path / "7_0.wav", x), FeatureConfig())
    if silent:
        assert wav is None and reason == "silent"
    else:
        assert reason is None and float(wav.abs().max()) == 1.0


# --- the cache: its rows, its split and its statistics -------------------------------------------------

def test_cache_rows_are_the_clips_mels(smoke_cache, smoke_clips):
    for i in (0, len(smoke_cache.names) // 2, len(smoke_cache.names) - 1):
        audio, sr = sf.read(smoke_clips.path / smoke_cache.names[i], dtype="float32")
        assert sr == SR and audio.shape == (SAMPLES,)
        wav = torch.from_numpy(audio / np.abs(audio).max())
        expected = reference_db(wav).clamp(DB_MIN, DB_MAX).numpy()
        np.testing.assert_allclose(smoke_cache.mels[i].astype(np.float32), expected, atol=0.05, rtol=1e-3)


def test_split_is_by_recording(smoke_cache, smoke_clips):
    by_split = {s: set(smoke_cache.recordings[smoke_cache.splits == s]) for s in ("train", "val", "test")}
    assert all(by_split.values()), by_split
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                or by_split["val"] & by_split["test"]), by_split
    assert set().union(*by_split.values()) == set(smoke_clips.recordings)
    assert all(name.split("_")[0] == rec for name, rec in zip(smoke_cache.names, smoke_cache.recordings))


def test_statistics_come_from_the_train_split_only(tmp_path, smoke, smoke_clips):
    """A cache built here (not the session's: mutation testing maps each function to the tests that call it)."""
    from beetnet_utils import build_cache

    cache = build_cache(smoke_clips.path, tmp_path / "cache", smoke.features, smoke.data, workers=1, **quiet)
    train = cache.mels[cache.splits == "train"].astype(np.float64)
    every = cache.mels.astype(np.float64)
    assert cache.mean == pytest.approx(train.mean(), rel=1e-9, abs=1e-9)
    assert cache.std == pytest.approx(train.std(), rel=1e-6)
    assert cache.mels.dtype == np.float16 and len(cache.mels) == len(cache.names)
    # all clips' statistics differ from these by far more than the tolerances above, so using them would fail
    assert abs(train.mean() - every.mean()) > 1e-3 and abs(train.std() - every.std()) > 1e-3


def test_training_sees_train_clips_standardised_by_train_statistics(smoke_cache):
    db = smoke_cache.mels[smoke_cache.splits == "train"].astype(np.float64)
    expected = (db - db.mean()) / db.std()
    got = Resident(smoke_cache, "train", CPU, torch.float32).x.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


# --- the model ------------------------------------------------------------------------------------

class Reference(nn.Module):
    """The specification's autoencoder, written with its literal sizes (parameter names as the product's,
    so the product's weights load into it strictly)."""

    def __init__(self, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.proj = nn.Linear(96, 256)
        self.encoder = nn.GRU(256, 256, 2, batch_first=True, bidirectional=bidirectional)
        self.merge = nn.Linear(2 * 256, 256) if bidirectional else nn.Identity()
        self.expand = nn.Linear(256, 256)
        self.decoder = nn.GRU(256, 256, 2, batch_first=True)
        self.out = nn.Linear(256, 96)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.encoder(self.proj(x.transpose(1, 2)))  # the top layer's outputs at every step
        if self.bidirectional:  # forward direction's last step, backward direction's first
            return self.merge(torch.cat([out[:, -1, :256], out[:, 0, 256:]], dim=-1))
        return out[:, -1]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y, _ = self.decoder(self.expand(z).unsqueeze(1).repeat(1, 63, 1))
        return self.out(y).transpose(1, 2)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_original_model_computes_the_specified_gru_autoencoder(bidirectional):
    torch.manual_seed(0)
    model = build_model(original(bidirectional=bidirectional)).eval()
    ref = Reference(bidirectional).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(3, N_MELS, FRAMES)
    with torch.no_grad():
        z = model.encode(x)
        assert tuple(z.shape) == (3, WIDTH)
        torch.testing.assert_close(z, ref.encode(x), atol=1e-5, rtol=1e-5)
        y = model.decode(z)
        assert tuple(y.shape) == (3, N_MELS, FRAMES)
        torch.testing.assert_close(y, ref.decode(z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x), ref.decode(ref.encode(x)), atol=1e-5, rtol=1e-5)


def test_original_model_is_bidirectional_by_default_with_two_layers_of_256():
    model = build_model(original())
    for gru, directions in ((model.encoder, 2), (model.decoder, 1)):
        assert (gru.num_layers, gru.hidden_size, 2 if gru.bidirectional else 1) == (2, WIDTH, directions)
    out, _ = model.encoder(model.proj(torch.randn(2, FRAMES, N_MELS)))
    assert tuple(out.shape) == (2, FRAMES, 2 * WIDTH)


# --- training -------------------------------------------------------------------------------------

def test_objective_of_the_original_preset_is_mean_absolute_error():
    torch.manual_seed(0)
    pred, target = torch.randn(4, N_MELS, FRAMES), torch.randn(4, N_MELS, FRAMES)
    loss, l1 = objective(pred, target, original().train.flux_weight)
    expected = (pred - target).abs().mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(l1, expected)


def test_optimizer_is_adam_lr_1e_3_betas_0_5_0_999():
    cfg = original()
    torch.manual_seed(0)
    model = build_model(cfg)
    start, twin = copy.deepcopy(model), copy.deepcopy(model)
    theirs = model.configure_optimizers(cfg.train)
    ours = torch.optim.Adam(twin.parameters(), lr=1e-3, betas=(0.5, 0.999))
    # a large step, a tiny one, a large one: the moments' decay rates (both betas) show in the later steps
    for step, scale in enumerate((1.0, 1e-3, 1.0)):
        x = torch.randn(2, N_MELS, FRAMES, generator=torch.Generator().manual_seed(step))
        for net, opt in ((model, theirs), (twin, ours)):
            opt.zero_grad()
            (scale * (net(x) - x).abs().mean()).backward()
            opt.step()
    with torch.no_grad():
        moved = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), start.parameters()))
        assert moved > 1e-3  # three steps of about lr each
        for (name, p), q in zip(model.named_parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, atol=1e-7, rtol=0, msg=name)


class OneBatch:
    """The smallest split train_epoch can take: clips on the CPU, batched by index rows."""

    device = CPU

    def __init__(self, x: torch.Tensor):
        self.x = x

    def batches(self, order: torch.Tensor):
        for idx in order:
            yield self.x[idx]


def test_gradient_norm_is_clipped_to_1_before_the_step():
    cfg = original()
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.out.weight.mul_(1e3)  # gradients far beyond norm 1
    twin = copy.deepcopy(model)
    x = torch.randn(4, N_MELS, FRAMES, generator=torch.Generator().manual_seed(1))

    state = State(model, model, model.configure_optimizers(cfg.train), torch.amp.GradScaler("cpu", enabled=False),
                  Augment(0, 0, 0.0, 0.0, 1.0, 0))
    seen = []
    state.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([p.grad.clone() for p in model.parameters()]))
    train_epoch(state, OneBatch(x), torch.arange(4).view(1, 4), 1, cfg.train, Precision.choose(CPU, cfg.train.amp),
                None, False)

    (twin(x) - x).abs().mean().backward()
    raw = [p.grad for p in twin.parameters()]
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw])))
    assert norm > 100
    assert len(seen) == 1
    stepped = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in seen[0]])))
    assert stepped == pytest.approx(1.0, abs=1e-4)
    for g, r in zip(seen[0], raw):
        torch.testing.assert_close(g, r / norm, atol=1e-9, rtol=1e-4)


def test_batches_of_32_shuffled_each_epoch_last_partial_dropped():
    batches = Batches(100, original().train.batch_size, seed=0)
    assert len(batches) == 3
    epochs = [batches.epoch(e) for e in (1, 2, 3)]
    for order in epochs:
        assert tuple(order.shape) == (3, 32)
        assert len(set(order.flatten().tolist())) == 96  # no clip twice, 4 of the 100 left out
        assert set(order.flatten().tolist()) <= set(range(100))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])


def test_training_runs_batches_of_32_of_the_train_split_reshuffled_each_epoch(tmp_path, smoke, smoke_cache):
    """The loop itself, watched from outside: what the model is given in training mode."""
    cfg = with_preset(smoke, "original").replace(train=dataclasses.replace(original().train, epochs=2))
    db = smoke_cache.mels[smoke_cache.splits == "train"].astype(np.float64)
    train_x = ((db - db.mean()) / db.std()).reshape(len(db), -1)
    n_train = len(train_x)
    assert 32 < n_train < 64, n_train  # one full batch and a partial one, which must be dropped

    seen, kind = [], type(build_model(cfg))

    def watch(module, args):
        if isinstance(module, kind) and module.training:
            seen.append(args[0].detach().reshape(len(args[0]), -1).double().numpy())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(watch)
    try:
        train(smoke_cache, tmp_path / "run", cfg, device="cpu", **quiet)
    finally:
        handle.remove()

    assert [len(b) for b in seen] == [32, 32]  # one batch an epoch, the partial one dropped
    epochs = []
    for batch in seen:
        dist = np.abs(batch[:, None, :] - train_x[None, :, :]).max(axis=2)
        rows = dist.argmin(axis=1)
        assert dist.min(axis=1).max() < 1e-4  # every clip is a standardised train clip
        assert len(set(rows.tolist())) == 32  # none twice
        epochs.append(rows.tolist())
    assert epochs[0] != epochs[1] and epochs[0] != list(range(32))  # shuffled, and anew each epoch


def test_an_epoch_reports_the_mean_l1_of_its_batches():
    """The history's train L1 (the original's one curve) is the mean of the batches' L1, as each was scored."""
    cfg = original()
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randn(6, N_MELS, FRAMES, generator=torch.Generator().manual_seed(2))
    state = State(model, model, model.configure_optimizers(cfg.train), torch.amp.GradScaler("cpu", enabled=False),
                  Augment(0, 0, 0.0, 0.0, 1.0, 0))
    scored = []
    handle = model.register_forward_hook(
        lambda m, args, out: scored.append(float((out - args[0]).detach().abs().mean())))
    try:
        got = train_epoch(state, OneBatch(x), torch.arange(6).view(3, 2), 1, cfg.train,
                          Precision.choose(CPU, cfg.train.amp), None, False)
    finally:
        handle.remove()
    assert len(scored) == 3 and got == pytest.approx(sum(scored) / 3, rel=1e-6)


def test_another_sample_rate_is_resampled_to_16_khz_and_stereo_mixed_to_mono(tmp_path):
    t = np.arange(2 * 44100) / 44100
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 1250 * t)
    path = tmp_path / "1_0.wav"
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), 44100, subtype="FLOAT")
    wav, reason, fixes = load_clip(path, FeatureConfig())
    mono = torchaudio.functional.resample(torch.from_numpy(((left + right) / 2).astype(np.float32)), 44100, 16000)
    assert reason is None and wav.shape == (SAMPLES,)
    torch.testing.assert_close(wav, mono / mono.abs().max(), atol=1e-6, rtol=0)
    assert fixes == ["down-mixed to mono", "resampled from 44100 Hz"]


# --- what mutation testing found unpinned (make mutants) ------------------------------------------

@pytest.mark.parametrize("bidirectional", [True, False])
def test_z_comes_from_the_top_layer_whatever_the_depth(bidirectional):
    """With three layers, the top layer's final states are not the second's: index from the top."""
    torch.manual_seed(0)
    model = build_model(original(bidirectional=bidirectional, enc_layers=3)).eval()
    x = torch.randn(2, N_MELS, FRAMES)
    with torch.no_grad():
        out, _ = model.encoder(model.proj(x.transpose(1, 2)))
        top = (model.merge(torch.cat([out[:, -1, :WIDTH], out[:, 0, WIDTH:]], dim=-1)) if bidirectional
               else out[:, -1])
        torch.testing.assert_close(model.encode(x), top, atol=1e-6, rtol=1e-6)


def test_the_optimizer_takes_the_learning_rate_it_is_given():
    """Not Adam's default, which happens to be the specification's 1e-3."""
    model = build_model(original())
    opt = model.configure_optimizers(dataclasses.replace(original().train, lr=2e-3))
    assert [g["lr"] for g in opt.param_groups] == [2e-3] and opt.param_groups[0]["betas"] == (0.5, 0.999)


def test_the_silence_rule_is_relative_to_the_peak_and_a_dc_offset_is_no_sound():
    from beetnet_utils.data import silence_reason

    rng = np.random.default_rng(0)
    music = rng.standard_normal(SAMPLES).astype(np.float32)
    spike = np.r_[1.0, np.full(SAMPLES - 1, 0.9e-3)].astype(np.float32)  # mean/peak just under 1e-3
    for scale in (1.0, 0.05, 20.0):  # the same answer at any level
        assert silence_reason(scale * music, 1e-3) is None
        assert silence_reason(scale * spike, 1e-3) == "silent"
    offset = (0.5 + 1e-5 * rng.standard_normal(SAMPLES)).astype(np.float32)
    assert silence_reason(offset, 1e-3) == "constant (DC offset, no sound)"
    loud = (5.0 + 1e-3 * rng.standard_normal(SAMPLES)).astype(np.float32)  # float beyond ±1: relative to its peak
    assert silence_reason(loud, 1e-3) == "constant (DC offset, no sound)"
    assert silence_reason(offset - 0.5 + 0.1 * music, 1e-3) is None


def test_statistics_sum_every_chunk_and_keep_a_std_below_one():
    from beetnet_utils.cache import Moments

    rng = np.random.default_rng(0)
    a, b = (rng.normal(8.0, 0.3, (5, 4, 3)).astype(np.float16) for _ in range(2))
    m = Moments()
    m.add(a)
    m.add(b)
    both = np.concatenate([a, b]).astype(np.float64)
    mean, std = m.result()
    assert m.count == both.size and mean == pytest.approx(both.mean(), rel=1e-12)
    assert std == pytest.approx(both.std(), rel=1e-9) and std < 1


def test_the_cache_writer_counts_every_row_and_falls_back_to_all_rows_without_a_train_split(tmp_path):
    from beetnet_utils.cache import MelWriter

    rng = np.random.default_rng(1)
    a, b = (rng.normal(0.0, 10.0, (3, 4, 5)).astype(np.float16) for _ in range(2))
    with MelWriter(tmp_path / "mels.npy", 6, (4, 5)) as w:
        w.add(a, train_rows=2)
        w.add(b, train_rows=0)
        w.finish()
        train_mean, _ = w.stats()
    assert w.rows == 6 and train_mean == pytest.approx(a[:2].astype(np.float64).mean(), rel=1e-9)
    np.testing.assert_array_equal(np.load(tmp_path / "mels.npy"), np.concatenate([a, b]))
    with MelWriter(tmp_path / "eval.npy", 3, (4, 5)) as w:  # an evaluation-only cache: no train split
        w.add(b, train_rows=0)
        w.finish()
        assert w.stats()[0] == pytest.approx(b.astype(np.float64).mean(), rel=1e-9)
