"""Exact PCA: the linear autoencoder every model must beat (evaluate.Baselines), and realism's feature space."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PCA:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), orthonormal rows

    @classmethod
    def fit(cls, x: np.ndarray, k: int, chunk: int = 1024) -> PCA:
        """Exact PCA of `x`: SVD of the centred data when there are fewer rows than dimensions; otherwise
        eigh of the covariance accumulated chunk by chunk, so that a big split is never copied in float64."""
        data = torch.from_numpy(np.asarray(x, dtype=np.float32))
        rows, dims = len(data), data[0].numel()
        if rows <= dims:
            flat = data.flatten(1).double()
            mean = flat.mean(0)
            comps = torch.linalg.svd(flat - mean, full_matrices=False)[2][:k]
        else:
            total, scatter = torch.zeros(dims, dtype=torch.float64), torch.zeros(dims, dims, dtype=torch.float64)
            for i in range(0, rows, chunk):
                v = data[i:i + chunk].flatten(1).double()
                total += v.sum(0)
                scatter += v.T @ v
            mean = total / rows
            comps = torch.linalg.eigh(scatter - rows * torch.outer(mean, mean))[1].flip(-1)[:, :k].T
        return cls(mean.numpy(), comps.numpy())

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
