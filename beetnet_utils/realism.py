"""How real do spectrograms look? A classifier two-sample test and a Fréchet distance, in one feature space.

L1 scores a reconstruction against its own clip; a sampled spectrogram has no clip to be scored
against. So new spectrograms are judged as a set against a set of real ones:
  accuracy  a classifier is fitted to tell the two sets apart on half of each and scored on the
            other half: 0.5 when it cannot, 1.0 when it always can (a classifier two-sample test,
            Lopez-Paz and Oquab 2017);
  frechet   the Fréchet distance between Gaussians fitted to the two sets' features (as FID does
            with image features): 0 for equal means and covariances, larger as they part.
The features (`FeatureSpace`) are PCA-64 of the standardised mel, which sees which notes and
how loud, beside each band's mean |frame-to-frame change|, which sees onsets and sharpness: a
decoder that blurs in time can match the PCA part and still fail the second.

The classifier is logistic regression on standardised features. A small MLP (one hidden layer of
64, `model="mlp"`) was measured beside it on the mid demo set (77 clips a side, 3 halvings): it was
never more than 0.015 more accurate on any spoilt copy (blurred over 2, 3 or 5 frames, PCA-16
reconstructions, frames shuffled), was 0.025 less so on the 5-frame blur, and took 10 to 15 times as
long (about 0.4 s against 0.03 s). So logistic regression is the default.

`realism_report` turns these into the rows that locate the gap: real clips against their own
reconstructions (the decoder), prior samples against reconstructions of clips the prior never saw
(the prior), and two halves of one set (the floor that finite samples leave).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pca import PCA


@dataclass
class FeatureSpace:
    """dB mel (N, n_mels, frames) -> (N, k + n_mels) features, z-scored on the reference set."""

    mean: float  # the train split's dB standardisation
    std: float
    pca: PCA
    centre: np.ndarray  # (k + n_mels,) of the reference set's raw features
    scale: np.ndarray

    @classmethod
    def fit(cls, reference_db: np.ndarray, mean: float, std: float, k: int = 64) -> "FeatureSpace":
        x = (np.asarray(reference_db, dtype=np.float32) - mean) / std
        pca = PCA.fit(x, min(k, len(x)))
        raw = cls._raw(x, pca)
        return cls(mean, std, pca, raw.mean(0), raw.std(0) + 1e-8)

    @staticmethod
    def _raw(x: np.ndarray, pca: PCA) -> np.ndarray:
        sharpness = np.abs(np.diff(x, axis=-1)).mean(-1)  # (N, n_mels): mean |change| per band
        return np.concatenate([pca.encode(x), sharpness], axis=1)

    def __call__(self, mel_db: np.ndarray) -> np.ndarray:
        x = (np.asarray(mel_db, dtype=np.float32) - self.mean) / self.std
        return (self._raw(x, self.pca) - self.centre) / self.scale


def _classifier(model: str, seed: int):
    # scikit-learn is imported here, when realism is measured, not at start-up (it takes 2 s)
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if model == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if model == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier((64,), alpha=1e-2, max_iter=500, random_state=seed))
    raise ValueError(f"model must be logistic or mlp, not {model!r}")


def two_sample_accuracy(a: np.ndarray, b: np.ndarray, model: str = "logistic", repeats: int = 3,
                        seed: int = 0) -> float:
    """Held-out accuracy of a classifier telling feature rows `a` from `b`, averaged over `repeats` halvings.

    Each halving takes the same number of rows from both sets (the smaller set's size, so 0.5 is
    chance), trains on half of each and scores on the other half. Deterministic under `seed`.
    Give disjoint sets: rows present in both read below 0.5 (a test row's twin was trained on
    with the other label), as a set against itself does.
    """
    n = min(len(a), len(b))
    if n < 4:
        raise ValueError(f"need at least 4 rows in each set, not {n}")
    rng = np.random.default_rng(seed)
    scores = []
    for r in range(repeats):
        ia = rng.permutation(len(a))[:n]
        ib = rng.permutation(len(b))[:n]
        half = n // 2
        x_train = np.concatenate([a[ia[:half]], b[ib[:half]]])
        x_test = np.concatenate([a[ia[half:]], b[ib[half:]]])
        y_train = np.repeat([0, 1], half)
        y_test = np.repeat([0, 1], n - half)
        clf = _classifier(model, seed + r).fit(x_train, y_train)
        scores.append(float((clf.predict(x_test) == y_test).mean()))
    return float(np.mean(scores))


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||² + tr(C_a + C_b - 2 (C_a^½ C_b C_a^½)^½) between Gaussians fitted to feature rows.

    The symmetric form with eigen-decompositions stays real and stable when the covariances are
    singular, as they are with fewer rows than features; `eps` (× the mean variance) on the
    diagonal keeps near-zero eigenvalues from making the square roots noisy.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ridge = eps * (np.trace(ca) + np.trace(cb)) / (2 * len(ca)) * np.eye(len(ca))
    ca, cb = ca + ridge, cb + ridge
    root_a = _psd_sqrt(ca)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cb @ root_a), 0, None)).sum()
    return float(np.square(a.mean(0) - b.mean(0)).sum() + np.trace(ca) + np.trace(cb) - 2 * cross)


def compare(space: FeatureSpace, a_db: np.ndarray, b_db: np.ndarray, model: str = "logistic", repeats: int = 3,
            seed: int = 0) -> dict[str, float]:
    """{"accuracy", "frechet", "clips"} of two sets of dB spectrograms in `space`."""
    fa, fb = space(a_db), space(b_db)
    return {"accuracy": two_sample_accuracy(fa, fb, model, repeats, seed),
            "frechet": frechet_distance(fa, fb), "clips": min(len(fa), len(fb))}


def realism_report(space: FeatureSpace, real_db: np.ndarray, real_recon_db: np.ndarray, prior_db: np.ndarray,
                   unseen_recon_db: np.ndarray, model: str = "logistic", repeats: int = 3,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """The rows that say where realism is lost, each {"accuracy", "frechet", "clips"}.

    real_db           held-out real clips
    real_recon_db     their reconstructions, row for row
    prior_db          samples from the prior (e.g. a latent Gaussian), decoded; at least half as
                      many as unseen_recon_db
    unseen_recon_db   reconstructions of train clips left out of the prior's fit

    Each set is split into two random halves, 1 and 2, and every row compares half-sized sets, so
    the rows share their sample size and their finite-sample bias and can be read against each other:
      real halves   real 1 vs real 2: "indistinguishable" at this size
      decoder       reconstructions of real 1 vs real 2: the decoder's blur (other clips, so a
                    clip never meets its own copy)
      floor         unseen reconstructions 1 vs 2: what `prior` reads for a perfect prior
      prior         prior samples vs unseen reconstructions 2: the prior's share, with the same
                    decoder on both sides
    """
    real_1, real_2 = _halves(len(real_db), seed)
    unseen_1, unseen_2 = _halves(len(unseen_recon_db), seed + 1)
    run = dict(space=space, model=model, repeats=repeats, seed=seed)
    return {
        "real halves": compare(a_db=real_db[real_1], b_db=real_db[real_2], **run),
        "decoder": compare(a_db=real_recon_db[real_1], b_db=real_db[real_2], **run),
        "floor": compare(a_db=unseen_recon_db[unseen_1], b_db=unseen_recon_db[unseen_2], **run),
        "prior": compare(a_db=prior_db[: len(unseen_1)], b_db=unseen_recon_db[unseen_2], **run),
    }


def _halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2:]


def model_realism(run, train_db: np.ndarray, heldout_db: np.ndarray, mean: float, std: float, sample,
                  unseen: int = 200, reference: int = 400, seed: int = 0,
                  batch: int = 256) -> dict[str, dict[str, float]]:
    """`realism_report` for a trained model: the rows from its train and held-out clips.

    `run` needs only `reconstruct(db) -> (n, n_mels, frames)` (a trained Run); `sample(fit_db, n)`
    fits the prior on `fit_db` and returns n decoded samples in dB, e.g.
    `lambda fit_db, n: LatentGaussian(run, fit_db).sample(n).numpy()`. `unseen` random train clips
    (at most half) are kept from the prior's fit to be compared with its samples; the prior is fitted
    on all the others, and the feature space on `reference` of them (a PCA of more costs more than
    it tells).
    """
    def reconstruct(x):
        return np.concatenate([np.asarray(run.reconstruct(x[i:i + batch])) for i in range(0, len(x), batch)])

    order = np.random.default_rng(seed).permutation(len(train_db))
    n_unseen = min(unseen, len(train_db) // 2)
    unseen_db, fit_db = train_db[order[:n_unseen]], train_db[order[n_unseen:]]
    space = FeatureSpace.fit(fit_db[:reference], mean, std)
    return realism_report(space, heldout_db, reconstruct(heldout_db), np.asarray(sample(fit_db, n_unseen)),
                          reconstruct(unseen_db), seed=seed)
