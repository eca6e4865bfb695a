"""The model presets: `original` (the specification), `best`, `sharp` and `local` (ours)."""
from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from beetnet_utils.config import EXPERIMENTS, PRESETS, get_config, with_preset
from beetnet_utils.model import LocalGRUAutoencoder, LocalLayout, build_model, fit_codes
from beetnet_utils.pca import PCA, spectral_envelopes
from beetnet_utils.run import load_run
from beetnet_utils.train import train

quiet = dict(progress=False, log=lambda m: None)


@pytest.mark.parametrize("preset", [*PRESETS, *EXPERIMENTS])
def test_each_preset_builds_trains_and_round_trips(tmp_path, smoke, smoke_cache, preset):
    quick = {"refine_steps": 5} if preset != "original" else {}
    cfg = with_preset(smoke, preset).replace(train={"epochs": 2}, model=quick)
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
    mel = smoke_cache.clips("test").db[:2]
    z = run.encode(mel)
    assert z.shape == (2, cfg.model.latent_dim)
    torch.testing.assert_close(run.reconstruct(mel), run.decode(z))


def test_unknown_preset_is_a_clear_error(smoke):
    with pytest.raises(ValueError, match="unknown preset 'fancy'.*original, best"):
        with_preset(smoke, "fancy")


def encoder_matrix(model, shape) -> torch.Tensor:
    """(inputs, latent): the encoder of `best` and `local` is affine, so its matrix is encode(e_i) - encode(0)."""
    d = int(np.prod(shape))
    with torch.no_grad():
        zero = model.encode(torch.zeros(1, *shape))
        rows = [model.encode(torch.eye(d)[i:i + 512].view(-1, *shape)) - zero for i in range(0, d, 512)]
    return torch.cat(rows).double()


def test_decoder_output_depends_only_on_z(smoke_cache, smoke):
    """Move the input along a direction the encoder cannot see: z, and so the output, must not move."""
    model = build_model(with_preset(smoke, "best")).eval()
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


def test_refinement_never_increases_a_clips_l1(tmp_path, smoke, smoke_cache):
    cfg = with_preset(smoke, "best").replace(train={"epochs": 2}, model={"refine_steps": 30})
    train(smoke_cache, tmp_path / "run", cfg, **quiet)
    run = load_run(tmp_path / "run")
    mel = smoke_cache.clips("test").db
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


def test_our_architecture_has_a_gru_at_its_heart_and_one_256_number_code():
    model = build_model(with_preset(get_config("full"), "best"))
    assert isinstance(model, LocalGRUAutoencoder) and isinstance(model.gru, torch.nn.GRU)
    assert model.encode(torch.zeros(2, 96, 63)).shape == (2, 256)


def test_local_puts_the_same_pattern_wherever_its_step_falls():
    """The linear part of `local` is shared along the code's steps: one step later, the same pattern 8 frames later."""
    cfg = with_preset(get_config("full"), "local")
    model = build_model(cfg).eval()
    assert model.steps == 8 and not model.out.weight.any()  # a new model: the GRU's correction starts at zero
    start = cfg.model.local.envelope_dims + 5 * model.steps  # channel 5 of the local code

    def pattern(step: int) -> torch.Tensor:
        z = torch.zeros(1, 256)
        z[0, start + step] = 1.0
        with torch.no_grad():
            return (model.decode(z) - model.decode(torch.zeros(1, 256)))[0]

    third, fourth = pattern(3), pattern(4)
    assert third.abs().max() > 0.01
    torch.testing.assert_close(fourth[:, 8:], third[:, :-8], atol=1e-6, rtol=0)
    assert not third[:, 45:].any() and not fourth[:, :16].any()  # each reaches 24 frames around its step


FULL_LOCAL_SHAPES = {  # the weights of every `local` checkpoint saved so far (latent 256): they must still load
    "envelope_in.weight": (32, 96), "envelope_out.weight": (96, 32), "encoder.weight": (28, 96, 24),
    "encoder.bias": (28,), "linear_decoder.weight": (28, 96, 24), "linear_decoder.bias": (96,),
    "spread.weight": (28, 128, 24), "spread.bias": (128,), "envelope_hidden.weight": (128, 32),
    "envelope_hidden.bias": (128,), "gru.weight_ih_l0": (384, 128), "gru.weight_hh_l0": (384, 128),
    "gru.bias_ih_l0": (384,), "gru.bias_hh_l0": (384,), "out.weight": (96, 128), "out.bias": (96,),
}


def local_layout(latent: int) -> LocalLayout:
    return LocalLayout.of(with_preset(get_config("full"), "local").replace(model={"latent_dim": latent}).model)


def test_local_keeps_the_full_layout_and_scales_it_to_a_smaller_latent(smoke, mid):
    full = build_model(with_preset(get_config("full"), "local"))
    assert (full.envelope_dims, full.channels, full.steps) == (32, 28, 8)
    assert {k: tuple(v.shape) for k, v in full.state_dict().items()} == FULL_LOCAL_SHAPES
    assert LocalLayout.of(with_preset(smoke, "local").model) == LocalLayout(envelope=8, channels=3, steps=8)
    assert LocalLayout.of(with_preset(mid, "local").model) == LocalLayout(envelope=8, channels=7, steps=8)
    for latent in (10, 33, 100, 128, 255, 512):
        layout = local_layout(latent)
        assert layout.steps == 8 and layout.channels == 28 * latent // 256  # channels in proportion, rounded down
        assert layout.envelope + layout.steps * layout.channels == latent and layout.envelope >= 0
    model = build_model(with_preset(smoke, "local"))
    z = model.encode(torch.zeros(2, 96, 63))
    assert z.shape == (2, 32) and model.decode(z).shape == (2, 96, 63)


def test_local_refuses_a_layout_its_steps_cannot_share_and_a_latent_too_small_for_them():
    full = with_preset(get_config("full"), "local")
    with pytest.raises(ValueError, match=r"full latent of 256, latent_dim - envelope_dims \(224\) must be a "
                                         r"positive multiple of local.channels \(30\)"):
        build_model(full.replace(model={"local": {"channels": 30}}))
    with pytest.raises(ValueError, match=r"multiple of local.channels \(3\)"):  # what the smoke profile was forced to
        build_model(with_preset(get_config("smoke"), "local").replace(model={"local": {"envelope_dims": 8,
                                                                                        "channels": 3}}))
    with pytest.raises(ValueError, match=r"a latent of 9 numbers cannot give each of its 8 steps a number "
                                         r"\(at least 10 are needed\)"):
        build_model(full.replace(model={"latent_dim": 9}))
    assert local_layout(10) == LocalLayout(envelope=2, channels=1, steps=8)  # the smallest it takes


def test_shift_time_moves_frames_and_repeats_the_edge():
    from beetnet_utils.augment import shift_time

    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(2, 3, 5)
    assert torch.equal(shift_time(x, 2)[0, 0], torch.tensor([0.0, 0, 0, 1, 2]))
    assert torch.equal(shift_time(x, -1)[0, 0], torch.tensor([1.0, 2, 3, 4, 4]))


@pytest.mark.parametrize("rows", [8, 90], ids=["svd-route", "covariance-route"])
def test_pca_routes_are_numpys_svd(rows):
    data = np.random.default_rng(0).normal(size=(rows, 2, 6)).astype(np.float32)  # 12 dimensions
    a = PCA.fit(data, k=4, chunk=7)
    flat = data.reshape(rows, -1).astype(np.float64)
    reference = np.linalg.svd(flat - flat.mean(0), full_matrices=False)[2][:4]
    np.testing.assert_allclose(np.abs(a.components @ reference.T), np.eye(4), atol=1e-6)
    np.testing.assert_allclose(a.mean, flat.mean(0), atol=1e-6)


# --- what makes each preset that preset: take one part away and the results change -----------------

MOVES = ("shift_frames", "shift_mels", "gain_db", "tilt_db", "eq_db", "flux_weight")  # TrainConfig's training moves
TRAINED = PRESETS | EXPERIMENTS
ROUTES = [(preset, {"train": {move: 0}}) for preset in TRAINED if preset != "original" for move in MOVES
          if TRAINED[preset]["train"].get(move)]  # each move a preset trains with, switched off
ROUTES += [("best", {"train": {"shift_mels": 2}})]  # the one move no preset uses, switched on


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_cache):
    """trained(preset, changes): the Run of one epoch of the preset on the smoke profile, trained once per module."""
    runs = {}

    def get(preset: str, changes: dict | None = None):
        key = (preset, json.dumps(changes, sort_keys=True))
        if key not in runs:
            cfg = with_preset(get_config("smoke"), preset).replace(train={"epochs": 1}, model={"refine_steps": 0})
            path = tmp_path_factory.mktemp(preset) / "run"
            train(smoke_cache, path, cfg.replace(**(changes or {})), **quiet)
            runs[key] = load_run(path)
        return runs[key]

    return get


def route_id(route) -> str:
    preset, changes = route
    (section, values), = changes.items()
    (name, value), = values.items()
    return f"{preset}-{name}-{'off' if not value else 'on'}"


@pytest.mark.parametrize("preset,changes", ROUTES, ids=map(route_id, ROUTES))
def test_each_part_a_preset_trains_with_changes_what_it_learns(trained, preset, changes):
    """Training is deterministic: with the part switched off (a one-line slip in train or augment could do
    it), the weights would come out bit for bit the same."""
    (section, values), = changes.items()
    (name, value), = values.items()
    assert getattr(getattr(with_preset(get_config("smoke"), preset), section), name) != value  # a real change
    with_part, without = trained(preset).model.state_dict(), trained(preset, changes).model.state_dict()
    same = [k for k in with_part if with_part[k].shape == without[k].shape and torch.equal(with_part[k], without[k])]
    assert not same, f"{name}: these weights came out the same: {same}"
    assert trained(preset).history[0]["train_l1"] != trained(preset, changes).history[0]["train_l1"]


@pytest.mark.parametrize("preset", ["best"])
def test_the_gru_correction_trains_and_reaches_the_output(trained, smoke, smoke_cache, preset):
    """The correction starts at zero; after an epoch its output layer is not, its part of decode is not, it
    runs through the GRU, and it lowers the train split's L1 below the linear part alone."""
    assert not build_model(with_preset(smoke, preset)).out.weight.any()
    run = trained(preset)
    model = run.model
    assert model.out.weight.abs().max() > 1e-3
    linear_alone, no_gru = copy.deepcopy(model), copy.deepcopy(model)
    for p in [*linear_alone.out.parameters(), *no_gru.gru.parameters()]:
        torch.nn.init.zeros_(p)
    x = smoke_cache.standardised("train")
    bounds = [(v - smoke_cache.mean) / smoke_cache.std for v in smoke.features.db_range]
    with torch.no_grad():
        z = model.encode(x)
        full, linear, without_gru = model.decode(z), linear_alone.decode(z), no_gru.decode(z)
    assert (full - linear).abs().mean() > 0.01  # the correction reaches decode's output
    assert (full - without_gru).abs().mean() > 0.01  # through the GRU
    l1 = lambda y: float((y.clamp(*bounds) - x).abs().mean())  # noqa: E731
    assert l1(full) < l1(linear), (l1(full), l1(linear))


def test_locals_envelope_numbers_read_and_write_the_clips_smooth_spectrum(smoke, trained):
    """A new `local`: the envelope numbers are the cosines' weights in the clip's mean spectrum, and moving one
    adds its cosine to every frame of the output (the correction starts at zero). Trained, moving one
    still adds one curve to every frame of the linear part."""
    model = build_model(with_preset(smoke, "local")).eval()
    k = model.envelope_dims
    cosines = torch.as_tensor(spectral_envelopes(k, 96, 1), dtype=torch.float32)  # (k, n_mels)
    x = torch.randn(3, 96, 63, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model.encode(x)
        torch.testing.assert_close(z[:, :k], x.mean(-1) @ cosines.T)
        for i in (0, 3, k - 1):
            moved = z.clone()
            moved[:, i] += 2.0
            torch.testing.assert_close(model.decode(moved) - model.decode(z),
                                       (2.0 * cosines[i]).view(1, 96, 1).expand(3, 96, 63), atol=1e-5, rtol=0)
    linear = copy.deepcopy(trained("local").model)
    torch.nn.init.zeros_(linear.out.weight)
    with torch.no_grad():
        moved = z.clone()
        moved[:, 1] += 2.0
        d = linear.decode(moved) - linear.decode(z)
    assert d.abs().max() > 0.1 and torch.allclose(d, d[..., :1].expand_as(d), atol=1e-5)


def descent(model, x: torch.Tensor, steps: int, lr: float, bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain Adam on each clip's L1 from the encoder's code, every step kept: codes (steps + 1, clips, latent)
    and their L1 (steps + 1, clips)."""
    with torch.no_grad():
        z = model.encode(x).requires_grad_(True)
    opt, codes, l1 = torch.optim.Adam([z], lr=lr), [], []
    for _ in range(steps + 1):
        per_clip = (model.decode(z).clamp(*bounds) - x).abs().mean(dim=(1, 2))
        codes.append(z.detach().clone())
        l1.append(per_clip.detach())
        opt.zero_grad()
        per_clip.sum().backward()
        opt.step()
    return torch.stack(codes), torch.stack(l1)


class SpectrogramCode(torch.nn.Module):
    """A code that is the spectrogram itself, from an encoder that says zero: Adam's first steps walk towards
    the clip, the later ones overshoot it, so a middle step is the best."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(len(z), 2, 3)


@pytest.mark.parametrize("wins", ["a middle step", "the encoder's code"])
def test_refine_returns_each_clips_best_code_not_its_last(smoke, smoke_cache, wins):
    """A learning rate so large that descent overshoots: the last step is worse than an earlier one, and refine
    must return, clip by clip, the code with the lowest L1 it reached, the encoder's own among them."""
    if wins == "a middle step":
        model, lr, bounds = SpectrogramCode(), 0.4, (-10.0, 10.0)
        x = torch.tensor([0.5, 0.9, 1.3]).view(3, 1, 1).expand(3, 2, 3).contiguous()
    else:  # `best` on the smoke clips
        torch.manual_seed(0)  # local's convolutions start random
        model, lr = build_model(with_preset(smoke, "best")).eval(), 3.0
        model.init_from_data(smoke_cache.standardised("train"))
        x = smoke_cache.standardised("test")
        bounds = tuple((v - smoke_cache.mean) / smoke_cache.std for v in smoke.features.db_range)
    codes, l1 = descent(model, x, steps=5, lr=lr, bounds=bounds)
    lowest, where = l1.min(0)
    assert (l1[-1] > lowest).all()  # the last step is worse than the best, for every clip
    if wins == "a middle step":
        assert ((where > 0) & (where < 5)).any()
    else:
        assert (where == 0).any()  # for some clips nothing beats the start: refine must give it back
    refined = fit_codes(model, x, steps=5, lr=lr, bounds=bounds)
    torch.testing.assert_close(refined, codes[where, torch.arange(len(x))], atol=1e-5, rtol=0)
    with torch.no_grad():
        got = (model.decode(refined).clamp(*bounds) - x).abs().mean(dim=(1, 2))
    torch.testing.assert_close(got, lowest, atol=1e-6, rtol=0)
    assert (got <= l1[0] + 1e-6).all()  # never above the encoder's


