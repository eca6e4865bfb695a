"""Clips -> clamped mel dB: exactly the original's features.

Peak-normalise, MelSpectrogram(power=1) -> AmplitudeToDB('amplitude') -> clamp to [-40, 60] dB, silent clips
dropped. Unlike the original, a bad file is a reason to skip it (returned, counted by the cache build), never a
crash. The cache of these features is `cache.py` (its format and reading) and `cache_build.py` (building it).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torchaudio

from .config import FeatureConfig
from .data import check_samples, list_clips, parse_clip_name, read_audio, silence_reason


@functools.lru_cache(maxsize=4)
def _transforms(features: FeatureConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=features.sample_rate, n_fft=features.n_fft, hop_length=features.hop_length,
        n_mels=features.n_mels, power=features.power)
    return mel, torchaudio.transforms.AmplitudeToDB(stype="amplitude")


def mel_db(wav: torch.Tensor, features: FeatureConfig) -> torch.Tensor:
    """(..., samples) peak-normalised waveform -> (..., n_mels, n_frames) clamped dB."""
    mel, to_db = _transforms(features)
    with torch.no_grad():
        return to_db(mel(wav)).clamp_(features.db_min, features.db_max)


def load_clip(path: Path, features: FeatureConfig) -> tuple[torch.Tensor | None, str | None, list[str]]:
    """Read one clip and make it conform. Returns (waveform, skip reason, fixes applied).

    Rules: only regular files are read; NaN or inf, or a clipped file, is skipped (data.check_samples);
    stereo is averaged to mono; another sample rate is resampled; a clip shorter than
    `min_clip_fraction` of 2 s is skipped, a shorter-but-long-enough one is zero-padded, a
    longer one is trimmed to its first 2 s; silence (all zero, or mean |wav| below the
    threshold after peak normalisation, as the original) and a constant (DC) signal are skipped.
    """
    audio, sr, reason = read_audio(path)
    if reason:
        return None, reason, []
    if audio.size == 0:
        return None, "empty", []
    audio, reason, fixes = check_samples(audio)
    if reason:
        return None, reason, fixes
    wav = torch.from_numpy(audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0])
    if audio.shape[1] > 1:
        fixes.append("down-mixed to mono")
    if sr != features.sample_rate:
        wav = torchaudio.functional.resample(wav, sr, features.sample_rate)
        fixes.append(f"resampled from {sr} Hz")
    n = features.clip_samples
    if wav.numel() < features.min_clip_fraction * n:
        return None, f"too short (< {features.min_clip_fraction * features.clip_seconds:g} s)", fixes
    if wav.numel() < n:
        wav = torch.nn.functional.pad(wav, (0, n - wav.numel()))
        fixes.append("zero-padded to 2 s")
    elif wav.numel() > n:
        wav = wav[:n]
        fixes.append("trimmed to 2 s")
    peak = wav.abs().max()
    if peak == 0:
        return None, "silent", fixes
    if peak < features.min_peak:  # peak normalisation would blow dither up into full-scale noise
        return None, f"near-silent (peak below {20 * math.log10(features.min_peak):.0f} dBFS)", fixes
    wav = wav / peak
    if reason := silence_reason(wav.numpy(), features.silence_threshold):
        return None, reason, fixes
    return wav, None, fixes

def preview(clips_dir: Path, features: FeatureConfig,
            n: int = 4) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The first clip of `n` different recordings: names, mel dB and waveforms."""
    first: dict[str, Path] = {}
    for p in list_clips(clips_dir):
        first.setdefault(parse_clip_name(p.name)[0], p)
    names, mels, wavs = [], [], []
    for rec in list(first)[:: max(1, len(first) // n)][:n]:
        wav, reason, _ = load_clip(first[rec], features)
        if wav is not None:
            names.append(first[rec].name)
            mels.append(mel_db(wav, features).numpy())
            wavs.append(wav.numpy())
    return names, mels, wavs


