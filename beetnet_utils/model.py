"""The GRU autoencoder of the specification: a spectrogram as a sequence of mel frames.

Encoder: Linear(n_mels -> proj) per frame, a GRU stack, z = its final hidden state
(both directions merged by a Linear when bidirectional). Decoder: Linear(z -> hidden),
repeated for every frame, a GRU stack, Linear(hidden -> n_mels) per frame.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import Config, ModelConfig


class GRUAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig, n_mels: int = 96, n_frames: int = 63):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def build_model(cfg: Config) -> nn.Module:
    """The model a config describes (presets: `seed`, the specification)."""
    if cfg.model.preset != "seed":
        raise ValueError(f"unknown model preset {cfg.model.preset!r}: choose one of seed")
    return GRUAutoencoder(cfg.model, cfg.features.n_mels, cfg.features.n_frames)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
