"""The model presets: `original` (the specification), `best`, `sharp` and `local` (ours)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from beetnet_utils.config import PRESETS, with_preset
from beetnet_utils.config import get_config
from beetnet_utils.model import LocalGRUAutoencoder, PCAGRUAutoencoder, build_model
from beetnet_utils.pca import PCA, spectral_envelopes
from beetnet_utils.run import load_run
from beetnet_utils.train import train
from helpers import smoke_preset

quiet = dict(progress=False, log=lambda m: None)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_builds_trains_and_round_trips(tmp_path, smoke, smoke_cache, preset):
    quick = {"refine_steps": 5} if preset != "original" else {}
    cfg = smoke_preset(smoke, preset).replace(train={"epochs": 2}, model=quick)
    history = train(smoke_cache, tmp_path / preset, cfg, **quiet)
    assert len(history) == 2 and all(np.isfinite(h["val_l1"]) for h in history)
    run = load_run(tmp_path / preset)
    assert run.config == cfg and type(run.model) is type(build_model(cfg))  # sharp is best's architecture
    # the loaded weights are the ones that scored best on validation during training
    x = smoke_cache.standardised("val")
    with torch.no_grad():
        pred = run.model(x)
    if cfg.train.clamp_loss:
        pred = pred.clamp(*[(v - smoke_cache.mean) / smoke_cache.std for v in cfg.features.db_range])
    assert float((pred - x).abs().mean()) == pytest.approx(min(h["val_l1"] for h in history), rel=1e-5)
    mel = smoke_cache.db("test")[:2]
    z = run.encode(mel)
    assert z.shape == (2, cfg.model.latent_dim)
    torch.testing.assert_close(run.reconstruct(mel), run.decode(z))


def test_unknown_preset_is_a_clear_error(smoke):
    with pytest.raises(ValueError, match="unknown preset 'fancy'.*original, best"):
        with_preset(smoke, "fancy")


def test_best_starts_exactly_at_pca(smoke_cache, smoke):
    cfg = with_preset(smoke, "best")
    model = build_model(cfg).eval()
    x = smoke_cache.standardised("train")
    model.init_from_data(x)
    assert cfg.model.pca_shifts and cfg.model.envelope_dims  # time-shifted copies too, after the envelopes
    envelopes = spectral_envelopes(cfg.model.envelope_dims, *cfg.features.shape)
    pca = PCA.fit(x.numpy(), cfg.model.latent_dim, shifts=cfg.model.pca_shifts, fixed=envelopes)
    val = smoke_cache.standardised("val")
    with torch.no_grad():
        out = model(val).numpy()
    np.testing.assert_allclose(out, pca.reconstruct(val.numpy()), atol=2e-4)  # the correction starts at zero


def encoder_matrix(model, shape) -> torch.Tensor:
    """(inputs, latent): the encoder of `best` and `local` is affine, so its matrix is encode(e_i) - encode(0)."""
    d = int(np.prod(shape))
    with torch.no_grad():
        zero = model.encode(torch.zeros(1, *shape))
        rows = [model.encode(torch.eye(d)[i:i + 512].view(-1, *shape)) - zero for i in range(0, d, 512)]
    return torch.cat(rows).double()


@pytest.mark.parametrize("preset", ["best", "local"])
def test_decoder_output_depends_only_on_z(smoke_cache, smoke, preset):
    """Move the input along a direction the encoder cannot see: z, and so the output, must not move."""
    model = build_model(smoke_preset(smoke, preset)).eval()
    model.init_from_data(smoke_cache.standardised("train"))
    torch.nn.init.normal_(model.out.weight, std=0.1)  # a trained-looking, non-zero correction
    x = smoke_cache.standardised("test")[:3]
    w = encoder_matrix(model, x.shape[1:])
    v = torch.randn(x[0].numel(), dtype=torch.float64)
    v -= w @ torch.linalg.lstsq(w, v.unsqueeze(1)).solution.squeeze(1)  # into the encoder's null space
    moved = x + (3.0 * v / v.norm()).float().view_as(x[0])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(moved), model.encode(x), atol=1e-4, rtol=0)
        torch.testing.assert_close(model(moved), model(x), atol=1e-4, rtol=0)
        assert not torch.allclose(moved, x, atol=0.1)
        z = model.encode(x)
        torch.testing.assert_close(model(x), model.decode(z))  # forward is decode(encode(x)), nothing else


@pytest.mark.parametrize("preset", ["best", "local"])
def test_refinement_never_increases_a_clips_l1(tmp_path, smoke, smoke_cache, preset):
    cfg = smoke_preset(smoke, preset).replace(train={"epochs": 2}, model={"refine_steps": 30})
    train(smoke_cache, tmp_path / "run", cfg, **quiet)
    run = load_run(tmp_path / "run")
    mel = smoke_cache.db("test")
    plain = (run.reconstruct(mel, refine=False).numpy() - mel).__abs__().mean(axis=(1, 2))
    refined = (run.reconstruct(mel).numpy() - mel).__abs__().mean(axis=(1, 2))
    assert (refined <= plain + 1e-4).all(), (refined - plain).max()
    assert refined.mean() < plain.mean()  # and it does help on average
    params = list(run.model.parameters())
    assert all(p.grad is None for p in params)  # the weights are only read: a widget refines in a thread
    with ThreadPoolExecutor(2) as pool:  # while the same model decodes or refines in another
        both = list(pool.map(lambda _: run.reconstruct(mel).numpy(), range(2)))
    np.testing.assert_allclose(both[0], both[1], atol=1e-5)
    np.testing.assert_allclose(both[0], run.reconstruct(mel).numpy(), atol=1e-5)


@pytest.mark.parametrize("preset,kind", [("best", PCAGRUAutoencoder), ("local", LocalGRUAutoencoder)])
def test_our_architectures_have_a_gru_at_their_heart_and_one_256_number_code(preset, kind):
    model = build_model(with_preset(get_config("full"), preset))
    assert isinstance(model, kind) and isinstance(model.gru, torch.nn.GRU)
    assert model.encode(torch.zeros(2, 96, 63)).shape == (2, 256)


def test_local_puts_the_same_pattern_wherever_its_step_falls():
    """The linear part of `local` is shared along the code's steps: one step later, the same pattern 8 frames later."""
    cfg = with_preset(get_config("full"), "local")
    model = build_model(cfg).eval()
    assert model.steps == 8 and not model.out.weight.any()  # a new model: the GRU's correction starts at zero
    start = cfg.model.envelope_dims + 5 * model.steps  # channel 5 of the local code

    def pattern(step: int) -> torch.Tensor:
        z = torch.zeros(1, 256)
        z[0, start + step] = 1.0
        with torch.no_grad():
            return (model.decode(z) - model.decode(torch.zeros(1, 256)))[0]

    third, fourth = pattern(3), pattern(4)
    assert third.abs().max() > 0.01
    torch.testing.assert_close(fourth[:, 8:], third[:, :-8], atol=1e-6, rtol=0)
    assert not third[:, 45:].any() and not fourth[:, :16].any()  # each reaches 24 frames around its step


def test_local_refuses_a_latent_its_steps_cannot_share():
    with pytest.raises(ValueError, match=r"envelope_dims \(224\) must be a positive multiple of local_channels \(30\)"):
        build_model(with_preset(get_config("full"), "local").replace(model={"local_channels": 30}))
    with pytest.raises(ValueError, match=r"\(0\) must be a positive multiple"):  # smoke's 32 numbers: all envelope
        build_model(with_preset(get_config("smoke"), "local"))


def test_time_shifted_pca_routes_agree_and_shift_time_moves_frames():
    from beetnet_utils.augment import shift_time

    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)
    assert torch.equal(shift_time(x, 2)[0, 0], torch.tensor([0.0, 0, 0, 1, 2]))
    assert torch.equal(shift_time(x, -1)[0, 0], torch.tensor([1.0, 2, 3, 4, 4]))
    rng = np.random.default_rng(0)
    data = rng.normal(size=(30, 2, 6)).astype(np.float32)  # 12 dimensions, 90 rows with shifts: covariance route
    copies = np.concatenate([data] + [shift_time(torch.from_numpy(data), m).numpy() for m in (1, -1)])
    a = PCA.fit(data, k=4, shifts=(1,), chunk=7)
    flat = copies.reshape(len(copies), -1).astype(np.float64)
    reference = np.linalg.svd(flat - flat.mean(0), full_matrices=False)[2][:4]
    np.testing.assert_allclose(np.abs(a.components @ reference.T), np.eye(4), atol=1e-6)
    np.testing.assert_allclose(a.mean, flat.mean(0), atol=1e-6)


@pytest.mark.parametrize("rows", [8, 90], ids=["svd-route", "covariance-route"])
def test_fixed_components_come_first_and_pca_fills_the_rest_with_what_they_leave(rows):
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(rows, 4, 5)) * np.linspace(3, 0.5, 20).reshape(4, 5)).astype(np.float32)
    env = spectral_envelopes(2, 4, 5)
    np.testing.assert_allclose(env @ env.T, np.eye(2), atol=1e-12)  # orthonormal
    assert np.allclose(env.reshape(2, 4, 5), env.reshape(2, 4, 5)[:, :, :1])  # constant in time
    pca = PCA.fit(data, k=6, fixed=env)
    np.testing.assert_allclose(pca.components[:2], env, atol=1e-6)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(6), atol=1e-6)
    flat = data.reshape(rows, -1).astype(np.float64)
    centred = flat - flat.mean(0)
    left = centred - centred @ env.T @ env
    reference = np.linalg.svd(left, full_matrices=False)[2][:4]
    np.testing.assert_allclose(np.abs(pca.components[2:] @ reference.T), np.eye(4), atol=1e-5)
    np.testing.assert_allclose(pca.mean, flat.mean(0), atol=1e-6)


def test_a_clip_whose_envelope_alone_changed_is_followed_exactly_by_the_envelope_directions():
    """Another piano moves the clip's spectral envelope: the envelope directions follow it, PCA alone need not."""
    rng = np.random.default_rng(2)
    train_db = rng.normal(size=(40, 8, 6)).astype(np.float32)
    env = spectral_envelopes(3, 8, 6)
    with_env, without = PCA.fit(train_db, k=5, fixed=env), PCA.fit(train_db, k=5)
    clip = train_db[:1] + (np.array([2.0, -1.0, 0.5]) @ env).reshape(1, 8, 6).astype(np.float32)
    moved = clip - train_db[:1]
    np.testing.assert_allclose(with_env.reconstruct(clip) - with_env.reconstruct(train_db[:1]), moved, atol=1e-5)
    assert np.abs(without.reconstruct(clip) - without.reconstruct(train_db[:1]) - moved).max() > 0.1
