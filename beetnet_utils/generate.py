"""New spectrograms from the latent space: interpolation between clips, sampling from a fitted Gaussian."""
from __future__ import annotations

import numpy as np
import torch

from .run import Run


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of direction, linear of length; falls back to lerp for parallel vectors."""
    na, nb = a.norm(), b.norm()
    cos = torch.clamp(torch.dot(a / na, b / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return torch.lerp(a, b, t)
    direction = (torch.sin((1 - t) * omega) * a / na + torch.sin(t * omega) * b / nb) / torch.sin(omega)
    return direction * ((1 - t) * na + t * nb)


def interpolate(run: Run, mel_a: np.ndarray, mel_b: np.ndarray, alphas: list[float] | np.ndarray,
                mode: str = "linear") -> torch.Tensor:
    """Decode points between two clips' latents: (len(alphas), n_mels, frames) dB."""
    if mode not in ("linear", "spherical"):
        raise ValueError(f"mode must be linear or spherical, not {mode!r}")
    za, zb = run.encode(mel_a), run.encode(mel_b)
    mix = torch.lerp if mode == "linear" else slerp
    return run.decode(torch.stack([mix(za, zb, float(t)) for t in alphas]))


class LatentGaussian:
    """A full-covariance Gaussian fitted to the train clips' latents."""

    def __init__(self, run: Run, train_db: np.ndarray, batch: int = 256):
        z = torch.cat([run.encode(train_db[i:i + batch]) for i in range(0, len(train_db), batch)]).double()
        self.run = run
        self.mean = z.mean(0)
        cov = torch.cov(z.T) if len(z) > 1 else torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64)
        self.cov = cov + 1e-5 * torch.eye(len(self.mean), dtype=torch.float64)  # rank-deficient with few clips
        self.dist = torch.distributions.MultivariateNormal(self.mean, covariance_matrix=self.cov)

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """n new spectrograms in dB; `temperature` scales the spread around the mean."""
        torch.manual_seed(seed)
        z = self.mean + temperature * (self.dist.sample((n,)) - self.mean)
        return self.run.decode(z.float())


def samples(runs: dict[str, Run], train_db: np.ndarray, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """n new spectrograms from each run's latent Gaussian: {name: (n, n_mels, frames) dB}."""
    return {name: LatentGaussian(run, train_db).sample(n, seed).numpy() for name, run in runs.items()}
