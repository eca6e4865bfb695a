"""Exact PCA: the linear autoencoder that is both a baseline and the starting point of the `best` model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .augment import shift_time


@dataclass
class PCA:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), orthonormal rows

    @classmethod
    def fit(cls, x: np.ndarray, k: int, shifts: tuple[int, ...] = (), chunk: int = 1024) -> "PCA":
        """Exact PCA of `x` and, with `shifts`, of its copies moved ±s frames in time.

        SVD of the centred data when there are fewer rows than dimensions; otherwise eigh of the
        covariance accumulated chunk by chunk, so augmented copies are never all in memory.
        """
        data = torch.from_numpy(np.asarray(x, dtype=np.float32))
        moves = [0, *[s * d for s in shifts for d in (1, -1)]]

        def views() -> Iterator[torch.Tensor]:
            for m in moves:
                for i in range(0, len(data), chunk):
                    yield shift_time(data[i:i + chunk], m).flatten(1).double()

        rows, dims = len(data) * len(moves), data[0].numel()
        if rows <= dims:
            flat = torch.cat(list(views()))
            mean = flat.mean(0)
            _, _, vt = torch.linalg.svd(flat - mean, full_matrices=False)
            comps = vt[:k]
        else:
            total, scatter = torch.zeros(dims, dtype=torch.float64), torch.zeros(dims, dims, dtype=torch.float64)
            for v in views():
                total += v.sum(0)
                scatter += v.T @ v
            mean = total / rows
            _, vecs = torch.linalg.eigh(scatter - rows * torch.outer(mean, mean))
            comps = vecs.flip(-1)[:, :k].T
        return cls(mean.numpy(), comps.numpy())

    def encode(self, x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1) - self.mean) @ self.components.T

    def decode(self, codes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return (codes @ self.components + self.mean).reshape(len(codes), *shape)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x), x.shape[1:])
