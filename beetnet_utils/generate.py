"""New spectrograms from the latent space: interpolation between clips, and priors to sample from.

A prior is fitted to the latent codes of the train clips and sampled; the decoder turns the
samples into spectrograms. Three priors, chosen by how real their samples look (realism.py):
  gaussian  one full-covariance Gaussian (the mean and spread of the codes, nothing more)
  mixture   a mixture of full-covariance Gaussians (sklearn's GaussianMixture): clusters of codes,
            such as pieces or registers, each with its own spread
  kde       a kernel density: a train clip's code plus Gaussian noise of one bandwidth per
            dimension (Silverman's rule). Closest to the data, so watch the nearest-train distance:
            a sample that is a train clip with a little noise is a copy, not a new spectrogram.
Every prior samples with a `temperature`: the spread around its centre(s) is scaled by it.

`generation_report` measures the samples of every prior, and the midpoints of interpolations,
with the same two-sample test and Fréchet distance as the decoder's own gap: it makes the codes,
reconstructions and samples, and `realism.realism_report` splits them by recording into the rows.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from .realism import ClipSet, FeatureSpace, realism_report, split_groups
from .run import Run
from .storage import BeetNetError, check_array

# the most train clips a prior (and the realism rows' feature space) is fitted on: each is refined through
# the run's decoder first, the slowest step of notebook 04 (docs/RESULTS.md, "Realism of the reconstructions")
FIT_CLIPS = 512


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of direction, linear of length; falls back to lerp for parallel vectors."""
    na, nb = a.norm(), b.norm()
    cos = torch.clamp(torch.dot(a / na, b / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return torch.lerp(a, b, t)
    direction = (torch.sin((1 - t) * omega) * a / na + torch.sin(t * omega) * b / nb) / torch.sin(omega)
    return direction * ((1 - t) * na + t * nb)


def mixing_weights(alphas: list[float] | np.ndarray, mode: str = "linear") -> np.ndarray:
    """`alphas` as weights to mix with (0: the first code, 1: the second; beyond them, extrapolation), or a
    one-line refusal: a NaN weight decodes to a NaN spectrogram, and no weights to nothing to show."""
    if mode not in ("linear", "spherical"):
        raise ValueError(f"mode must be linear or spherical, not {mode!r}")
    try:
        weights = np.asarray(alphas, dtype=np.float64)
    except (TypeError, ValueError):
        weights = np.full(1, np.nan)
    if weights.ndim != 1 or not len(weights) or not np.isfinite(weights).all():
        raise BeetNetError(f"alphas must be a non-empty list of finite mixing weights (0: the first clip, "
                           f"1: the second), not {alphas!r}")
    return weights


def mix_codes(za: torch.Tensor, zb: torch.Tensor, alphas: list[float] | np.ndarray,
              mode: str = "linear") -> torch.Tensor:
    """Points between two latents, linearly or along the sphere: (len(alphas), latent)."""
    weights = mixing_weights(alphas, mode)
    mix = torch.lerp if mode == "linear" else slerp
    return torch.stack([mix(za, zb, float(t)) for t in weights])


def interpolate(run: Run, mel_a: np.ndarray, mel_b: np.ndarray, alphas: list[float] | np.ndarray,
                mode: str = "linear") -> torch.Tensor:
    """Decode points between two clips' latents: (len(alphas), n_mels, frames) dB."""
    mixing_weights(alphas, mode)  # refused before the two clips are encoded, not after
    return run.decode(mix_codes(run.encode(mel_a), run.encode(mel_b), alphas, mode))


def encode_all(run: Run, mel_db: np.ndarray, batch: int = 256) -> np.ndarray:
    """Latent codes of many clips, in batches: (N, latent) float64."""
    if not len(mel_db):  # none: still (0, latent)
        return encode_all(run, np.zeros((1, *mel_db.shape[1:]), np.float32))[:0]
    return np.concatenate([run.encode(mel_db[i:i + batch]).double().numpy() for i in range(0, len(mel_db), batch)])


def decode_all(run: Run, z: np.ndarray, batch: int = 256) -> np.ndarray:
    if not len(z):  # none: still (0, n_mels, frames)
        return decode_all(run, np.zeros((1, *z.shape[1:])))[:0]
    return np.concatenate([run.decode(torch.as_tensor(z[i:i + batch], dtype=torch.float32)).numpy()
                           for i in range(0, len(z), batch)])


# --- priors over the latent codes ------------------------------------------------------------

def check_draw(n: int, temperature: float, least: int = 0) -> None:
    """Refuse, in one line, a count or a temperature a prior cannot draw with: a NaN or infinite temperature
    decodes to NaN spectrograms, a negative one is the same spread mirrored, and a count below `least`
    (1 where a person asks for samples to look at) gives nothing to show or a numpy error."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < least:
        raise BeetNetError(f"n must be a whole number of samples, at least {least}, not {n!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
            or not math.isfinite(temperature) or temperature < 0:
        raise BeetNetError(f"temperature must be a finite number >= 0 (0: the prior's centre, 1: its own "
                           f"spread), not {temperature!r}")


@dataclass
class GaussianPrior:
    mean: np.ndarray
    chol: np.ndarray  # Cholesky factor of the covariance (ridged: few clips leave it rank-deficient)

    @classmethod
    def fit(cls, z: np.ndarray, seed: int = 0) -> GaussianPrior:
        cov = np.cov(z.T) if len(z) > 1 else np.zeros((z.shape[1], z.shape[1]))
        return cls(z.mean(0), np.linalg.cholesky(cov + 1e-5 * np.eye(z.shape[1])))

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        check_draw(n, temperature)
        eps = np.random.default_rng(seed).standard_normal((n, len(self.mean)))
        return self.mean + temperature * eps @ self.chol.T


@dataclass
class MixturePrior:
    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, latent)
    chols: np.ndarray  # (k, latent, latent) Cholesky factors of the components' covariances

    @classmethod
    def fit(cls, z: np.ndarray, seed: int = 0, components: int = 8) -> MixturePrior:
        k = max(1, min(components, len(z) // 50))  # a full covariance per component needs clips to fit
        from sklearn.mixture import GaussianMixture  # here, not at the top: scikit-learn takes 2 s to import
        m = GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=seed).fit(z)
        return cls(m.weights_, m.means_, np.linalg.cholesky(m.covariances_))

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        check_draw(n, temperature)
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.weights), size=n, p=self.weights / self.weights.sum())
        eps = rng.standard_normal((n, self.means.shape[1]))
        return self.means[which] + temperature * np.einsum("nij,nj->ni", self.chols[which], eps)


@dataclass
class KernelPrior:
    codes: np.ndarray
    bandwidth: np.ndarray  # per dimension

    @classmethod
    def fit(cls, z: np.ndarray, seed: int = 0) -> KernelPrior:
        n, d = z.shape
        silverman = (4 / (d + 2)) ** (1 / (d + 4)) * n ** (-1 / (d + 4))
        return cls(z.copy(), silverman * z.std(0))

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        check_draw(n, temperature)
        rng = np.random.default_rng(seed)
        pick = self.codes[rng.integers(len(self.codes), size=n)]
        return pick + temperature * self.bandwidth * rng.standard_normal((n, self.codes.shape[1]))


PRIORS = {"gaussian": GaussianPrior, "mixture": MixturePrior, "kde": KernelPrior}


def fit_prior(name: str, z: np.ndarray, seed: int = 0):
    """Prior `name` fitted to codes (clips, latent); at least 2: one code is a point to copy, not a spread."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}: choose one of {', '.join(PRIORS)}")
    if len(z) < 2:  # before the array's checks: no codes at all is this mistake too
        raise BeetNetError(f"the {name} prior is fitted to the codes of at least 2 train clips, not {len(z)}")
    check_array(z, f"the {name} prior", "latent codes (clips, latent)", (None, None))
    return PRIORS[name].fit(np.asarray(z, dtype=np.float64), seed)


class LatentGaussian:
    """The Gaussian prior of a run, fitted to its train clips' codes, sampled straight to dB."""

    def __init__(self, run: Run, train_db: np.ndarray):
        self.run = run
        self.prior = fit_prior("gaussian", encode_all(run, train_db))
        self.mean = torch.as_tensor(self.prior.mean)

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """n new spectrograms in dB; `temperature` scales the spread around the mean."""
        check_draw(n, temperature, least=1)
        return torch.as_tensor(decode_all(self.run, self.prior.sample(n, seed, temperature)))


def samples(runs: dict[str, Run], train_db: np.ndarray, n: int = 4, seed: int = 0, prior: str = "gaussian",
            temperature: float = 1.0) -> dict[str, np.ndarray]:
    """n new spectrograms from each run's prior (by name): {run name: (n, n_mels, frames) dB}."""
    check_draw(n, temperature, least=1)  # before any clip is encoded
    out = {}
    for name, run in runs.items():
        z = fit_prior(prior, encode_all(run, train_db), seed).sample(n, seed, temperature)
        out[name] = decode_all(run, z)
    return out


# --- how real are they? ----------------------------------------------------------------------

def nearest_distance(mel_db: np.ndarray, reference_db: np.ndarray, batch: int = 256) -> np.ndarray:
    """Each spectrogram's mean |dB difference| to its nearest reference spectrogram (L1 per bin)."""
    ref = torch.as_tensor(reference_db.reshape(len(reference_db), -1), dtype=torch.float32)
    x = torch.as_tensor(mel_db.reshape(len(mel_db), -1), dtype=torch.float32)
    return np.concatenate([torch.cdist(x[i:i + batch], ref, p=1).min(1).values.numpy() / ref.shape[1]
                           for i in range(0, len(x), batch)])


def generation_report(run: Run, train_db: np.ndarray, train_recordings: np.ndarray, heldout_db: np.ndarray,
                      heldout_recordings: np.ndarray, priors: tuple[str, ...] = tuple(PRIORS), temperature: float = 1.0,
                      unseen: int = 4, reference: int = 400, seed: int = 0,
                      heldout_codes: np.ndarray | None = None) -> dict:
    """Realism rows of one run (realism.realism_report): the decoder, each prior and midpoints, against a floor.

    Each clip comes with its recording (`MelCache.clips(splits)` gives both): the rows compare
    whole recordings. `unseen` train recordings (leaving the priors at least 2) are kept out of the
    priors' fit, which takes the others; the feature space is fitted on `reference` of the priors'
    clips. `nearest_train_db` gives, per set, the mean distance of a spectrogram to the nearest
    reconstruction of a clip the priors were fitted on: samples far nearer than held-out
    reconstructions are copies. `heldout_codes`: the held-out clips' codes where the caller has them
    (evaluate has scored them), so that they are not refined twice.
    """
    rng = np.random.default_rng(seed)
    train_recordings = np.asarray(train_recordings)
    kept = max(0, min(unseen, len(np.unique(train_recordings)) - 2))
    unseen_rows, fit_rows = split_groups(train_recordings, rng, kept)
    fit_db = train_db[fit_rows]
    space = FeatureSpace.fit(fit_db[rng.permutation(len(fit_db))[:reference]], run.stats["mean"], run.stats["std"])
    z_fit = encode_all(run, fit_db)
    fit_recon = decode_all(run, z_fit)
    heldout = _clip_set(run, heldout_db, np.asarray(heldout_recordings), heldout_codes)
    held_back = _clip_set(run, train_db[unseen_rows], train_recordings[unseen_rows])
    samples = {name: decode_all(run, fit_prior(name, z_fit, seed).sample(len(unseen_rows), seed, temperature))
               for name in priors}
    rows = realism_report(space, heldout, held_back, samples, lambda z: decode_all(run, z), seed=seed)
    nearest = {"held-out reconstructions": heldout.recon_db} | {f"prior {name}": s for name, s in samples.items()}
    return {"rows": rows, "temperature": temperature,
            "nearest_train_db": {k: float(nearest_distance(x, fit_recon).mean()) for k, x in nearest.items()},
            "clips": {"fit": len(fit_db), "unseen": len(unseen_rows), "held-out": len(heldout_db)},
            "recordings": {"fit": len(np.unique(train_recordings[fit_rows])), "unseen": kept,
                           "held-out": len(np.unique(heldout_recordings))}}


def _clip_set(run: Run, db: np.ndarray, recordings: np.ndarray, codes: np.ndarray | None = None) -> ClipSet:
    codes = encode_all(run, db) if codes is None else codes
    return ClipSet(db, recordings, codes, decode_all(run, codes))
