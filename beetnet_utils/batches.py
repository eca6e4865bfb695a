"""What the training loop reads: seeded batches of the train split, and the splits themselves, resident on the
device or streamed from the cache.

Batches are index permutations of one tensor that lives on the device (no DataLoader, no per-file reads,
no per-batch copies) when the train and validation splits fit in `resident_bytes` (by default a quarter
of the device's memory). A larger set is streamed from the cache's memory-mapped mels.npy, batch by
batch in the same order, by a background thread a few batches ahead: the same numbers, so on the CPU a
streamed run is bit-equal to a resident one.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .cache import MelCache
from .distributed import Group
from .storage import BeetNetError

T = TypeVar("T")
RESIDENT_FRACTION = 4  # by default the splits stay on the device when they fit in 1/4 of its memory
AHEAD = 4  # batches a streamed split reads ahead of the loop
INIT_CLIPS = 16_384  # the model starts from (PCA of) at most this many train clips: a seeded sample of a bigger split


@dataclass(frozen=True)
class Batches:
    """Seeded index permutations: epoch e's order depends only on (seed, e), so resume is exact."""

    n: int
    batch_size: int
    seed: int

    def __len__(self) -> int:
        return self.n // self.batch_size  # drop_last, as the original

    def epoch(self, e: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + e)
        return torch.randperm(self.n, generator=g)[: len(self) * self.batch_size].view(len(self), self.batch_size)

    def share(self, e: int, group: Group) -> torch.Tensor:
        """This rank's columns of epoch e's batches: each batch split into `group.size` equal parts."""
        part = self.batch_size // group.size
        return self.epoch(e)[:, group.rank * part:(group.rank + 1) * part]


def init_rows(n: int, seed: int) -> np.ndarray | None:
    """Which of n train clips the model is initialised from: all (None), or a seeded sample of INIT_CLIPS."""
    return None if n <= INIT_CLIPS else np.sort(np.random.default_rng(seed).choice(n, INIT_CLIPS, replace=False))


def pieces(rows: range, size: int) -> Iterator[slice]:
    """`rows` as consecutive slices of at most `size`."""
    return (slice(i, min(i + size, rows.stop)) for i in range(rows.start, rows.stop, size))


class Resident:
    """A split standardised whole on the device (float16 on CUDA: ~230 MB for the full set's train split):
    a batch is an index gather there, never a copy from the host."""

    def __init__(self, cache: MelCache, split: str, device: torch.device, dtype: torch.dtype):
        self.x, self.device = cache.standardised(split, device, dtype), device
        self.shape = tuple(self.x.shape)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, order: torch.Tensor) -> Iterator[torch.Tensor]:
        """The clips of each row of `order`, row by row."""
        for idx in order:
            yield self.x[idx.to(self.device)]

    def chunks(self, rows: range, size: int) -> Iterator[torch.Tensor]:
        """`rows` in consecutive pieces of at most `size` clips."""
        return (self.x[part] for part in pieces(rows, size))

    def sample(self, seed: int) -> torch.Tensor:
        """The clips the model is initialised from (init_rows)."""
        rows = init_rows(len(self), seed)
        return self.x if rows is None else self.x[torch.from_numpy(rows).to(self.device)]


def prefetch(make: Callable[[T], torch.Tensor], items: Iterable[T], ahead: int = AHEAD) -> Iterator[torch.Tensor]:
    """make(item) for each item, in order, computed by a background thread up to `ahead` items early (reading
    a memory-mapped file and copying to the device while the loop computes). The thread stops when the loop
    does, however it stops; its errors are raised in the loop."""
    done, ready, stop = object(), queue.Queue(ahead), threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put(make(item))
            ready.put(done)
        except BaseException as exc:  # noqa: BLE001  (raised again in the loop)
            ready.put(exc)

    thread = threading.Thread(target=work, name="beetnet-prefetch", daemon=True)
    thread.start()
    try:
        while (got := ready.get()) is not done:
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        while thread.is_alive():  # a put blocked on a full queue returns once there is room
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)


class Streamed:
    """A split read from the cache (its memory-mapped mels.npy) as it is needed, a batch at a time, `AHEAD`
    batches ahead on a background thread; standardised as `Resident` is (MelCache.standardise: the same
    operations on the same numbers, so the same bits). Memory holds a few batches, not the split."""

    def __init__(self, cache: MelCache, split: str, device: torch.device, dtype: torch.dtype):
        self.cache, self.index, self.device, self.dtype = cache, cache.indices(split), device, dtype
        self.shape = (len(self.index), *cache.mels.shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def _load(self, rows: np.ndarray | slice) -> torch.Tensor:
        return self.cache.standardised(self.index[rows], self.device, self.dtype)

    def batches(self, order: torch.Tensor) -> Iterator[torch.Tensor]:
        return prefetch(self._load, (idx.numpy() for idx in order))

    def chunks(self, rows: range, size: int) -> Iterator[torch.Tensor]:
        return prefetch(self._load, pieces(rows, size))

    def sample(self, seed: int) -> torch.Tensor:
        rows = init_rows(len(self), seed)
        return self._load(slice(None) if rows is None else rows)


def default_resident_bytes(dev: torch.device, processes: int = 1) -> int:
    """A quarter of the device's memory (on the CPU, of the machine's, shared by its processes)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).total_memory // RESIDENT_FRACTION
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // RESIDENT_FRACTION // processes


def split_data(cache: MelCache, dev: torch.device,
               resident_bytes: int) -> tuple[Resident | Streamed, Resident | Streamed]:
    """The train and validation splits, standardised (float16 on CUDA): resident on the device when together
    they take at most `resident_bytes` there, else streamed from the cache."""
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    size = (len(cache.indices("train")) + len(cache.indices("val"))) * math.prod(cache.mels.shape[1:]) * dtype.itemsize
    kind = Resident if size <= resident_bytes else Streamed
    x_train, x_val = kind(cache, "train", dev, dtype), kind(cache, "val", dev, dtype)
    if not len(x_val):
        raise BeetNetError(f"the cache {cache.path} has no validation clips: rebuild it with the `cache` step")
    return x_train, x_val
