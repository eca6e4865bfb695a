"""Spectrograms you can hear: dB mel -> waveform with torchaudio's InverseMelScale and GriffinLim.

The STFT settings are the features' own. An "oracle" (a clip's own mel, inverted) beside
the model's reconstruction tells a listener which artefacts come from the inversion and
which from the model.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .config import FeatureConfig
from .features import load_clip


@functools.lru_cache(maxsize=4)
def _inverters(features: FeatureConfig, n_iter: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    inv_mel = torchaudio.transforms.InverseMelScale(
        n_stft=features.n_fft // 2 + 1, n_mels=features.n_mels, sample_rate=features.sample_rate, driver="gels")
    griffin_lim = torchaudio.transforms.GriffinLim(
        n_fft=features.n_fft, hop_length=features.hop_length, power=features.power, n_iter=n_iter,
        length=features.clip_samples)
    return inv_mel, griffin_lim


def mel_to_audio(mel_db: np.ndarray | torch.Tensor, features: FeatureConfig, n_iter: int = 32,
                 seed: int = 0) -> np.ndarray:
    """(n_mels, frames) or (batch, n_mels, frames) dB -> waveform(s) of the clip's length."""
    inv_mel, griffin_lim = _inverters(features, n_iter)
    amplitude = torch.pow(10.0, torch.as_tensor(mel_db, dtype=torch.float32) / 20.0)
    torch.manual_seed(seed)  # Griffin-Lim starts from random phases: the same input gives the same sound
    with torch.no_grad():
        return griffin_lim(inv_mel(amplitude)).numpy()


def peak_normalise(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    return wav * (peak / max(float(np.abs(wav).max()), 1e-9))


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """16-bit WAV in memory, for an audio player."""
    buf = io.BytesIO()
    sf.write(buf, peak_normalise(wav), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def save_wav(wav: np.ndarray, path: Path, sample_rate: int) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, peak_normalise(wav), sample_rate, subtype="PCM_16")
    return Path(path)


def listen(run, cache, index: int, n_iter: int = 32) -> dict[str, np.ndarray]:
    """The three sounds of one cached clip: the file itself, its own mel inverted, the model's."""
    f = cache.features
    mel = cache.mels[index].astype(np.float32)
    wav, _, _ = load_clip(Path(cache.meta["clips_dir"]) / cache.names[index], f)
    out = {"original": wav.numpy()} if wav is not None else {}
    return out | {"oracle": mel_to_audio(mel, f, n_iter), "reconstruction": mel_to_audio(run.reconstruct(mel), f, n_iter)}


def listen_runs(runs: dict, cache, index: int, n_iter: int = 32) -> dict[str, np.ndarray]:
    """One clip: the file, its oracle, and every run's reconstruction, to hear the presets side by side."""
    first = next(iter(runs.values()))
    sounds = listen(first, cache, index, n_iter)
    sounds.pop("reconstruction")
    mel = cache.mels[index].astype(np.float32)
    return sounds | {name: mel_to_audio(run.reconstruct(mel), cache.features, n_iter) for name, run in runs.items()}
