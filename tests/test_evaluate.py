"""Metrics by hand, exact PCA, a report that recomputes, audible inversion, generation (the views: test_widgets)."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from beetnet_utils import mel_db
from beetnet_utils.audio import mel_to_audio, save_wav, wav_bytes
from beetnet_utils.evaluate import PCA, Baselines, evaluate, markdown_table, metrics, refined_pca, save_report, score
from beetnet_utils.generate import LatentGaussian, interpolate, slerp

ROOT = Path(__file__).parents[1]


def test_metrics_by_hand():
    target = np.array([[[0.0, 10.0], [20.0, -10.0]]])
    pred = np.array([[[2.0, 10.0], [14.0, -10.0]]])
    m = metrics(pred, target, std=4.0)
    assert m["l1_db"] == pytest.approx((2 + 0 + 6 + 0) / 4)
    assert m["l1_std"] == pytest.approx(2.0 / 4.0)
    assert m["rmse_db"] == pytest.approx(np.sqrt((4 + 36) / 4))


def test_scores_per_recording_are_each_recordings_own_clips_by_hand():
    # three recordings of unequal size, each model wrong by its own amount on each: the per-recording L1 (in
    # std units) is that recording's mean error, the overall one the mean over every clip
    x = np.zeros((6, 2, 2))
    recordings = np.array(["b", "a", "b", "c", "a", "b"])
    errors = {"m": np.array([1.0, 2.0, 1.0, 8.0, 4.0, 1.0]), "n": np.array([0.0, 6.0, 3.0, 0.0, 0.0, 3.0])}
    preds = {name: x + e[:, None, None] for name, e in errors.items()}
    out = score(preds, x, recordings, std=2.0)
    assert out["clips"] == 6 and out["recordings"] == 3
    assert out["per_recording"] == {"a": {"clips": 2, "m": 1.5, "n": 1.5}, "b": {"clips": 3, "m": 0.5, "n": 1.0},
                                    "c": {"clips": 1, "m": 4.0, "n": 0.0}}
    assert out["models"]["m"]["l1_std"] == pytest.approx(17 / 6 / 2)


def test_pca_is_exact_at_full_rank_and_lossy_below(mid_cache):
    x = mid_cache.clips("train").db[:40]
    full = PCA.fit(x, k=40)
    np.testing.assert_allclose(full.reconstruct(x), x, atol=1e-6)
    low = PCA.fit(x, k=5)
    assert np.abs(low.reconstruct(x) - x).mean() > 0.5
    # more clips than dimensions takes the covariance route: same subspace as the SVD route
    small = x[:, :4, :5]  # 20 dimensions, 40 clips
    a = PCA.fit(small, k=20)
    np.testing.assert_allclose(a.reconstruct(small), small, atol=1e-6)
    b = PCA.fit(small, k=3)
    flat = small.reshape(40, -1).astype(np.float64)
    reference = np.linalg.svd(flat - flat.mean(0), full_matrices=False)[2][:3]  # numpy's SVD, independently
    np.testing.assert_allclose(np.abs(b.components @ reference.T), np.eye(3), atol=1e-6)


def test_baselines_predict_what_they_say(mid_cache):
    train_db = mid_cache.clips("train").db
    b = Baselines.fit(train_db, k=8, db_range=(-40, 60))
    x = mid_cache.clips("val").db[:3]
    p = b.predict(x)
    np.testing.assert_allclose(p["global_mean"][1], train_db.mean(0), rtol=1e-6)
    np.testing.assert_allclose(p["clip_mean_spectrum"][2, :, 7], x[2].mean(1), rtol=1e-6)
    assert p["pca_8"].min() >= -40 and p["pca_8"].max() <= 60


def test_refined_pca_starts_at_pca_and_only_lowers_each_clips_l1(mid_cache):
    train_db, x = mid_cache.clips("train").db, mid_cache.clips("val").db
    b = Baselines.fit(train_db, k=8, db_range=(-40, 60))
    stats = {"mean": mid_cache.mean, "std": mid_cache.std}
    plain = b.predict(x)["pca_8"]
    np.testing.assert_allclose(refined_pca(b.pca, x, stats, (-40, 60), steps=0, lr=0.1), plain, atol=1e-3)
    fitted = refined_pca(b.pca, x, stats, (-40, 60), steps=30, lr=0.1, batch=7)  # 17 clips: batches of 7, 7 and 3
    per_clip = lambda p: np.abs(p - x).mean(axis=(1, 2))  # noqa: E731
    assert np.all(per_clip(fitted) <= per_clip(plain) + 1e-4)
    assert per_clip(fitted).mean() < 0.995 * per_clip(plain).mean()  # ~1% on these 17 clips
    assert fitted.min() >= -40 and fitted.max() <= 60


def test_report_numbers_match_a_recomputation(tmp_path, run, mid_cache):
    report = evaluate(run, mid_cache)
    assert set(report["splits"]) == {"val", "test"}
    test = report["splits"]["test"]
    x = mid_cache.clips("test").db.astype(np.float64)
    # the model, by hand: standardise, the raw network, back to dB, clamp (no Run, no reconstruct_all)
    mean, std = run.stats["mean"], run.stats["std"]
    with torch.no_grad():
        raw = run.model(torch.as_tensor((x - mean) / std, dtype=torch.float32)).double().numpy()
    recon = np.clip(raw * std + mean, -40, 60)
    assert test["models"]["beetnet"]["l1_db"] == pytest.approx(np.abs(recon - x).mean(), rel=1e-4)
    assert test["models"]["beetnet"]["l1_std"] == pytest.approx(np.abs(recon - x).mean() / std, rel=1e-4)
    assert test["models"]["beetnet"]["rmse_db"] == pytest.approx(np.sqrt(np.square(recon - x).mean()), rel=1e-4)
    # PCA by numpy's SVD of the train split (not the package's PCA class)
    k = run.config.model.latent_dim
    train_flat = mid_cache.clips("train").db.reshape(len(mid_cache.indices("train")), -1).astype(np.float64)
    centre = train_flat.mean(0)
    basis = np.linalg.svd(train_flat - centre, full_matrices=False)[2][:k]
    flat = x.reshape(len(x), -1)
    pca = np.clip((flat - centre) @ basis.T @ basis + centre, -40, 60)
    assert test["models"][f"pca_{k}"]["l1_db"] == pytest.approx(np.abs(pca - flat).mean(), rel=1e-4)
    per = test["per_recording"]
    assert sum(r["clips"] for r in per.values()) == test["clips"] == len(x)
    table = markdown_table(report)
    assert "| beetnet |" in table and "| global_mean |" in table
    assert f"{test['models']['beetnet']['l1_std']:.4f}" in table
    assert report["runs"]["beetnet"]["architecture"] == run.config.model.architecture
    two = evaluate({"sharp": run, "b": run}, mid_cache, splits=("test",))
    assert list(two["splits"]["test"]["models"])[:3] == ["sharp", "b", "global_mean"]
    footnote = markdown_table(two).splitlines()[-1]  # the runs by their names (presets), not their architectures
    assert f"sharp at epoch {run.epoch}, b at epoch {run.epoch}" in footnote and "preset" not in footnote
    assert two["splits"]["test"]["models"]["b"] == test["models"]["beetnet"]
    save_report(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report))


def test_baselines_of_a_train_split_larger_than_the_sample_are_fitted_on_the_sample(run, mid_cache, monkeypatch):
    module = importlib.import_module("beetnet_utils.evaluate")  # the module: the package's `evaluate` is the function

    k = run.config.model.latent_dim
    most = len(mid_cache.indices("train")) - 8  # a split "larger than memory": the baselines see a sample of it
    monkeypatch.setattr(module, "SAMPLE_CLIPS", most)
    test = evaluate(run, mid_cache, splits=("test",))["splits"]["test"]["models"]
    x = mid_cache.clips("test").db
    for fitted_on, expected in ((mid_cache.clips("train", most).db, True), (mid_cache.clips("train").db, False)):
        b = Baselines.fit(fitted_on, k, (-40, 60)).predict(x)
        same = [test[m]["l1_std"] == pytest.approx(metrics(b[m], x, run.stats["std"])["l1_std"], rel=1e-6)
                for m in ("global_mean", f"pca_{k}")]
        assert all(same) if expected else not any(same)


def test_evaluate_cli_on_another_folder_of_clips(tmp_path, run, mid_cache, smoke_clips):
    out = tmp_path / "other.json"
    r = subprocess.run([sys.executable, "-m", "beetnet_utils", "evaluate", "--run", run.path, "--cache", mid_cache.path,
                        "--clips", smoke_clips.path, "--json", out], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["splits"]["other"]["clips"] == smoke_clips.clips
    assert report["stats"] == run.stats  # the run's own statistics, not the other folder's
    assert "| beetnet |" in r.stdout


def test_evaluating_against_the_wrong_cache_is_refused(run, smoke_cache):
    from beetnet_utils import BeetNetError

    with pytest.raises(BeetNetError, match="another cache"):
        evaluate(run, smoke_cache)


def test_griffin_lim_gives_the_clip_length_and_its_own_mel_is_close(tmp_path, mid_cache):
    f = mid_cache.features
    target = mid_cache.clips("test").db[4]
    wav = mel_to_audio(target, f)
    assert wav.shape == (f.clip_samples,) and np.isfinite(wav).all()
    error = lambda w: np.abs(mel_db(torch.from_numpy(w), f).numpy() - target).mean()  # noqa: E731
    # Measured on demo clips: 1.5-2.7 dB of mean error with the default 32 iterations, 3.0-4.8 dB with one.
    # The bound fails a broken inversion, and a single iteration; more iterations must help.
    assert error(wav) < 3.0 and error(wav) < error(mel_to_audio(target, f, n_iter=1)) - 0.7
    noise = mel_db(torch.randn(f.clip_samples) * float(np.abs(wav).max()), f).numpy()
    assert np.abs(noise - target).mean() > 15.0
    assert np.array_equal(mel_to_audio(target, f), wav)  # the same sound every time
    path = save_wav(wav, tmp_path / "clip.wav", f.sample_rate)
    import soundfile as sf

    assert sf.info(path).frames == f.clip_samples and wav_bytes(wav, f.sample_rate)[:4] == b"RIFF"


def test_interpolation_endpoints_are_the_two_reconstructions(run, mid_cache):
    a, b = mid_cache.clips("test").db[0], mid_cache.clips("test").db[-1]
    for mode in ("linear", "spherical"):
        path = interpolate(run, a, b, [0.0, 0.5, 1.0], mode)
        assert path.shape == (3, *a.shape)
        torch.testing.assert_close(path[0], run.reconstruct(a), atol=1e-4, rtol=0)
        torch.testing.assert_close(path[2], run.reconstruct(b), atol=1e-4, rtol=0)
        assert not torch.allclose(path[1], path[0], atol=0.1)


def test_slerp_keeps_length_between_equal_norm_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, 0.5)
    assert mid.norm() == pytest.approx(1.0) and torch.allclose(mid, torch.tensor([0.5 ** 0.5, 0.5 ** 0.5]))


def test_sampling_from_the_latent_gaussian(run, mid_cache):
    g = LatentGaussian(run, mid_cache.clips("train").db)
    z = torch.cat([run.encode(mid_cache.clips("train").db)]).double()
    torch.testing.assert_close(g.mean, z.mean(0))
    s = g.sample(4, seed=1)
    assert s.shape == (4, 96, 63) and s.min() >= -40 and s.max() <= 60
    assert torch.equal(s, g.sample(4, seed=1)) and not torch.equal(s, g.sample(4, seed=2))


@pytest.mark.parametrize("name", ["gaussian", "mixture", "kde"])
def test_priors_sample_deterministically_and_temperature_scales_the_spread(run, mid_cache, name):
    from beetnet_utils.generate import encode_all, fit_prior

    z = encode_all(run, mid_cache.clips("train").db)
    prior = fit_prior(name, z)
    a, b = prior.sample(64, seed=3), prior.sample(64, seed=3)
    assert a.shape == (64, z.shape[1]) and np.array_equal(a, b) and not np.array_equal(a, prior.sample(64, seed=4))
    cold, warm = prior.sample(64, seed=3, temperature=0.0), prior.sample(64, seed=3, temperature=2.0)
    centre = {"gaussian": lambda: z.mean(0), "mixture": lambda: None, "kde": lambda: None}[name]()
    if centre is not None:
        np.testing.assert_allclose(cold, np.broadcast_to(centre, cold.shape), atol=1e-9)
    if name == "kde":  # at temperature 0 a kernel density returns train codes themselves: copies
        assert all(np.abs(z - row).sum(1).min() < 1e-9 for row in cold)
    assert np.abs(warm - cold).mean() == pytest.approx(2 * np.abs(a - cold).mean(), rel=1e-6)


def test_unknown_prior_is_a_clear_error(run, mid_cache):
    from beetnet_utils.generate import samples

    with pytest.raises(ValueError, match="unknown prior 'flow'.*gaussian, mixture, kde"):
        samples({"r": run}, mid_cache.clips("train").db, prior="flow")


def test_generation_report_rows_and_the_copying_it_reveals(run, mid_cache):
    from beetnet_utils.evaluate import realism_table
    from beetnet_utils.generate import generation_report, nearest_distance

    train, heldout = mid_cache.clips(("train",)), mid_cache.clips(("val", "test"))
    np.testing.assert_array_equal(train[0], mid_cache.clips("train").db)
    report = generation_report(run, *train, *heldout)
    rows = report["rows"]
    assert list(rows) == ["real halves", "decoder", "floor", "prior gaussian", "prior mixture", "prior kde", "midpoint"]
    # val and test hold 1 recording each: one a side, so a Fréchet distance and no accuracy, not a split by clip
    assert sorted(rows["real halves"]["recordings"]) == [["9005"], ["9007"]]
    assert rows["real halves"]["accuracy"] is None is rows["decoder"]["accuracy"] and rows["decoder"]["frechet"] > 0
    measured = [r for name, r in rows.items() if name not in ("real halves", "decoder")]
    assert all(0 <= r["accuracy"] <= 1 and r["frechet"] >= 0 for r in measured)
    assert report["recordings"] == {"fit": 4, "unseen": 4, "held-out": 2}
    cold = generation_report(run, *train, *heldout, priors=("kde",), temperature=0.0)
    assert cold["nearest_train_db"]["prior kde"] < 1e-3 < report["nearest_train_db"]["prior kde"]  # exact copies
    x = mid_cache.clips("test").db[:5]
    np.testing.assert_allclose(nearest_distance(x, mid_cache.clips("test").db), 0.0, atol=1e-6)  # itself is nearest
    table = realism_table({"r": report})
    assert "| prior mixture | samples v 2 |" in table and "| decoder | 1 v 1 | n/m |" in table


# --- priors: what makes each one that prior, on synthetic codes whose truth is known ------------------

def within_sampling_error(estimate, truth, sigma, n: int, k: float = 4.0) -> bool:
    """`estimate` of `truth` from n draws of spread `sigma`: within k standard errors, every element."""
    return bool(np.all(np.abs(np.asarray(estimate) - truth) <= k * np.asarray(sigma) / np.sqrt(n)))


def test_priors_gaussian_samples_have_the_codes_mean_and_covariance():
    from beetnet_utils.generate import GaussianPrior, fit_prior

    rng = np.random.default_rng(0)
    mix = np.array([[3.0, 0.0, 0.0], [1.5, 1.0, 0.0], [0.0, -0.4, 0.5]])  # correlated, spreads 3, 1.8 and 0.6
    z = rng.normal(size=(3000, 3)) @ mix.T + [5.0, -2.0, 1.0]
    prior = fit_prior("gaussian", z)
    assert isinstance(prior, GaussianPrior)
    n, mean, cov = 40_000, z.mean(0), np.cov(z.T)
    for t in (1.0, 0.5):
        s = prior.sample(n, seed=1, temperature=t)
        assert within_sampling_error(s.mean(0), mean, t * np.sqrt(np.diag(cov)), n)
        spread = t ** 2 * np.sqrt(np.outer(np.diag(cov), np.diag(cov)) + cov ** 2)  # each covariance's own spread
        assert within_sampling_error(np.cov(s.T), t ** 2 * cov, spread, n), (np.cov(s.T), t ** 2 * cov)
    assert np.allclose(prior.sample(5, temperature=0.0), mean)


def test_priors_mixture_draws_from_every_component_in_proportion_to_its_weight():
    from beetnet_utils.generate import MixturePrior, fit_prior

    rng = np.random.default_rng(0)
    centres, sizes, spread = np.array([[0.0, 0, 0], [30, 0, -10], [-20, 25, 10]]), (100, 50, 25), [1.0, 2.0, 0.5]
    clusters = [c + rng.normal(size=(m, 3)) * spread for c, m in zip(centres, sizes)]
    z = np.concatenate(clusters)  # 175 codes: 3 components
    prior = fit_prior("mixture", z)
    assert isinstance(prior, MixturePrior) and len(prior.weights) == 3
    order = [int(np.argmin(np.linalg.norm(prior.means - c, axis=1))) for c in centres]  # component of each cluster
    np.testing.assert_allclose(prior.means[order], [c.mean(0) for c in clusters], atol=1e-3)
    np.testing.assert_allclose(prior.weights[order], np.array(sizes) / 175, atol=1e-3)
    n = 20_000
    for t in (1.0, 0.5):
        s = prior.sample(n, seed=1, temperature=t)
        nearest = np.argmin(np.linalg.norm(s[:, None] - prior.means[None], axis=2), axis=1)
        share = np.bincount(nearest, minlength=3) / n
        assert within_sampling_error(share, prior.weights, np.sqrt(prior.weights * (1 - prior.weights)), n), share
        for j, cluster in zip(order, clusters):  # each component keeps its cluster's spread, scaled by the temperature
            np.testing.assert_allclose((s[nearest == j] - prior.means[j]).std(0), t * cluster.std(0), rtol=0.05)


def test_priors_kde_samples_are_train_codes_plus_noise_of_its_bandwidth_in_each_dimension():
    from beetnet_utils.generate import KernelPrior, fit_prior

    points, copies = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 2.0], [20.0, 2.0]]), np.array([400, 300, 200, 100])
    z = np.repeat(points, copies, axis=0)  # 1000 codes at 4 places
    prior = fit_prior("kde", z)
    assert isinstance(prior, KernelPrior)
    silverman = (4 / (2 + 2)) ** (1 / 6) * 1000 ** (-1 / 6)  # Silverman's rule for 1000 codes in 2 dimensions
    np.testing.assert_allclose(prior.bandwidth, silverman * z.std(0))  # 3.1 and 0.31: 3 of them between places
    n = 20_000
    for t in (1.0, 0.5):
        s = prior.sample(n, seed=1, temperature=t)
        nearest = np.argmin(np.abs((s[:, None] - points[None]) / prior.bandwidth).sum(2), axis=1)
        share = np.bincount(nearest, minlength=4) / n
        p = copies / copies.sum()  # a train code picked at random: a place as often as it holds codes
        assert within_sampling_error(share, p, np.sqrt(p * (1 - p)), n), share
        noise = s - points[nearest]
        np.testing.assert_allclose(noise.std(0), t * prior.bandwidth, rtol=0.05)
        assert within_sampling_error(noise.mean(0), 0.0, t * prior.bandwidth, n)
    cold = prior.sample(50, seed=2, temperature=0.0)
    assert all((np.abs(points - row).sum(1) == 0).any() for row in cold)  # exactly train codes


# --- what notebook 04 shows: the prior it picks, and one word, one meaning ------------------------

def test_the_real_clip_is_labelled_real_clip_beside_the_original_preset(drawing, smoke_cache):
    """Issue 24.5: a figure that holds the `original` preset never calls the clip itself "original"."""
    import matplotlib.pyplot as plt

    from beetnet_utils import plots

    run, _ = drawing
    index = int(smoke_cache.indices("test")[0])
    real = smoke_cache.mels[index].astype(np.float32)
    side = plots.presets_side_by_side({"original": run}, smoke_cache, index)
    titles = [ax.get_title() for ax in side.axes]
    l1 = np.abs(run.reconstruct(real).numpy() - real).mean() / run.stats["std"]
    assert titles == [f"real clip {smoke_cache.names[index]}", f"original: L1 {l1:.3f}"]
    trip = plots.triptych(real, run.reconstruct(real).numpy(), "original preset")
    assert [ax.get_title() for ax in trip.axes[:3]] == ["real clip", "reconstruction", "|error|"]
    plt.close("all")


def test_best_prior_is_the_prior_row_of_lowest_accuracy_then_of_lowest_frechet():
    from beetnet_utils.evaluate import best_prior

    def report(**rows):
        cells = {name.replace("_", " "): {"accuracy": a, "frechet": f} for name, (a, f) in rows.items()}
        return {"realism": {"best": {"rows": cells}}}

    rows = dict(real_halves=(0.1, 0.5), decoder=(0.2, 0.1), floor=(0.3, 0.1), midpoint=(0.4, 0.1))  # not priors
    assert best_prior(report(**rows, prior_gaussian=(0.8, 5.0), prior_mixture=(0.6, 9.0), prior_kde=(0.7, 1.0)),
                      "best") == "mixture"
    assert best_prior(report(prior_gaussian=(None, 5.0), prior_mixture=(None, 9.0), prior_kde=(None, 1.0)),
                      "best") == "kde"  # no accuracy measurable: the Fréchet distance decides
    assert best_prior(report(prior_gaussian=(0.9, 5.0), prior_mixture=(None, 0.1)), "best") == "gaussian"
    assert best_prior(report(prior_kde=(0.5, 1.0)), "original") == "gaussian"  # no rows for this run: the default
    assert best_prior({}, "best", default="mixture") == "mixture"  # a report without realism (too few clips)
