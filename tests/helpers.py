"""Small audio makers for tests, kagglehub's cache layout, and the lock on Kaggle's test port."""
from __future__ import annotations

import contextlib
import fcntl
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def kaggle_cache(root: Path, owner: str, name: str, version: int) -> Path:
    """The folder layout kagglehub itself writes after a completed download."""
    files = root / "datasets" / owner / name / "versions" / str(version)
    files.mkdir(parents=True)
    (root / "datasets" / owner / name / f"{version}.complete").touch()
    return files


def write_wav(path, audio, sr: int = SR, subtype: str = "PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype=subtype)
    return path


@contextlib.contextmanager
def kaggle_port():
    """kagglehub's test endpoint is a fixed port, 127.0.0.1:7777. Whoever serves it, or needs it silent,
    holds this lock (one file for the machine, as the port is), so that `make test`'s two workers take turns."""
    with open(Path(tempfile.gettempdir()) / "beetnet-tests-port-7777.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def smoke_preset(smoke, preset: str):
    """A preset on the smoke profile: `with_preset` itself, now that local's layout scales with the latent
    (smoke's 32 numbers: 8 for the envelope and 8 steps of 3). Kept for the tests that still call it."""
    from beetnet_utils.config import with_preset

    return with_preset(smoke, preset)
