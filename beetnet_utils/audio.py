"""Spectrograms you can hear: dB mel -> linear magnitude (a non-negative fit) -> waveform (Griffin-Lim).

The STFT settings are the features' own. An "oracle" (a clip's own mel, inverted) beside
the model's reconstruction tells a listener which artefacts come from the inversion and
which from the model; `round_trip` puts a number on the inversion's share.

Two steps, each measured in benchmarks/bench_listen.py:
  mel -> linear   Multiplicative updates for the generalised KL divergence (Lee and Seung's
                  non-negative rule), from each bin's filter-weighted mean of its bands. The
                  least-squares inverse (torchaudio's InverseMelScale) is the minimum-norm
                  solution with its negative lobes clipped, which leaves the mel of the result
                  several dB from the target; these updates keep every bin non-negative and fit
                  the mel to a fraction of a dB in a few dozen steps. The mel filter bank is
                  sparse (about two bands per bin), so each step is a sparse product: milliseconds.
  linear -> wave  torchaudio's Griffin-Lim (fast Griffin-Lim, momentum 0.99) from zero phase.
                  No maintained package does phase-gradient heap integration (PGHI) for torch or
                  numpy (pghipy and tifresi have had no release since 2021 and 2020; librosa and
                  ltfatpy have none), and zero, uniform or linear-phase starts moved the distance
                  by under 0.1 dB here (zero against seeded random phases: under 0.01 dB on the
                  rendered set). Zero needs no random numbers: the same mel always gives the same
                  sound, and a widget may render in a background thread while another renders.
`quality="fast"` (the default, for sliders) runs 32 Griffin-Lim iterations, as before, and renders
3 clips in about 0.2 s on one CPU core; `quality="final"` runs 100, about 0.3 s a clip (200 bought
under 0.05 dB more).
"""
from __future__ import annotations

import functools
import io
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .config import FeatureConfig
from .features import load_clip, mel_db
from .storage import check_array

# (mel -> linear updates, Griffin-Lim iterations)
QUALITY = {"fast": (30, 32), "final": (50, 100)}


@functools.lru_cache(maxsize=4)
def _mel_basis(features: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The features' mel filter bank as sparse (mels, freqs) and (freqs, mels), and each bin's total weight
    (bins no band covers get a tiny weight, so they stay at zero instead of dividing by it)."""
    fb = torchaudio.functional.melscale_fbanks(  # (freqs, mels), the same bank MelSpectrogram uses
        features.n_fft // 2 + 1, 0.0, features.sample_rate / 2, features.n_mels, features.sample_rate)
    return fb.T.contiguous().to_sparse(), fb.to_sparse(), fb.sum(1, keepdim=True).clamp_min(torch.finfo(fb.dtype).tiny)


@functools.lru_cache(maxsize=4)
def _griffin_lim(features: FeatureConfig, n_iter: int) -> torch.nn.Module:
    return torchaudio.transforms.GriffinLim(
        n_fft=features.n_fft, hop_length=features.hop_length, power=features.power, n_iter=n_iter,
        length=features.clip_samples, rand_init=False)  # zero phase: see the module's docstring


def mel_to_linear(mel_amplitude: torch.Tensor, features: FeatureConfig, n_iter: int = 30) -> torch.Tensor:
    """(…, n_mels, frames) mel amplitude -> (…, n_fft/2+1, frames) non-negative linear magnitude.

    Minimises the generalised KL divergence between the mel of the result and the target by
    multiplicative updates, which never make a bin negative. KL weighs relative rather than
    absolute error, as a dB scale does, so quiet bands are fitted as well as loud ones.
    """
    to_mel, from_mel, weight = _mel_basis(features)
    shape = mel_amplitude.shape
    target = mel_amplitude.reshape(-1, *shape[-2:]).transpose(0, 1).reshape(shape[-2], -1)  # (mels, clips*frames)
    tiny = torch.finfo(target.dtype).tiny
    spec = torch.sparse.mm(from_mel, target) / weight  # each bin: the weighted mean of its bands
    for _ in range(n_iter):
        ratio = target / torch.sparse.mm(to_mel, spec).clamp_min(tiny)
        spec = spec * torch.sparse.mm(from_mel, ratio) / weight
    n_freq = spec.shape[0]
    return spec.reshape(n_freq, -1, shape[-1]).transpose(0, 1).reshape(*shape[:-2], n_freq, shape[-1])


def mel_to_audio(mel_db: np.ndarray | torch.Tensor, features: FeatureConfig, n_iter: int | None = None,
                 quality: str = "fast") -> np.ndarray:
    """(n_mels, frames) or (batch, n_mels, frames) dB -> waveform(s) of the clip's length.

    `quality` picks the settings in QUALITY; `n_iter`, if given, overrides its Griffin-Lim iterations.
    The same input gives the same samples, from any thread; no random numbers are drawn.
    """
    if quality not in QUALITY:
        raise ValueError(f"quality must be one of {', '.join(QUALITY)}, not {quality!r}")
    if not isinstance(features, FeatureConfig):
        raise ValueError(f"mel_to_audio needs the feature settings (config.features), not {type(features).__name__}")
    if n_iter is not None and not (isinstance(n_iter, int) and n_iter >= 1):
        raise ValueError(f"n_iter must be a whole number of Griffin-Lim iterations, at least 1 (not {n_iter!r})")
    check_array(mel_db, "mel_to_audio", f"dB spectrogram(s) of shape (…, {features.n_mels}, frames)",
                 trailing=(features.n_mels, None))
    mel_iters, gl_iters = QUALITY[quality]
    griffin_lim = _griffin_lim(features, gl_iters if n_iter is None else n_iter)
    amplitude = torch.pow(10.0, torch.as_tensor(mel_db, dtype=torch.float32).detach().cpu() / 20.0)
    with torch.no_grad():
        return griffin_lim(mel_to_linear(amplitude, features, mel_iters)).numpy()


# --- how close a render is to the clip it came from -------------------------------------------

def log_spectral_distance(reference: np.ndarray | torch.Tensor, rendered: np.ndarray | torch.Tensor,
                          features: FeatureConfig) -> float:
    """Mel log-spectral distance in dB between two (batches of) waveforms, on the model's own features.

    Both go through `features.mel_db`, the cache's own transform (mel magnitude, dB, clamped to
    [db_min, db_max], so silence below the floor counts as equal). Per frame, the root mean square
    over the mel bands of the dB difference; then the mean over frames and clips. 0 is exact.
    """
    ref, out = (mel_db(torch.as_tensor(w, dtype=torch.float32), features) for w in (reference, rendered))
    return float((ref - out).square().mean(-2).sqrt().mean())


def spectral_convergence(reference: np.ndarray | torch.Tensor, rendered: np.ndarray | torch.Tensor,
                         features: FeatureConfig) -> float:
    """||S_ref - S_out||_F / ||S_ref||_F per clip, averaged over clips.

    S is the linear STFT magnitude (n_fft, hop and centred Hann window of the features) of the
    original waveform and of the rendered one; the waveforms are compared as they are, not rescaled.
    Unlike the mel distance it sees detail inside a mel band and the level of loud bins. 0 is exact.
    """
    window = torch.hann_window(features.n_fft)

    def magnitude(w):
        x = torch.as_tensor(w, dtype=torch.float32).reshape(-1, features.clip_samples)
        return torch.stft(x, features.n_fft, features.hop_length, window=window, return_complex=True).abs().flatten(1)

    ref, out = magnitude(reference), magnitude(rendered)
    return float(((ref - out).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).mean())


def round_trip(wavs: np.ndarray | torch.Tensor, features: FeatureConfig, render=None,
               batch: int = 1) -> dict[str, float]:
    """Audio -> mel dB -> `render` -> audio, scored against the originals.

    `wavs` are (N, samples) peak-normalised clips; `render(mel_db)` maps (n, n_mels, frames) dB to
    (n, samples) (default `mel_to_audio` with its defaults), called on `batch` clips at a time.
    Returns {"lsd_db", "spectral_convergence", "ms_per_clip"} (the wall time of the renders only).
    """
    render = render or (lambda m: mel_to_audio(m, features))
    wavs = torch.as_tensor(wavs, dtype=torch.float32)
    mels = mel_db(wavs, features)
    start = time.perf_counter()
    out = np.concatenate([render(mels[i:i + batch]) for i in range(0, len(mels), batch)])
    ms = 1000 * (time.perf_counter() - start) / len(mels)
    return {"lsd_db": log_spectral_distance(wavs, out, features),
            "spectral_convergence": spectral_convergence(wavs, out, features), "ms_per_clip": ms}


# --- files and players --------------------------------------------------------------------------
def peak_normalise(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    return wav * (peak / max(float(np.abs(wav).max()), 1e-9))


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """16-bit WAV in memory, for an audio player."""
    check_array(wav, "wav_bytes", "a waveform (samples,)")
    buf = io.BytesIO()
    sf.write(buf, peak_normalise(wav), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def save_wav(wav: np.ndarray, path: Path, sample_rate: int) -> Path:
    check_array(wav, "save_wav", "a waveform (samples,) or (samples, channels)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, peak_normalise(wav), sample_rate, subtype="PCM_16")
    return Path(path)


def listen(run, cache, index: int, n_iter: int | None = None, quality: str = "final") -> dict[str, np.ndarray]:
    """The three sounds of one cached clip: the "real clip" (the file itself), "inversion only" (its own mel
    inverted: what the inversion alone does) and the model's "reconstruction". The clip is never called
    "original": a run may be the `original` preset."""
    f = cache.features
    mel = cache.db(index)
    wav, _, _ = load_clip(Path(cache.meta["clips_dir"]) / cache.names[index], f)
    out = {"real clip": wav.numpy()} if wav is not None else {}
    return out | {"inversion only": mel_to_audio(mel, f, n_iter, quality=quality),
                  "reconstruction": mel_to_audio(run.reconstruct(mel), f, n_iter, quality=quality)}


def listen_runs(runs: dict, cache, index: int, n_iter: int | None = None,
                quality: str = "final") -> dict[str, np.ndarray]:
    """One clip: the real clip, the inversion alone, and every run's reconstruction under the run's name, to
    hear the presets side by side."""
    (first, run), *others = runs.items()
    sounds = listen(run, cache, index, n_iter, quality)
    sounds[first] = sounds.pop("reconstruction")  # rendered once, kept under its run's name
    mel = cache.db(index)
    return sounds | {name: mel_to_audio(run.reconstruct(mel), cache.features, n_iter, quality=quality)
                     for name, run in others}
