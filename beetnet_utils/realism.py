"""How real do spectrograms look? A classifier two-sample test and a Fréchet distance, in one feature space.

L1 scores a reconstruction against its own clip; a sampled spectrogram has no clip to be scored
against. So new spectrograms are judged as a set against a set of real ones:
  accuracy  a classifier is fitted to tell the two sets apart on half of each and scored on the
            other half: 0.5 when it cannot, 1.0 when it always can (a classifier two-sample test,
            Lopez-Paz and Oquab 2017). Clips of one recording look alike, so every half is made
            of whole recordings: a recording on both sides of a comparison reads below 0.5, one in
            both the classifier's fitting and scoring half above it;
  frechet   the Fréchet distance between Gaussians fitted to the two sets' features (as FID does
            with image features): 0 for equal means and covariances, larger as they part.
The features (`FeatureSpace`) are PCA-64 of the standardised mel, which sees which notes and
how loud, beside each band's mean |frame-to-frame change|, which sees onsets and sharpness: a
decoder that blurs in time can match the PCA part and still fail the second.

The classifier is logistic regression on standardised features: a small MLP (`model="mlp"`) told
spoilt copies apart no better and took 10 to 15 times as long (docs/RESULTS.md, "how real they look").

`realism_report` turns these into the rows that locate the gap: real clips against reconstructions
(the decoder), prior samples against reconstructions of recordings the prior never saw (the
prior), and two halves of one set (the floor that finite samples and few recordings leave).
`generate.generation_report` gives it a trained run's clips, codes and samples.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
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
    def fit(cls, reference_db: np.ndarray, mean: float, std: float, k: int = 64) -> FeatureSpace:
        x = (np.asarray(reference_db, dtype=np.float32) - mean) / std
        pca = PCA.fit(x, min(k, len(x) - 1))  # centred, n clips span n - 1 directions: z-scores of the next blow up
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


def split_groups(groups: np.ndarray, rng: np.random.Generator,
                 count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two sides that share no group: `count` whole groups drawn at random (default half
    of them) on the first side, every other group on the second.

    Clips cut from one recording look alike, so a split by rows would put near-twins on both sides.
    """
    names = np.unique(groups)
    first = rng.permutation(names)[: len(names) // 2 if count is None else count]
    on_first = np.isin(groups, first)
    return np.flatnonzero(on_first), np.flatnonzero(~on_first)


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """As many random rows of `a` as of `b` (the smaller count), stacked, with labels 0 and 1: chance is 0.5."""
    n = min(len(a), len(b))
    x = np.concatenate([a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]])
    return x, np.repeat([0, 1], n)


def _halves(groups_a: np.ndarray, groups_b: np.ndarray, shared: np.ndarray,
            rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    """[(rows of a, rows of b) in half 1, the same in half 2]: half of each set's own groups, and half of
    the `shared` groups, go to half 1, so that a group of both sets is in one half in both."""
    pick = lambda g: rng.permutation(g)[: len(g) // 2]  # noqa: E731
    both = pick(shared)
    in_first = [np.isin(g, both) | np.isin(g, pick(np.setdiff1d(g, shared))) for g in (groups_a, groups_b)]
    if not all(side.any() and not side.all() for side in in_first):
        raise ValueError("each set needs recordings in both halves: give each at least 2 of its own, or the same ones")
    return [tuple(np.flatnonzero(side == half) for side in in_first) for half in (True, False)]


def two_sample_accuracy(a: np.ndarray, b: np.ndarray, model: str = "logistic", repeats: int = 3, seed: int = 0,
                        groups_a: np.ndarray | None = None, groups_b: np.ndarray | None = None) -> float:
    """Held-out accuracy of a classifier telling feature rows `a` from `b`, averaged over `repeats` halvings.

    Each halving splits the rows by group (`groups_a`, `groups_b`: the recording of each row; none:
    each row its own), fits on half 1 of both sets and scores on half 2, then the other way round;
    each fit and each score takes as many rows of `a` as of `b`, so 0.5 is chance. No group is in
    both halves, so the classifier cannot score a row by recognising a recording it was fitted on;
    a group of both sets is in the same half in both (a clip and its copy are fitted, or scored,
    together: a set against itself reads 0.5). Deterministic under `seed`. Rows of `a` and `b` in
    one group but not given one (each its own) read below 0.5, as a row's twin was fitted with the
    other label.
    """
    ga = np.arange(len(a)) if groups_a is None else np.asarray(groups_a)
    gb = np.arange(len(b)) if groups_b is None else np.asarray(groups_b)
    shared = np.intersect1d(ga, gb) if groups_a is not None and groups_b is not None else ga[:0]
    if min(len(a), len(b)) < 4:
        raise ValueError(f"need at least 4 rows in each set, not {min(len(a), len(b))}")
    if min(len(np.unique(ga)), len(np.unique(gb))) < 2:
        raise ValueError("need at least 2 recordings in each set, to fit and to score on different ones")
    rng = np.random.default_rng(seed)
    scores = []
    for r in range(repeats):
        halves = _halves(ga, gb, shared, rng)
        for (fit_a, fit_b), (score_a, score_b) in (halves, halves[::-1]):
            x, y = _balanced(a[fit_a], b[fit_b], rng)
            x_test, y_test = _balanced(a[score_a], b[score_b], rng)
            clf = _classifier(model, seed + r).fit(x, y)
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
            seed: int = 0, groups_a: np.ndarray | None = None, groups_b: np.ndarray | None = None) -> dict[str, float]:
    """{"accuracy", "frechet", "clips"} of two sets of dB spectrograms in `space` (groups: two_sample_accuracy)."""
    fa, fb = space(a_db), space(b_db)
    return {"accuracy": two_sample_accuracy(fa, fb, model, repeats, seed, groups_a, groups_b),
            "frechet": frechet_distance(fa, fb), "clips": min(len(fa), len(fb))}


Side = tuple[np.ndarray, "np.ndarray | None"]  # dB spectrograms and the recording of each (None: each its own)


@dataclass
class ClipSet:
    """Clips, the recording each was cut from, and what a model makes of them, row for row."""

    db: np.ndarray  # (N, n_mels, frames) dB
    recordings: np.ndarray  # (N,) every split keeps a recording whole
    codes: np.ndarray  # (N, latent)
    recon_db: np.ndarray  # (N, n_mels, frames): the decoder's output for `codes`

    def real(self, rows: np.ndarray) -> Side:
        return self.db[rows], self.recordings[rows]

    def reconstructed(self, rows: np.ndarray) -> Side:
        return self.recon_db[rows], self.recordings[rows]


def realism_report(space: FeatureSpace, heldout: ClipSet, unseen: ClipSet, samples: Mapping[str, np.ndarray],
                   decode: Callable[[np.ndarray], np.ndarray], model: str = "logistic", repeats: int = 3,
                   seed: int = 0) -> dict[str, dict]:
    """The rows that say where realism is lost, each {"accuracy", "frechet", "clips", "recordings"}.

    heldout   real clips of recordings the model never saw, with their reconstructions
    unseen    train clips of recordings kept out of the priors' fit: their reconstructions are what a
              perfect prior's samples would look like (same decoder, clips the prior never saw)
    samples   {prior name: decoded samples}, at least as many as the second half of `unseen`
    decode    codes -> dB, for the midpoints

    Each set is split by recording into halves 1 and 2, so no recording is on both sides of a row:
      real halves   real 1 vs real 2: "indistinguishable" at this size
      decoder       reconstructions of real 1 vs real 2: the decoder's blur
      floor         unseen reconstructions 1 vs 2: what a prior row is read against
      prior NAME    NAME's samples vs unseen reconstructions 2: the prior's share, same decoder both sides
      midpoint      decoded (z_a + z_b) / 2 of pairs of unseen 1 clips vs unseen reconstructions 2
    A midpoint's two clips are of one recording, so that it too belongs to one. The classifier also
    fits and scores on different recordings (two_sample_accuracy), so a row with fewer than 2
    recordings on a side has no accuracy (None), and one with fewer than 2 clips a side nothing;
    "recordings" names each side's (None: prior samples, each its own).
    """
    # a random stream per set, so that the size of one moves no other's halves
    heldout_rng, unseen_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    real_1, real_2 = split_groups(heldout.recordings, heldout_rng)
    unseen_1, unseen_2 = split_groups(unseen.recordings, unseen_rng)
    pairs = _pairs_within(unseen.recordings, unseen_1, unseen_rng)
    midpoints = decode(unseen.codes[pairs].mean(1)) if len(pairs) else unseen.recon_db[:0]
    floor = unseen.reconstructed(unseen_2)
    run = dict(model=model, repeats=repeats, seed=seed)
    rows = {"real halves": _row(space, heldout.real(real_1), heldout.real(real_2), **run),
            "decoder": _row(space, heldout.reconstructed(real_1), heldout.real(real_2), **run),
            "floor": _row(space, unseen.reconstructed(unseen_1), floor, **run)}
    for name, drawn in samples.items():
        rows[f"prior {name}"] = _row(space, (drawn[: len(unseen_2)], None), floor, **run)
    rows["midpoint"] = _row(space, (midpoints, unseen.recordings[pairs[:, 0]]), floor, **run)
    return rows


def _pairs_within(groups: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Disjoint random pairs of `rows`, the two of each pair of one group: (P, 2) row indices."""
    pairs = [rng.permutation(rows[groups[rows] == g]) for g in np.unique(groups[rows])]
    return np.concatenate([p[: len(p) // 2 * 2].reshape(-1, 2) for p in pairs] + [np.zeros((0, 2), int)])


def _row(space: FeatureSpace, a: Side, b: Side, **run) -> dict:
    """`compare` as far as the two sides allow."""
    (a_db, groups_a), (b_db, groups_b) = a, b
    names = [None if g is None else sorted(map(str, np.unique(g))) for g in (groups_a, groups_b)]
    row = {"accuracy": None, "frechet": None, "clips": min(len(a_db), len(b_db)), "recordings": names}
    if row["clips"] < 2:
        return row
    recordings = [len(x) if g is None else len(np.unique(g)) for x, g in (a, b)]
    if row["clips"] >= 4 and min(recordings) >= 2:
        return row | compare(space, a_db, b_db, groups_a=groups_a, groups_b=groups_b, **run)
    return row | {"frechet": frechet_distance(space(a_db), space(b_db))}
