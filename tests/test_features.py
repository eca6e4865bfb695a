"""The mel exactly as specified, and what loading a clip fixes or skips."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio

from beetnet_utils import mel_db
from beetnet_utils.features import load_clip

from helpers import SR, tone, write_wav


def test_mel_is_the_original_pipeline(smoke):
    f = smoke.features
    wav = torch.from_numpy(tone(2.0))
    wav = wav / wav.abs().max()
    ref = torchaudio.transforms.AmplitudeToDB(stype="amplitude")(
        torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=2048, hop_length=512, n_mels=96, power=1.0)(wav)
    ).clamp(-40, 60)
    got = mel_db(wav, f)
    assert got.shape == (96, 63) and torch.equal(got, ref)
    assert got.min() >= -40 and got.max() <= 60 and got.max() > 20


def test_short_clips_are_padded_at_the_end_from_half_a_clip_and_skipped_below(tmp_path, smoke):
    x = (0.5 * np.sin(np.arange(2 * SR) / 7)).astype(np.float32)
    half = write_wav(tmp_path / "1_0.wav", x[:SR], subtype="FLOAT")  # exactly min_clip_fraction of 2 s: kept
    wav, reason, fixes = load_clip(half, smoke.features)
    assert reason is None and fixes == ["zero-padded to 2 s"] and wav.numel() == 2 * SR
    np.testing.assert_allclose(wav[:SR].numpy(), x[:SR] / np.abs(x[:SR]).max(), atol=1e-6)  # the clip, then zeros
    assert float(wav[SR:].abs().max()) == 0.0
    for n in (SR - 1, 1):
        _, reason, _ = load_clip(write_wav(tmp_path / f"2_{n}.wav", x[:n], subtype="FLOAT"), smoke.features)
        assert reason == "too short (< 1 s)"
