"""The autoencoders: a spectrogram (a sequence of mel frames) to one 256-number code and back.

`original`, the specification's: Linear(n_mels -> proj) per frame, a GRU stack, z = its final hidden
state (both directions merged by a Linear when bidirectional); then Linear(z -> hidden), repeated for
every frame, a GRU stack, Linear(hidden -> n_mels) per frame. Ours, `local`: the code as a short sequence
along the clip, decoded by weights shared along it, and a GRU; see its class.

Every model says what training needs through two methods (as nanoGPT's model owns
`configure_optimizers`): its optimizer, and whether it starts from the data.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, ModelConfig, TrainConfig
from .pca import spectral_envelopes


class Autoencoder(nn.Module):
    """What every preset is: encode (batch, n_mels, frames) -> (batch, latent), decode back, standardised."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def configure_optimizers(self, tc: TrainConfig) -> torch.optim.Optimizer:
        """Adam with the original's settings."""
        return torch.optim.Adam(self.parameters(), lr=tc.lr, betas=tc.betas)

    def init_from_data(self, x_train: torch.Tensor) -> None:
        """Called once before the first epoch with the standardised train split; most models start random."""


class GRUAutoencoder(Autoencoder):
    def __init__(self, cfg: ModelConfig, n_mels: int, n_frames: int):
        super().__init__()
        self.n_frames = n_frames
        self.bidirectional = cfg.bidirectional
        self.proj = nn.Linear(n_mels, cfg.proj_dim)
        self.encoder = nn.GRU(cfg.proj_dim, cfg.latent_dim, cfg.enc_layers, batch_first=True,
                              bidirectional=cfg.bidirectional)
        self.merge = nn.Linear(2 * cfg.latent_dim, cfg.latent_dim) if cfg.bidirectional else nn.Identity()
        self.expand = nn.Linear(cfg.latent_dim, cfg.dec_hidden)
        self.decoder = nn.GRU(cfg.dec_hidden, cfg.dec_hidden, cfg.dec_layers, batch_first=True)
        self.out = nn.Linear(cfg.dec_hidden, n_mels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) standardised -> (batch, latent)."""
        _, h_n = self.encoder(self.proj(x.transpose(1, 2)))
        if self.bidirectional:
            return self.merge(torch.cat([h_n[-2], h_n[-1]], dim=-1))  # last layer, forward and backward
        return h_n[-1]  # the output at the last time step, as the notebook took it

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, latent) -> (batch, n_mels, frames) standardised."""
        steps = self.expand(z).unsqueeze(1).expand(-1, self.n_frames, -1)
        y, _ = self.decoder(steps)
        return self.out(y).transpose(1, 2)


class LinearAndCorrection(Autoencoder):
    """Ours: a linear path (z -> spectrogram) and a GRU correction added to it (`correction_parameters`)."""

    def correction_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self, tc: TrainConfig) -> torch.optim.Optimizer:
        """AdamW in two groups: the linear path with no decay, the correction held back by `weight_decay`.
        Each group keeps its `base_lr`, which the schedule scales."""
        correction = self.correction_parameters()
        ids = {id(p) for p in correction}
        linear = [p for p in self.parameters() if id(p) not in ids]
        return torch.optim.AdamW([
            {"params": linear, "weight_decay": 0.0, "lr": tc.lr, "base_lr": tc.lr},
            {"params": correction, "weight_decay": tc.weight_decay, "lr": tc.lr, "base_lr": tc.lr},
        ], lr=tc.lr, betas=tc.betas)


def gru_correction(cfg: ModelConfig, n_mels: int) -> tuple[nn.GRU, nn.Dropout, nn.Linear]:
    """Where `local` ends: a GRU over the frames, dropout, and an output layer that starts at
    zero, so a new model's correction adds nothing and training lets it add only what helps."""
    gru = nn.GRU(cfg.dec_hidden, cfg.dec_hidden, cfg.dec_layers, batch_first=True,
                 dropout=cfg.dropout if cfg.dec_layers > 1 else 0.0)
    out = nn.Linear(cfg.dec_hidden, n_mels)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return gru, nn.Dropout(cfg.dropout), out

@dataclass(frozen=True)
class LocalLayout:
    """How `local` reads its code: `envelope` numbers, then `channels` numbers for each of `steps` steps."""

    envelope: int
    channels: int
    steps: int

    @classmethod
    def of(cls, cfg: ModelConfig) -> LocalLayout:
        """The layout for `cfg.latent_dim`. `cfg.local`'s `envelope_dims` and `channels` lay out the full
        profile's code (ModelConfig's latent_dim, 256: 32 + 8 steps of 28), which fixes the number of steps.
        Another latent keeps those steps, scales each step's channels with it (rounded down) and gives the
        envelope what is left: latent 32 is 8 + 8 steps of 3, latent 64 is 8 + 8 steps of 7."""
        full, own = ModelConfig.latent_dim, cfg.local
        local = full - own.envelope_dims
        if local < own.channels or local % own.channels:
            raise ValueError(f"architecture local: at the full latent of {full}, latent_dim - envelope_dims "
                             f"({local}) must be a positive multiple of local.channels ({own.channels})")
        steps, channels = local // own.channels, own.channels * cfg.latent_dim // full
        if channels < 1:
            raise ValueError(f"architecture local: a latent of {cfg.latent_dim} numbers cannot give each of its "
                             f"{steps} steps a number (at least {-(-full // own.channels)} are needed)")
        return cls(cfg.latent_dim - steps * channels, channels, steps)


class LocalGRUAutoencoder(LinearAndCorrection):
    """`local`: the latent read as a short sequence in time, so the decoder's weights are shared along it.

    A clip-wide code (round 4's `pca_gru`, retired) must learn every pattern at every moment a cut may put
    it, from a few dozen recordings (docs/RESULTS.md). Here z is
    `envelope` numbers for the clip's smooth spectral envelope (its timbre, constant in time) and
    then `channels` numbers for each of P steps along the clip (`LocalLayout`: 32, then 8 steps of 28,
    for the full 256 numbers): each step's code says what happens near its moment. The decoder sees
    nothing but z: a transposed convolution over the steps (the linear part: the same patterns
    wherever they fall), and a GRU that runs over the frames on the steps' codes spread out in time
    (what the linear part misses: decays that carry from one step to the next); its output layer
    starts at zero. The encoder is the matching strided
    convolution, and encode-time refinement fits the code to each clip.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int, n_frames: int):
        super().__init__()
        layout = LocalLayout.of(cfg)
        self.channels, self.envelope_dims, self.steps = layout.channels, layout.envelope, layout.steps
        self.n_frames = n_frames
        stride = -(-n_frames // self.steps)  # the steps tile the clip
        kernel = max(cfg.local.kernel, stride)  # each step's pattern reaches this many frames
        span = (self.steps - 1) * stride + kernel
        left = (span - n_frames) // 2
        self.pad, self.crop = (left, span - n_frames - left), slice(left, left + n_frames)
        envelopes = torch.as_tensor(spectral_envelopes(layout.envelope, n_mels, 1), dtype=torch.float32)
        self.envelope_in = nn.Linear(n_mels, layout.envelope, bias=False)  # cosines over the bands at init
        self.envelope_out = nn.Linear(layout.envelope, n_mels, bias=False)
        with torch.no_grad():
            self.envelope_in.weight.copy_(envelopes)
            self.envelope_out.weight.copy_(envelopes.T)
        self.encoder = nn.Conv1d(n_mels, layout.channels, kernel, stride=stride)
        self.linear_decoder = nn.ConvTranspose1d(layout.channels, n_mels, kernel, stride=stride)
        self.spread = nn.ConvTranspose1d(layout.channels, cfg.dec_hidden, kernel, stride=stride)
        self.envelope_hidden = nn.Linear(layout.envelope, cfg.dec_hidden)
        self.gru, self.drop, self.out = gru_correction(cfg, n_mels)

    def correction_parameters(self) -> list[nn.Parameter]:
        return [*self.spread.parameters(), *self.envelope_hidden.parameters(), *self.gru.parameters(),
                *self.out.parameters()]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        envelope = self.envelope_in(x.mean(dim=-1))
        local = self.encoder(F.pad(x, self.pad))[..., :self.steps]
        return torch.cat([envelope, local.flatten(1)], dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        envelope, local = z[:, :self.envelope_dims], z[:, self.envelope_dims:].reshape(len(z), self.channels, -1)
        linear = self.linear_decoder(local)[..., self.crop] + self.envelope_out(envelope).unsqueeze(-1)
        steps = self.spread(local)[..., self.crop].transpose(1, 2) + self.envelope_hidden(envelope).unsqueeze(1)
        y, _ = self.gru(self.drop(steps))
        return linear + self.out(self.drop(y)).transpose(1, 2)


def fit_codes(model: nn.Module, x: torch.Tensor, steps: int, lr: float, bounds: tuple[float, float]) -> torch.Tensor:
    """Fit each clip's code by L1 descent through the frozen decoder, from the encoder's z.

    Each clip keeps the best code it reached (its starting z included), so its L1 never rises.
    `bounds` clamp the output as the metric does (standardised units). Gradients are taken for z
    alone (`autograd.grad`), never written to the weights: so a widget can refine in a background
    thread while the same model decodes in the foreground.
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z0 = model.encode(x).float()
    z = z0.clone().requires_grad_(True)
    best_z = z0.clone()
    best = torch.full((len(x),), float("inf"), device=x.device)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps + 1):
            per_clip = (model.decode(z).clamp(*bounds) - x).abs().mean(dim=(1, 2))
            better = per_clip.detach() < best
            best = torch.where(better, per_clip.detach(), best)
            best_z[better] = z.detach()[better]
            (z.grad,) = torch.autograd.grad(per_clip.sum(), z)
            opt.step()
    model.train(was_training)
    return best_z


ARCHITECTURES: dict[str, type[Autoencoder]] = {"original": GRUAutoencoder, "local": LocalGRUAutoencoder}


def build_model(cfg: Config) -> Autoencoder:
    """The model a config describes: architecture `original` (the specification) or `local` (ours)."""
    name = cfg.model.architecture
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](cfg.model, *cfg.features.shape)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
