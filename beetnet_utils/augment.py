"""Augmentation: what a new recording may move. Pure tensor functions, and one seeded random source.

Clips are cut at arbitrary moments, so a model that has seen onsets a few frames earlier or
later generalises better to recordings it never heard (measured: benchmarks/bench_quality.py).
"""
from __future__ import annotations

import torch


def shift_time(x: torch.Tensor, k: int) -> torch.Tensor:
    """Spectrograms (…, n_mels, frames) moved k frames later (k < 0: earlier); the edge frame is repeated."""
    if k == 0:
        return x
    y = torch.roll(x, k, dims=-1)
    if k > 0:
        y[..., :k] = x[..., :1]
    else:
        y[..., k:] = x[..., -1:]
    return y


class TimeShift:
    """One random whole-frame shift per batch in [-max_frames, max_frames], from a seeded generator.

    The generator's state is part of a checkpoint (`state_dict`), so a resumed run draws the same
    shifts as one that never stopped.
    """

    def __init__(self, max_frames: int, seed: int):
        self.max_frames = max_frames
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.max_frames:
            return x
        k = int(torch.randint(-self.max_frames, self.max_frames + 1, (), generator=self.generator))
        return shift_time(x, k)

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
