"""Realism by known answers: a set against itself, blurred, shuffled; Fréchet in closed form; splits that keep
recordings whole; and the report's rows, through the function the product calls, each moved by spoiling its stage."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter1d

from beetnet_utils.evaluate import realism_table
from beetnet_utils.generate import generation_report
from beetnet_utils.pca import PCA
from beetnet_utils.realism import FeatureSpace, compare, frechet_distance, split_groups, two_sample_accuracy


@pytest.fixture(scope="module")
def clips(mid_cache):
    """The mid demo set's train clips and their recordings, in a random order (the cache keeps them by recording)."""
    order = np.random.default_rng(0).permutation(len(mid_cache.indices("train")))
    return mid_cache.clips("train").db[order], mid_cache.recordings[mid_cache.indices("train")][order]


@pytest.fixture(scope="module")
def space(mid_cache, clips):
    return FeatureSpace.fit(clips[0], mid_cache.mean, mid_cache.std)


@pytest.fixture(scope="module")
def halves(clips):
    """Two halves of the train clips, 4 recordings each: (dB, recordings) of each."""
    a, b = split_groups(clips[1], np.random.default_rng(0))
    return (clips[0][a], clips[1][a]), (clips[0][b], clips[1][b])


def smooth(x: np.ndarray, width: int) -> np.ndarray:
    """A moving average over `width` frames: the blur a decoder that averages in time leaves."""
    return uniform_filter1d(x, width, axis=-1, mode="nearest")


def shuffle_frames(x: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([clip[:, rng.permutation(clip.shape[-1])] for clip in x])


def test_the_feature_space(space, clips):
    f = space(clips[0])
    assert f.shape == (len(clips[0]), 64 + 96)
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-3)
    still = np.repeat(clips[0][:2, :, :1], clips[0].shape[-1], axis=-1)  # each band constant in time: no change at all
    np.testing.assert_allclose(space(still)[:, 64:], np.broadcast_to(-space.centre[64:] / space.scale[64:], (2, 96)),
                               rtol=1e-5)
    few = FeatureSpace.fit(clips[0][:20], space.mean, space.std)  # fewer clips than 64 directions
    assert np.abs(few(clips[0][20:])).max() < 100  # no direction the 20 do not span, scaled by a zero spread


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
    with pytest.raises(ValueError, match="at least 2 recordings"):
        two_sample_accuracy(a, b, groups_a=np.zeros(len(a)))


def recordings_like(rng: np.random.Generator, names: range, clips: int = 10, dims: int = 30) -> tuple:
    """Clips that sit close to their recording's own centre, and centres all drawn alike: sets of different
    recordings are indistinguishable, but a recording is easy to recognise once seen."""
    centres = {g: 3 * rng.normal(size=dims) for g in names}
    groups = np.repeat(list(names), clips)
    return np.stack([centres[g] for g in groups]) + 0.3 * rng.normal(size=(len(groups), dims)), groups


def test_the_classifier_fits_and_scores_on_different_recordings():
    rng = np.random.default_rng(0)
    a, groups_a = recordings_like(rng, range(0, 12))
    b, groups_b = recordings_like(rng, range(12, 24))
    assert two_sample_accuracy(a, b) > 0.95  # halves by row: it scores by recognising recordings it was fitted on
    assert 0.35 < two_sample_accuracy(a, b, groups_a=groups_a, groups_b=groups_b) < 0.65
    twins = a + 0.3 * rng.normal(size=a.shape)  # the same recordings on both sides: fitted with the other label
    assert two_sample_accuracy(a, twins) < 0.45


def test_split_groups_keeps_each_group_whole_and_on_one_side():
    groups = np.repeat(["x", "y", "z", "w", "v"], [3, 1, 4, 2, 5])
    for seed in range(5):
        first, second = split_groups(groups, np.random.default_rng(seed))
        assert sorted([*first, *second]) == list(range(len(groups)))
        assert not set(groups[first]) & set(groups[second]) and len(set(groups[first])) == 2
    first, second = split_groups(groups, np.random.default_rng(0), count=4)
    assert len(set(groups[first])) == 4 and len(set(groups[second])) == 1


def test_halves_by_row_read_below_chance_on_real_clips_and_halves_by_recording_do_not(space, mid_cache):
    """The defect of issue 21: [::2] and [1::2] put neighbouring clips of every recording on both sides."""
    f, recordings = space(mid_cache.clips("train").db), mid_cache.recordings[mid_cache.indices("train")]
    by_row = [two_sample_accuracy(f[::2], f[1::2], seed=s) for s in range(4)]
    by_recording = []
    for s in range(16):
        a, b = split_groups(recordings, np.random.default_rng(s))
        by_recording.append(two_sample_accuracy(f[a], f[b], seed=s, groups_a=recordings[a], groups_b=recordings[b]))
    assert max(by_row) < 0.49 and np.mean(by_row) < 0.47  # below chance in every halving (measured: 0.42-0.48)
    assert abs(np.mean(by_recording) - 0.5) < 0.08  # one halving by recording reads 0.5 ± 0.15 (4 a side)


def test_a_set_against_itself_another_set_and_spoilt_copies(space, halves):
    """Spoilt copies of the same clips: a recording is fitted, or scored, with its copy, so only the spoiling tells."""
    (a, groups_a), (b, groups_b) = halves
    same = dict(groups_a=groups_a, groups_b=groups_a)
    itself = compare(space, a, a, **same)  # each scored clip is in both classes, so exactly half are right
    assert itself["accuracy"] == 0.5 and itself["frechet"] == pytest.approx(0.0, abs=1e-6)
    other = compare(space, a, b, groups_a=groups_a, groups_b=groups_b)  # other recordings: 0.5 ± 0.15
    assert 0.2 <= other["accuracy"] <= 0.8
    shuffled = compare(space, a, shuffle_frames(a), **same)
    assert shuffled["accuracy"] >= 0.95 and shuffled["frechet"] > 10 * other["frechet"]
    blurred = compare(space, a, smooth(a, 5), **same)
    assert blurred["accuracy"] >= 0.8 and blurred["frechet"] > other["frechet"]


def test_more_blur_reads_as_less_real(space, halves):
    (a, groups), _ = halves
    rows = [compare(space, a, smooth(a, w), groups_a=groups, groups_b=groups) for w in (1, 2, 3, 5, 9)]
    frechet = [r["frechet"] for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    assert all(later > earlier for earlier, later in zip(frechet, frechet[1:]))
    assert all(later >= earlier - 0.03 for earlier, later in zip(accuracy, accuracy[1:]))
    assert accuracy[0] == 0.5 and accuracy[-1] > 0.95


# --- the report, through generation_report ---------------------------------------------------

class PCAModel:
    """A real linear autoencoder standing in for a trained run: `encode`, `decode` and `stats` as a Run has them.
    `blur` > 1 averages its decoder's output over that many frames."""

    def __init__(self, train_db: np.ndarray, k: int, stats: dict, blur: int = 1):
        self.pca, self.shape, self.stats, self.blur = PCA.fit(train_db, k), train_db.shape[1:], stats, blur

    def encode(self, x) -> torch.Tensor:
        return torch.as_tensor(self.pca.encode(np.asarray(x, dtype=np.float64)))

    def decode(self, z) -> torch.Tensor:
        y = smooth(self.pca.decode(np.asarray(z, dtype=np.float64), self.shape), self.blur)
        return torch.as_tensor(y.clip(-40, 60))


@pytest.fixture(scope="module")
def recorded_sets(mid_cache):
    """The mid set's 10 recordings as 6 to train on and 4 held out (2 a side in the real rows): (dB, recordings).
    The demo's recordings play 6 pieces in turn; these 4 play 4 of them, as the demo profile's held-out ones do."""
    heldout = np.isin(mid_cache.recordings, np.unique(mid_cache.recordings)[:4])  # 4 pieces, as the demo holds out
    x = mid_cache.mels.astype(np.float32)
    return (x[~heldout], mid_cache.recordings[~heldout]), (x[heldout], mid_cache.recordings[heldout])


@pytest.fixture(scope="module")
def reports(mid_cache, recorded_sets):
    """generation_report of a PCA-16 model, of the same with a blurring decoder, and at temperature 0, 5 seeds each."""
    train, heldout = recorded_sets
    stats = {"mean": mid_cache.mean, "std": mid_cache.std}
    sharp, blurred = PCAModel(train[0], 16, stats), PCAModel(train[0], 16, stats, blur=5)
    variants = {"sharp": (sharp, 1.0), "blurred": (blurred, 1.0), "cold": (sharp, 0.0)}
    return {name: [generation_report(model, *train, *heldout, temperature=t, seed=s) for s in range(5)]
            for name, (model, t) in variants.items()}


def mean_of(reports: list[dict], row: str, key: str = "accuracy") -> float:
    return float(np.mean([r["rows"][row][key] for r in reports]))


def test_no_recording_is_on_both_sides_of_any_row(reports, recorded_sets):
    (train_db, train_recs), (_, heldout_recs) = recorded_sets
    for report in [r for variant in reports.values() for r in variant]:
        rows = report["rows"]
        assert list(rows) == ["real halves", "decoder", "floor", "prior gaussian", "prior mixture", "prior kde",
                              "midpoint"]
        for name, row in rows.items():
            a, b = row["recordings"]
            assert b and not set(a or ()) & set(b), name
            assert set(a or ()) | set(b) <= set(heldout_recs if name in ("real halves", "decoder") else train_recs)
            assert len(b) == 2 and (a is None if name.startswith("prior") else len(a) == 2), name  # None: samples
        unseen = set(rows["floor"]["recordings"][0]) | set(rows["floor"]["recordings"][1])
        assert report["recordings"] == {"fit": 2, "unseen": 4, "held-out": 4}
        assert report["clips"]["unseen"] == np.isin(train_recs, list(unseen)).sum()  # whole recordings kept back
        assert report["clips"]["fit"] + report["clips"]["unseen"] == len(train_db)
        assert rows["midpoint"]["recordings"] == rows["floor"]["recordings"]  # made from the floor's other half
        assert all(row["accuracy"] is not None for row in rows.values())
    assert len({tuple(r["rows"]["real halves"]["recordings"][0]) for r in reports["sharp"]}) > 1  # seeds regroup


def test_real_halves_read_within_noise_of_chance(reports):
    # 2 recordings a side of about 20 clips: one reading is 0.5 ± 0.17 (18 seeds), so 5 seeds 0.5 ± 0.08;
    # a classifier that scored clips of the recordings it was fitted on would read about 1
    assert abs(mean_of(reports["sharp"], "real halves") - 0.5) < 0.2


def test_a_blurring_decoder_raises_the_decoder_row_and_not_the_priors(reports):
    sharp, blurred = reports["sharp"], reports["blurred"]
    assert mean_of(blurred, "decoder") > mean_of(sharp, "decoder") + 0.1
    assert mean_of(blurred, "decoder", "frechet") > 1.5 * mean_of(sharp, "decoder", "frechet")
    for row in ("prior gaussian", "prior mixture", "prior kde"):  # the same decoder on both sides of a prior row
        assert abs(mean_of(blurred, row) - mean_of(sharp, row)) < 0.05, row
    assert [r["rows"]["real halves"] for r in blurred] == [r["rows"]["real halves"] for r in sharp]


def test_a_prior_whose_samples_are_all_the_mean_reads_above_the_floor(reports):
    sharp, cold = reports["sharp"], reports["cold"]  # at temperature 0 every Gaussian sample is the mean
    assert mean_of(cold, "prior gaussian") > max(0.9, mean_of(cold, "floor") + 0.2)
    assert mean_of(cold, "prior gaussian") > mean_of(sharp, "prior gaussian") + 0.15
    assert mean_of(cold, "prior gaussian", "frechet") > 5 * mean_of(sharp, "prior gaussian", "frechet")
    assert [r["rows"]["decoder"] for r in cold] == [r["rows"]["decoder"] for r in sharp]  # nor any other row
    assert [r["rows"]["floor"] for r in cold] == [r["rows"]["floor"] for r in sharp]


def test_too_few_recordings_leave_the_rows_unmeasured_not_split_by_row(mid_cache, recorded_sets, reports):
    (train_db, train_recs), (heldout_db, heldout_recs) = recorded_sets
    stats = {"mean": mid_cache.mean, "std": mid_cache.std}
    one, two = heldout_recs == heldout_recs[0], np.isin(heldout_recs, np.unique(heldout_recs)[:2])
    report = generation_report(PCAModel(train_db, 16, stats), train_db, train_recs, heldout_db[two], heldout_recs[two])
    assert sorted(report["rows"]["real halves"]["recordings"]) == [[r] for r in np.unique(heldout_recs[two])]
    assert report["rows"]["real halves"]["accuracy"] is None and report["rows"]["real halves"]["frechet"] > 0
    assert report["rows"]["floor"] == reports["sharp"][0]["rows"]["floor"]  # the held-out set moves no train row
    alone = generation_report(PCAModel(train_db, 16, stats), train_db, train_recs, heldout_db[one], heldout_recs[one])
    assert alone["rows"]["real halves"] == {"accuracy": None, "frechet": None, "clips": 0,
                                            "recordings": [[], [str(heldout_recs[0])]]}
    table = realism_table({"r": report})
    assert "| real halves | 1 v 1 | n/m |" in table and "| prior gaussian | samples v 2 |" in table
