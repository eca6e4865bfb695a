"""Realism by known answers: a set against itself, blurred, shuffled; Fréchet in closed form; the report's rows."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

from beetnet_utils.pca import PCA
from beetnet_utils.realism import (FeatureSpace, compare, frechet_distance, model_realism, realism_report,
                                   two_sample_accuracy)


@pytest.fixture(scope="module")
def clips(mid_cache):
    """The mid demo set's train clips in a random order (the cache keeps them by recording)."""
    x = mid_cache.db("train")
    return x[np.random.default_rng(0).permutation(len(x))]


@pytest.fixture(scope="module")
def space(mid_cache, clips):
    return FeatureSpace.fit(clips, mid_cache.mean, mid_cache.std)


def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """A moving average over `width` frames: the blur a decoder that averages in time leaves."""
    return uniform_filter1d(x, width, axis=-1, mode="nearest")


def shuffle_frames(x: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([clip[:, rng.permutation(clip.shape[-1])] for clip in x])


def test_the_feature_space(space, clips):
    f = space(clips)
    assert f.shape == (len(clips), 64 + 96)
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-3)
    still = np.repeat(clips[:2, :, :1], clips.shape[-1], axis=-1)  # each band constant in time: no change at all
    np.testing.assert_allclose(space(still)[:, 64:], np.broadcast_to(-space.centre[64:] / space.scale[64:], (2, 96)),
                               rtol=1e-5)


def test_frechet_in_closed_form():
    rng = np.random.default_rng(0)
    for rows in (500, 20):  # full-rank covariance, and fewer rows than the 30 dimensions
        x = rng.normal(size=(rows, 30)) * np.linspace(0.5, 2, 30) + 1.0
        # y = 2x + 3: mean 2m + 3, covariance 4C; then tr(C + 4C - 2 (C^½ 4C C^½)^½) = tr C
        expected = np.square(x.mean(0) + 3).sum() + np.trace(np.cov(x, rowvar=False))
        assert frechet_distance(x, 2 * x + 3) == pytest.approx(expected, rel=1e-4)
        assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6 * expected)
        assert frechet_distance(x, 2 * x + 3) == pytest.approx(frechet_distance(2 * x + 3, x), rel=1e-6)


def test_accuracy_is_balanced_seeded_and_separates_what_differs():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 10)), rng.normal(size=(40, 10))
    same = two_sample_accuracy(a, b, seed=3)
    assert same == two_sample_accuracy(a, b, seed=3) and 0.3 < same < 0.7  # sizes differ, chance is still 0.5
    assert two_sample_accuracy(a, b + 10.0) == 1.0
    with pytest.raises(ValueError, match="at least 4"):
        two_sample_accuracy(a, b[:3])
    with pytest.raises(ValueError, match="logistic or mlp"):
        two_sample_accuracy(a, b, model="forest")


def test_a_set_against_itself_its_other_half_and_spoilt_copies(space, clips):
    half = len(clips) // 2
    a, b = clips[:half], clips[half:]
    itself = compare(space, a, a)
    # no better than chance; below it, since a test clip's twin sits in the other class's training half
    assert itself["accuracy"] <= 0.5 and itself["frechet"] == pytest.approx(0.0, abs=1e-6)
    other = compare(space, a, b)
    assert 0.35 <= other["accuracy"] <= 0.65
    shuffled = compare(space, a, shuffle_frames(b))
    assert shuffled["accuracy"] >= 0.95 and shuffled["frechet"] > 10 * other["frechet"]
    blurred = compare(space, a, smooth(b, 5))
    assert blurred["accuracy"] >= 0.9 and blurred["frechet"] > 2 * other["frechet"]


def test_more_blur_reads_as_less_real(space, clips):
    half = len(clips) // 2
    a, b = clips[:half], clips[half:]
    rows = [compare(space, a, smooth(b, w)) for w in (1, 2, 3, 5, 9)]
    frechet = [r["frechet"] for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    assert all(later > earlier for earlier, later in zip(frechet, frechet[1:]))
    assert all(later >= earlier - 0.03 for earlier, later in zip(accuracy, accuracy[1:]))
    assert accuracy[0] < 0.65 and accuracy[-1] > 0.95


def test_the_report_points_at_the_spoilt_stage(space, clips):
    real, unseen, spare = clips[:50], clips[50:100], clips[100:]
    decoder = lambda x: smooth(x, 5)  # noqa: E731  a blurring "decoder"
    good_prior = decoder(spare)  # decoded like the reconstructions, from clips the prior never saw
    rows = realism_report(space, real, decoder(real), good_prior, decoder(unseen))
    assert list(rows) == ["real halves", "decoder", "floor", "prior"]
    assert all(r["clips"] == 25 for r in rows.values())
    assert rows["real halves"]["accuracy"] < 0.7 < 0.9 < rows["decoder"]["accuracy"]
    assert rows["floor"]["accuracy"] < 0.7 and rows["prior"]["accuracy"] < 0.7  # a perfect prior reads as the floor
    bad = realism_report(space, real, decoder(real), shuffle_frames(good_prior), decoder(unseen))
    assert bad["prior"]["accuracy"] > 0.9 and bad["prior"]["frechet"] > 5 * bad["floor"]["frechet"]
    assert bad["decoder"] == rows["decoder"]  # the prior's rows do not touch the decoder's


class PCAModel:
    """A real linear autoencoder with a Gaussian prior on its codes, standing in for a trained run."""

    def __init__(self, train_db: np.ndarray, k: int):
        self.pca = PCA.fit(train_db, k)
        self.shape = train_db.shape[1:]

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.pca.reconstruct(x).clip(-40, 60)

    def sample(self, fit_db: np.ndarray, n: int, spread: float = 1.0) -> np.ndarray:
        codes = self.pca.encode(fit_db)
        rng = np.random.default_rng(0)
        drawn = rng.multivariate_normal(codes.mean(0), spread ** 2 * np.cov(codes, rowvar=False), size=n)
        return self.pca.decode(drawn, self.shape).clip(-40, 60)


def test_model_realism_on_a_linear_model(mid_cache):
    train, heldout = mid_cache.db("train"), np.concatenate([mid_cache.db("val"), mid_cache.db("test")])
    lossy = PCAModel(train, 4)
    rows = model_realism(lossy, train, heldout, mid_cache.mean, mid_cache.std, lossy.sample)
    assert list(rows) == ["real halves", "decoder", "floor", "prior"]
    unseen = min(200, len(train) // 2)  # train clips kept from the prior's fit
    assert rows["floor"]["clips"] == rows["prior"]["clips"] == unseen // 2
    assert rows["decoder"]["accuracy"] > 0.9 > rows["real halves"]["accuracy"]  # 4 components blur every clip
    assert rows["prior"]["accuracy"] < 0.75  # a Gaussian is nearly right for codes of a linear model
    no_spread = model_realism(lossy, train, heldout, mid_cache.mean, mid_cache.std,
                              lambda fit_db, n: lossy.sample(fit_db, n, spread=0.0))  # every sample the mean
    assert no_spread["prior"]["accuracy"] > 0.95 and no_spread["prior"]["frechet"] > 3 * rows["prior"]["frechet"]
    assert no_spread["decoder"] == rows["decoder"]
