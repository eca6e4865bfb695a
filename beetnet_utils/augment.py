"""Augmentation: what a new recording may move. Pure tensor functions, and seeded random sources.

Clips are cut at arbitrary moments, so a model that has seen onsets a few frames earlier or
later generalises better to recordings it never heard (measured: benchmarks/bench_quality.py).
Another piano, microphone or room moves the level, the tuning of the partials against the mel
bands, the balance of low and high, and the finer shape of the spectrum: `add_gain`, `shift_mel`,
`tilt` and `equalise` make those moves on standardised spectrograms. `Augment` chains the ones a
TrainConfig switches on, for training.
"""
from __future__ import annotations

import math

import torch

EQ_ORDERS = 6  # `equalise`: how many cosines over the mel bands shape a random EQ


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


def shift_mel(x: torch.Tensor, k: int) -> torch.Tensor:
    """Spectrograms (…, n_mels, frames) moved k mel bands up (k < 0: down); the edge band is repeated."""
    return shift_time(x.transpose(-1, -2), k).transpose(-1, -2)


def add_gain(x: torch.Tensor, amount: torch.Tensor | float) -> torch.Tensor:
    """A louder or quieter clip: in dB a gain adds a constant, so here `amount` (standardised units,
    dB / std; one per clip of shape (batch, 1, 1), or one for all) is added to every bin."""
    return x + amount


def tilt(x: torch.Tensor, slope: torch.Tensor | float) -> torch.Tensor:
    """A brighter (slope > 0) or duller clip: `slope` (standardised units, one per clip of shape
    (batch, 1, 1) or one for all) is added from -slope/2 at the lowest mel band to +slope/2 at the
    highest, linearly, so the clip's mean level stays where it was."""
    ramp = torch.linspace(-0.5, 0.5, x.shape[-2], device=x.device, dtype=x.dtype).unsqueeze(-1)
    return x + slope * ramp


def equalise(x: torch.Tensor, amounts: torch.Tensor) -> torch.Tensor:
    """Another piano's or room's colour: a smooth EQ curve added to every frame. `amounts` (batch, orders),
    standardised units, weigh the cosines cos(pi (b + 1/2) j / n_mels) over the bands b for j = 1..orders:
    each moves the level from -amount to +amount across the bands, order 1 as a tilt does, higher orders
    in finer waves. None has a mean, so the clip's level stays where it was."""
    bands = torch.arange(x.shape[-2], device=x.device, dtype=x.dtype)
    orders = torch.arange(1, amounts.shape[-1] + 1, device=x.device, dtype=x.dtype)
    cosines = torch.cos(math.pi * (bands + 0.5) * orders[:, None] / x.shape[-2])  # (orders, n_mels)
    return x + (amounts.to(x) @ cosines).unsqueeze(-1)


class Seeded:
    """A random source for augmentation: a seeded generator whose state is part of a checkpoint
    (`state_dict`), so a resumed run draws the same moves as one that never stopped."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def uniform(self, n: int, half_width: float) -> torch.Tensor:
        """n draws in [-half_width, half_width), shaped (n, 1, 1) to broadcast over a batch of clips."""
        return (torch.rand(n, 1, 1, generator=self.generator) * 2 - 1) * half_width

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


class WholeShift(Seeded):
    """One random whole-step shift per batch in [-max_steps, max_steps], applied by `move(x, k)`."""

    move = staticmethod(shift_time)

    def __init__(self, max_steps: int, seed: int):
        super().__init__(seed)
        self.max_steps = max_steps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.max_steps:
            return x
        k = int(torch.randint(-self.max_steps, self.max_steps + 1, (), generator=self.generator))
        return self.move(x, k)


class TimeShift(WholeShift):
    """Whole frames later or earlier: onsets where a clip's cut happens to put them."""

    move = staticmethod(shift_time)


class MelShift(WholeShift):
    """Whole mel bands up or down: a little higher or lower register."""

    move = staticmethod(shift_mel)


class PerClipDb(Seeded):
    """A random amount per clip, uniform in ±max_db, applied by `move(x, amounts)` in standardised units
    (`std` is the dB std that standardised the clips)."""

    move = staticmethod(add_gain)

    def __init__(self, max_db: float, std: float, seed: int):
        super().__init__(seed)
        self.max_db, self.std = max_db, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.max_db:
            return x
        return self.move(x, self.draw(len(x)).to(x.device, x.dtype))

    def draw(self, n: int) -> torch.Tensor:
        """One amount per clip, shaped (n, 1, 1) to broadcast over a batch."""
        return self.uniform(n, self.max_db / self.std)


class Gain(PerClipDb):
    """A gain per clip (see `add_gain`)."""

    move = staticmethod(add_gain)


class Tilt(PerClipDb):
    """A tilt per clip, from the lowest band to the highest (see `tilt`)."""

    move = staticmethod(tilt)


class EQ(PerClipDb):
    """A random smooth EQ per clip (see `equalise`): each of EQ_ORDERS cosines uniform in ±max_db."""

    move = staticmethod(equalise)

    def draw(self, n: int) -> torch.Tensor:
        return (torch.rand(n, EQ_ORDERS, generator=self.generator) * 2 - 1) * self.max_db / self.std


class Augment:
    """The moves a TrainConfig switches on, applied in turn to each batch: time, mel band, gain, tilt, EQ.

    Each source draws from its own generator (seeded from `seed`), so switching one on or off leaves
    the others' draws as they were, and `state_dict` holds them all for a checkpoint.
    """

    def __init__(self, shift_frames: int, shift_mels: int, gain_db: float, tilt_db: float, std: float, seed: int,
                 eq_db: float = 0.0):
        self.sources = {"time": TimeShift(shift_frames, seed), "mel": MelShift(shift_mels, seed + 1),
                        "gain": Gain(gain_db, std, seed + 2), "tilt": Tilt(tilt_db, std, seed + 3),
                        "eq": EQ(eq_db, std, seed + 4)}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for source in self.sources.values():
            x = source(x)
        return x

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: source.state_dict() for name, source in self.sources.items()}

    def load_state_dict(self, states: dict[str, torch.Tensor]) -> None:
        for name, state in states.items():
            self.sources[name].load_state_dict(state)
