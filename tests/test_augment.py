"""Augmentation: each move does what it says, leaves the shape alone, is the identity at zero, and a seed fixes it."""
from __future__ import annotations

import pytest
import torch

from beetnet_utils.augment import (
    EQ,
    EQ_ORDERS,
    Augment,
    Gain,
    MelShift,
    Tilt,
    TimeShift,
    add_gain,
    equalise,
    shift_mel,
    tilt,
)

STD = 14.0  # a dB std like the piano set's


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(5, 96, 63, generator=torch.Generator().manual_seed(seed))


def test_shift_mel_moves_bands_and_repeats_the_edge():
    x = batch()
    up, down = shift_mel(x, 2), shift_mel(x, -3)
    assert torch.equal(up[:, 2:], x[:, :-2]) and torch.equal(up[:, 0], x[:, 0]) and torch.equal(up[:, 1], x[:, 0])
    assert torch.equal(down[:, :-3], x[:, 3:]) and all(torch.equal(down[:, -i], x[:, -1]) for i in (1, 2, 3))
    assert torch.equal(shift_mel(x, 0), x)


def test_gain_adds_its_amount_to_every_bin_of_its_own_clip():
    x = batch()
    amount = torch.arange(5.0).view(5, 1, 1)
    y = add_gain(x, amount)
    for i in range(5):
        assert torch.allclose(y[i] - x[i], torch.full((96, 63), float(i)))
    assert torch.equal(add_gain(x, 0.0), x)


def test_tilt_runs_from_minus_half_to_plus_half_and_keeps_the_mean_level():
    x = batch()
    slope = torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0]).view(5, 1, 1)
    d = tilt(x, slope) - x
    assert torch.allclose(d[:, 0, 0], -slope.flatten() / 2) and torch.allclose(d[:, -1, 0], slope.flatten() / 2)
    assert torch.allclose(d[:, :, 0], d[:, :, 40])  # the same in every frame
    assert torch.allclose(d.mean(dim=(1, 2)), torch.zeros(5), atol=1e-6)
    assert torch.allclose(d[:, 1:] - d[:, :-1], (slope / 95).expand(5, 95, 63), atol=1e-6)  # linear in the band
    assert torch.equal(tilt(x, 0.0), x)


def test_equalise_adds_the_same_smooth_curve_to_every_frame_and_keeps_the_mean_level():
    x = batch()
    amounts = torch.zeros(5, EQ_ORDERS)
    amounts[0, 0], amounts[1, 2], amounts[2] = 1.0, -0.5, torch.linspace(-1, 1, EQ_ORDERS)
    d = equalise(x, amounts) - x
    assert torch.allclose(d[:, :, 0], d[:, :, 40])  # the same in every frame
    assert torch.allclose(d.mean(dim=(1, 2)), torch.zeros(5), atol=1e-6)  # no cosine of order >= 1 has a mean
    bands = torch.arange(96.0)
    assert torch.allclose(d[0, :, 0], torch.cos(torch.pi * (bands + 0.5) / 96), atol=1e-6)  # order 1: low up, high down
    assert torch.allclose(d[1, :, 0], -0.5 * torch.cos(3 * torch.pi * (bands + 0.5) / 96), atol=1e-6)
    assert torch.equal(d[3], torch.zeros(96, 63))  # no amounts, no change
    curve = d[2, :, 0]
    assert curve.diff().abs().max() < 0.1 * (curve.max() - curve.min())  # a smooth curve: small steps between bands


MAKERS = {
    "time": lambda seed, m=6: TimeShift(m, seed),
    "mel": lambda seed, m=3: MelShift(m, seed),
    "gain": lambda seed, m=6.0: Gain(m, STD, seed),
    "tilt": lambda seed, m=6.0: Tilt(m, STD, seed),
    "eq": lambda seed, m=2.0: EQ(m, STD, seed),
}


@pytest.mark.parametrize("kind", MAKERS)
def test_random_moves_keep_the_shape_and_a_seed_fixes_them(kind):
    a, b, c = MAKERS[kind](1), MAKERS[kind](1), MAKERS[kind](2)
    outs_a = [a(batch(i)) for i in range(4)]
    outs_b = [b(batch(i)) for i in range(4)]
    outs_c = [c(batch(i)) for i in range(4)]
    assert all(o.shape == (5, 96, 63) for o in outs_a)
    assert all(torch.equal(p, q) for p, q in zip(outs_a, outs_b))
    assert not all(torch.equal(p, q) for p, q in zip(outs_a, outs_c))
    assert not all(torch.equal(p, batch(i)) for i, p in enumerate(outs_a))  # it moved something


@pytest.mark.parametrize("kind", MAKERS)
def test_random_moves_are_the_identity_at_zero_and_draw_nothing(kind):
    zero = MAKERS[kind](1, 0)
    state = zero.state_dict().clone()
    x = batch()
    assert zero(x) is x
    assert torch.equal(zero.state_dict(), state)


@pytest.mark.parametrize("kind", MAKERS)
def test_a_restored_state_draws_the_same_next_move(kind):
    a = MAKERS[kind](3)
    a(batch())
    saved = a.state_dict().clone()
    first = a(batch(1))
    b = MAKERS[kind](99)
    b.load_state_dict(saved)
    assert torch.equal(b(batch(1)), first)


@pytest.mark.parametrize("kind", ["gain", "tilt"])
def test_per_clip_amounts_stay_within_the_limit_and_differ_between_clips(kind):
    x = torch.zeros(200, 96, 63)
    d = MAKERS[kind](0, 6.0)(x) - x
    amount = d[:, 0, 0] if kind == "gain" else d[:, -1, 0] * 2  # tilt: the top band holds +slope/2
    assert amount.abs().max() <= 6.0 / STD + 1e-6
    assert amount.abs().max() > 0.8 * 6.0 / STD  # 200 draws reach near the limit
    assert len(torch.unique(amount)) == 200


def test_eq_weighs_each_cosine_within_the_limit_and_differently_for_each_clip():
    x = torch.zeros(200, 96, 63)
    curves = EQ(2.0, STD, seed=0)(x)[:, :, 0]  # (clips, bands)
    bands = torch.arange(96.0)
    cosines = torch.stack([torch.cos(torch.pi * (bands + 0.5) * j / 96) for j in range(1, EQ_ORDERS + 1)])
    amounts = curves @ cosines.T / (cosines ** 2).sum(1)  # the cosines are orthogonal: read each weight back
    torch.testing.assert_close(amounts @ cosines, curves, atol=1e-5, rtol=0)  # nothing but those cosines
    assert amounts.abs().max() <= 2.0 / STD + 1e-5 and amounts.abs().max() > 0.8 * 2.0 / STD
    assert len(torch.unique(amounts[:, 0])) == 200


ALONE = {  # Augment's settings with one move on, and that move by itself, seeded as Augment seeds it (seed + k)
    "time": ({"shift_frames": 6}, lambda: TimeShift(6, 5)),
    "mel": ({"shift_mels": 3}, lambda: MelShift(3, 6)),
    "gain": ({"gain_db": 6.0}, lambda: Gain(6.0, STD, 7)),
    "tilt": ({"tilt_db": 6.0}, lambda: Tilt(6.0, STD, 8)),
    "eq": ({"eq_db": 2.0}, lambda: EQ(2.0, STD, 9)),
}


def augment(shift_frames: int = 0, shift_mels: int = 0, gain_db: float = 0.0, tilt_db: float = 0.0,
            eq_db: float = 0.0) -> Augment:
    return Augment(shift_frames, shift_mels, gain_db, tilt_db, STD, seed=5, eq_db=eq_db)


@pytest.mark.parametrize("kind", ALONE)
def test_augment_makes_each_move_it_is_given_with_its_own_amount_and_generator(kind):
    """Each setting reaches its own move (a preset keeps its draws when another move is switched on or off)."""
    settings, alone = ALONE[kind]
    chained, plain = augment(**settings), alone()
    outs = [chained(batch(i)) for i in range(4)]
    assert all(torch.equal(out, plain(batch(i))) for i, out in enumerate(outs))
    assert not all(torch.equal(out, batch(i)) for i, out in enumerate(outs))  # it moved something


def test_augment_chains_only_the_moves_switched_on_each_from_its_own_generator():
    off = augment()
    x = batch()
    assert off(x) is x
    every, again = Augment(6, 3, 6.0, 6.0, STD, seed=5, eq_db=2.0), Augment(6, 3, 6.0, 6.0, STD, seed=5, eq_db=2.0)
    y = every(batch())
    assert y.shape == x.shape and not torch.equal(y, TimeShift(6, 5)(batch()))
    saved = {k: v.clone() for k, v in every.state_dict().items()}
    first = every(batch(1))
    again.load_state_dict(saved)
    assert set(saved) == {"time", "mel", "gain", "tilt", "eq"} and torch.equal(again(batch(1)), first)
