"""The inversion's measures by known answers; the non-negative mel fit; the round trip beats the old pipeline."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from beetnet_utils import mel_db
from beetnet_utils.audio import (
    QUALITY,
    listen,
    listen_runs,
    log_spectral_distance,
    mel_to_audio,
    mel_to_linear,
    round_trip,
    spectral_convergence,
)
from beetnet_utils.features import load_clip
from beetnet_utils.pca import PCA


@pytest.fixture(scope="module")
def waves(smoke_cache):
    """Six real demo clips, from different recordings where there are enough."""
    f = smoke_cache.features
    pick = np.linspace(0, len(smoke_cache.names) - 1, 6).round().astype(int)
    return torch.stack([load_clip(Path(smoke_cache.meta["clips_dir"]) / smoke_cache.names[i], f)[0] for i in pick])


def least_squares_render(mel: torch.Tensor, f) -> np.ndarray:
    """The inversion before issue 13: least-squares InverseMelScale (negatives clipped) + GriffinLim(32)."""
    inv_mel = torchaudio.transforms.InverseMelScale(f.n_fft // 2 + 1, f.n_mels, f.sample_rate, driver="gels")
    griffin_lim = torchaudio.transforms.GriffinLim(f.n_fft, hop_length=f.hop_length, power=f.power, n_iter=32,
                                                   length=f.clip_samples)
    torch.manual_seed(0)
    return griffin_lim(inv_mel(torch.pow(10.0, mel / 20.0))).numpy()


def test_distances_have_known_answers(smoke):
    f = smoke.features
    noise = 0.3 * torch.randn(2, f.clip_samples, generator=torch.Generator().manual_seed(0))
    mel = mel_db(noise, f)
    assert mel.min() > f.db_min and mel.max() < f.db_max - 6  # nothing clamped, even 6 dB louder
    assert log_spectral_distance(noise, noise, f) == 0.0
    assert log_spectral_distance(noise, noise * 10 ** (6 / 20), f) == pytest.approx(6.0, abs=1e-3)
    assert spectral_convergence(noise, noise, f) == 0.0
    assert spectral_convergence(noise, -noise, f) == pytest.approx(0.0, abs=1e-6)  # magnitudes: sign is phase
    assert spectral_convergence(noise, 2 * noise, f) == pytest.approx(1.0, rel=1e-5)
    assert spectral_convergence(noise, torch.zeros_like(noise), f) == pytest.approx(1.0, rel=1e-6)


def test_the_mel_fit_is_non_negative_and_its_divergence_never_rises(smoke, waves):
    f = smoke.features
    fb = torchaudio.functional.melscale_fbanks(f.n_fft // 2 + 1, 0.0, f.sample_rate / 2, f.n_mels, f.sample_rate)
    linear = torch.stft(waves[:2], f.n_fft, f.hop_length, window=torch.hann_window(f.n_fft), return_complex=True).abs()
    target = fb.T @ linear  # the (unclamped) mel of two real clips: a known non-negative spectrum behind it

    def divergence(spec):  # generalised KL divergence of the mel of `spec` from the target
        m = fb.T @ spec
        return float((target * torch.log(target / m) - target + m).sum())

    fits = [mel_to_linear(target, f, n) for n in (0, 1, 5, 30, 100)]
    assert all(x.shape == linear.shape and x.min() >= 0 for x in fits)
    kl = [divergence(x) for x in fits]
    assert all(later <= earlier * (1 + 1e-5) for earlier, later in zip(kl, kl[1:])) and kl[-1] < 0.05 * kl[0]
    db_error = (20 * torch.log10(fb.T @ fits[3]) - 20 * torch.log10(target)).abs().mean()
    least_squares = torchaudio.transforms.InverseMelScale(f.n_fft // 2 + 1, f.n_mels, f.sample_rate)(target)
    ls_error = (20 * torch.log10((fb.T @ least_squares).clamp_min(1e-5)) - 20 * torch.log10(target)).abs().mean()
    assert db_error < 0.5 < ls_error  # 30 updates fit the mel to a fraction of a dB; clipped least squares does not
    one_by_one = mel_to_linear(target[1], f)[None]
    np.testing.assert_allclose(one_by_one, mel_to_linear(target, f)[1:], rtol=1e-5)


def test_render_shapes_determinism_and_quality(smoke, waves):
    f = smoke.features
    mel = mel_db(waves[:2], f)
    one, two = mel_to_audio(mel[0], f), mel_to_audio(mel, f)
    assert one.shape == (f.clip_samples,) and two.shape == (2, f.clip_samples) and np.isfinite(two).all()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    assert np.array_equal(mel_to_audio(mel, f), two)  # whatever the global random state,
    assert torch.equal(torch.random.get_rng_state(), state)  # which it leaves untouched
    with ThreadPoolExecutor(4) as pool:  # the widgets render in a background thread while the slider renders
        assert all(np.array_equal(w, two) for w in pool.map(lambda _: mel_to_audio(mel, f), range(8)))
    assert mel_to_audio(mel[0].numpy().astype(np.float16), f).shape == (f.clip_samples,)  # the cache's dtype
    assert QUALITY["final"][1] > QUALITY["fast"][1]
    with pytest.raises(ValueError, match="quality"):
        mel_to_audio(mel, f, quality="best")


def test_round_trip_is_at_least_1_db_closer_than_the_old_inversion(smoke, waves):
    f = smoke.features
    old = round_trip(waves, f, lambda m: least_squares_render(m, f))
    fast = round_trip(waves, f)
    final = round_trip(waves, f, lambda m: mel_to_audio(m, f, quality="final"), batch=3)
    # measured on these clips: old about 8 dB, fast about 3 dB, final a little lower
    assert fast["lsd_db"] < old["lsd_db"] - 1.0
    assert final["lsd_db"] < fast["lsd_db"]
    assert fast["spectral_convergence"] < old["spectral_convergence"]
    assert fast["ms_per_clip"] > 0 and set(fast) == {"lsd_db", "spectral_convergence", "ms_per_clip"}
    ignores_input = round_trip(waves, f, lambda m: 0.1 * torch.randn(len(m), f.clip_samples).numpy())
    assert ignores_input["lsd_db"] > old["lsd_db"] + 5  # the measure tells a render from noise


class PCARun:
    """A real linear autoencoder standing in for a trained run: listen() needs only reconstruct()."""

    def __init__(self, train_db: np.ndarray, k: int):
        self.pca = PCA.fit(train_db, k)
        self.calls = 0

    def reconstruct(self, mel: np.ndarray) -> torch.Tensor:
        self.calls += 1
        return torch.from_numpy(self.pca.reconstruct(mel[None])[0].astype(np.float32))


def test_listen_gives_the_file_its_oracle_and_each_reconstruction(smoke_cache):
    f = smoke_cache.features
    runs = {"original": PCARun(smoke_cache.clips("train").db, 4), "pca16": PCARun(smoke_cache.clips("train").db, 16)}
    index = int(smoke_cache.indices("test")[0])
    sounds = listen(runs["original"], smoke_cache, index, quality="fast")
    wav = load_clip(Path(smoke_cache.meta["clips_dir"]) / smoke_cache.names[index], f)[0].numpy()
    mel = smoke_cache.mels[index].astype(np.float32)
    assert np.array_equal(sounds["real clip"], wav)
    assert np.array_equal(sounds["inversion only"], mel_to_audio(mel, f, quality="fast"))
    assert np.array_equal(sounds["reconstruction"], mel_to_audio(runs["original"].reconstruct(mel), f, quality="fast"))
    for run in runs.values():
        run.calls = 0
    both = listen_runs(runs, smoke_cache, index, n_iter=8)
    assert list(both) == ["real clip", "inversion only", "original", "pca16"]  # a run named original: both kept
    assert np.array_equal(both["real clip"], wav)
    assert [run.calls for run in runs.values()] == [1, 1]  # each reconstruction rendered once, none thrown away
    for name, run in runs.items():
        assert np.array_equal(both[name], mel_to_audio(run.reconstruct(mel), f, n_iter=8, quality="final"))
    assert all(w.shape == (f.clip_samples,) for w in both.values())
    assert not np.array_equal(both["original"], both["pca16"])


def test_each_quality_uses_its_own_mel_fit_and_griffin_lim_iterations():
    """"final" is QUALITY's mel-fit iterations, then its Griffin-Lim's: neither taken from "fast"."""
    import torchaudio

    from beetnet_utils import FeatureConfig, mel_to_audio
    from beetnet_utils.audio import QUALITY, mel_to_linear

    f = FeatureConfig()
    mel = np.random.default_rng(0).uniform(-30, 40, (f.n_mels, f.n_frames)).astype(np.float32)
    amplitude = torch.pow(10.0, torch.from_numpy(mel) / 20.0)

    def by_hand(mel_iters: int, gl_iters: int) -> np.ndarray:
        gl = torchaudio.transforms.GriffinLim(n_fft=f.n_fft, hop_length=f.hop_length, power=f.power, n_iter=gl_iters,
                                              length=f.clip_samples, rand_init=False)
        return gl(mel_to_linear(amplitude, f, mel_iters)).numpy()

    (fast_mel, fast_gl), (final_mel, final_gl) = QUALITY["fast"], QUALITY["final"]
    assert fast_mel != final_mel and fast_gl != final_gl
    final = mel_to_audio(mel, f, quality="final")
    np.testing.assert_allclose(final, by_hand(final_mel, final_gl), atol=1e-5)
    assert np.abs(final - by_hand(fast_mel, final_gl)).max() > 1e-3  # the mel fit's iterations matter
    np.testing.assert_allclose(mel_to_audio(mel, f, quality="fast"), by_hand(fast_mel, fast_gl), atol=1e-5)
