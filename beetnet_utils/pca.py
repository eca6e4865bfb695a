"""Exact PCA: the linear autoencoder that is both a baseline and the starting point of the `best` model."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .augment import shift_time


@dataclass
class PCA:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), orthonormal rows

    @classmethod
    def fit(cls, x: np.ndarray, k: int, shifts: tuple[int, ...] = (), fixed: np.ndarray | None = None,
            chunk: int = 1024) -> PCA:
        """Exact PCA of `x` and, with `shifts`, of its copies moved ±s frames in time.

        `fixed` (f, d), orthonormal rows, are kept as the first f components, and PCA fills the other
        k - f with the leading directions of what they leave. SVD of the centred data when there are
        fewer rows than dimensions; otherwise eigh of the covariance accumulated chunk by chunk, so
        augmented copies are never all in memory.
        """
        data = torch.from_numpy(np.asarray(x, dtype=np.float32))
        moves = [0, *[s * d for s in shifts for d in (1, -1)]]
        held = torch.zeros(0, data[0].numel(), dtype=torch.float64) if fixed is None else \
            torch.from_numpy(np.asarray(fixed)).double()
        leave = lambda v: v - (v @ held.T) @ held  # noqa: E731  what the fixed components do not explain

        def views() -> Iterator[torch.Tensor]:
            for m in moves:
                for i in range(0, len(data), chunk):
                    yield shift_time(data[i:i + chunk], m).flatten(1).double()

        rows, dims = len(data) * len(moves), data[0].numel()
        if rows <= dims:
            flat = torch.cat(list(views()))
            mean = flat.mean(0)
            _, _, vt = torch.linalg.svd(leave(flat - mean), full_matrices=False)
            comps = vt[:k - len(held)]
        else:
            total, scatter = torch.zeros(dims, dtype=torch.float64), torch.zeros(dims, dims, dtype=torch.float64)
            for v in views():
                total += v.sum(0)
                scatter += v.T @ v
            mean = total / rows
            left = leave(leave(scatter - rows * torch.outer(mean, mean)).T)  # the covariance of leave(v)
            _, vecs = torch.linalg.eigh(left)
            comps = vecs.flip(-1)[:, :k - len(held)].T
        return cls(mean.numpy(), torch.cat([held, comps]).numpy())

    def encode(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1) - self.mean) @ self.components.T

    def decode(self, codes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return (codes @ self.components + self.mean).reshape(len(codes), *shape)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x), x.shape[1:])


def spectral_envelopes(k: int, n_mels: int, n_frames: int) -> np.ndarray:
    """(k, n_mels * n_frames) orthonormal directions: the first k cosines over the mel bands (a DCT-II),
    each constant in time. Together they span a clip's smooth spectral envelope, the part of its timbre
    that another piano, microphone or room moves most."""
    bands = np.arange(n_mels)
    rows = [np.repeat(np.cos(np.pi * (bands + 0.5) * j / n_mels)[:, None], n_frames, axis=1).ravel()
            for j in range(k)]
    return np.stack([r / np.linalg.norm(r) for r in rows]) if k else np.zeros((0, n_mels * n_frames))
