"""Small audio makers for tests."""
from __future__ import annotations

import numpy as np
import soundfile as sf

SR = 16000


def tone(seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_wav(path, audio, sr: int = SR, subtype: str = "PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype=subtype)
    return path
