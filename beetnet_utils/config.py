"""Every number in one place: typed configs whose defaults are the original run.

Profiles change only what must change for a laptop (`demo`) or CI (`smoke`); the
feature settings are the same in all of them, so one mel cache serves every profile.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

PROFILE_ENV = "BEETNET_PROFILE"
AMP_MODES = ("auto", "on", "off")
SCHEDULES = ("constant", "cosine")
INITS = ("scratch", "pretrained")  # where a new run's weights start: seeded, or the shipped model's


def _fits(value: Any, kind: str) -> bool:
    """Whether `value` is of the field type `kind` (as written in the annotation) and finite where a number."""
    if "|" in kind:
        return any(_fits(value, k.strip()) for k in kind.split("|"))
    if kind == "None":
        return value is None
    if kind.startswith("tuple["):
        inner = [k.strip() for k in kind[6:-1].split(",")]
        if not isinstance(value, tuple):
            return False
        kinds = inner[:1] * len(value) if inner[-1] == "..." else inner
        return len(kinds) == len(value) and all(_fits(v, k) for v, k in zip(value, kinds))
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"bool": bool, "str": str, "LocalConfig": LocalConfig}[kind])


def check_fields(section: Any) -> None:
    """Refuse, naming the setting, a value of the wrong type or not finite: epochs 1.5, lr "0.001", grad_clip
    NaN. (A settings file is JSON, written by hand or by another tool: nothing checks it before here.)"""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if not _fits(value, str(f.type)):
            raise ValueError(f"setting {f.name} must be {f.type.replace('|', 'or')} (finite where a number), "
                             f"not {value!r}")


def check_positive(section: Any, *names: str) -> None:
    bad = [f"{n} must be above 0 (got {getattr(section, n)!r})" for n in names if not getattr(section, n) > 0]
    if bad:
        raise ValueError(f"setting {'; '.join(bad)}")


@dataclass(frozen=True)
class FeatureConfig:
    """Audio -> mel dB, exactly as the original notebook computed it."""

    sample_rate: int = 16000
    clip_seconds: float = 2.0
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 96
    power: float = 1.0
    db_min: float = -40.0
    db_max: float = 60.0
    silence_threshold: float = 1e-3  # mean |wav| after peak normalisation
    min_peak: float = 1e-3  # ours: a clip whose peak is below this (-60 dBFS) is near-silence (dither, hiss)
    min_clip_fraction: float = 0.5  # shorter clips are skipped, longer-but-short ones zero-padded

    def __post_init__(self) -> None:
        check_fields(self)
        check_positive(self, "sample_rate", "clip_seconds", "n_fft", "hop_length", "n_mels", "power",
                       "silence_threshold", "min_peak", "min_clip_fraction")
        if not self.db_min < self.db_max:
            raise ValueError(f"db_min must be below db_max (got {self.db_min} and {self.db_max})")

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def n_frames(self) -> int:
        return self.clip_samples // self.hop_length + 1  # torch.stft with center=True

    @property
    def shape(self) -> tuple[int, int]:
        """One clip's spectrogram: (n_mels, n_frames), 96 x 63 for the original."""
        return self.n_mels, self.n_frames

    @property
    def db_range(self) -> tuple[float, float]:
        return self.db_min, self.db_max


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how recordings are split."""

    source: str = "kaggle"
    kaggle_handle: str = "alexzyukov/beethoven/versions/1"
    musicnet_handle: str = "alonhaviv/musicnet/versions/2"  # version 2, as the original used
    demo_recordings: int = 12
    demo_seconds: float = 180.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.demo_recordings >= 1):
            raise ValueError(f"val_fraction and test_fraction must be in [0, 1) and demo_recordings at least 1 "
                             f"(got {self.val_fraction}, {self.test_fraction}, {self.demo_recordings})")


def make_section(kind: type, values: Any, name: str = "") -> Any:
    """One section of settings from JSON (or a `Config.replace` dict): lists become tuples, and a key this
    version does not know is refused by name."""
    if not isinstance(values, dict):
        raise ValueError(f"settings for {kind.__name__} must be a JSON object, not {values!r}")
    unknown = sorted(name + k for k in set(values) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)} (from a newer version?)")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class LocalConfig:
    """The `local` architecture's own fields: how it lays out the full profile's 256 numbers (model.LocalLayout).
    The defaults are `best`'s: 32 numbers for the envelope, then 8 steps along the clip of 28."""

    envelope_dims: int = 32  # latent directions that start at the clip's smooth spectral envelope
    channels: int = 28  # numbers per step (the rest / this = steps); a smaller latent keeps the steps, with fewer
    kernel: int = 24  # frames each step's pattern reaches

    def __post_init__(self) -> None:
        check_fields(self)
        check_positive(self, "channels", "kernel")
        if self.envelope_dims < 0:
            raise ValueError(f"setting envelope_dims must be 0 or more (got {self.envelope_dims})")


@dataclass(frozen=True)
class ModelConfig:
    """The GRU autoencoder of the README (bidirectional encoder; the notebook ran it unidirectional).

    `architecture` names one of model.ARCHITECTURES: `original` is the specification; `local` reads
    the latent as a short sequence in time (the `best` preset's) and has fields of its own, `local`.
    The fields after `bidirectional` are ours.
    """

    architecture: str = "original"
    proj_dim: int = 256
    latent_dim: int = 256
    dec_hidden: int = 256
    enc_layers: int = 2
    dec_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.0
    refine_steps: int = 0  # encode time: steps of L1 descent on z through the frozen decoder
    refine_lr: float = 0.05
    local: LocalConfig | None = None  # the `local` architecture's fields (a dict is read as one); None for others

    def __post_init__(self) -> None:
        if isinstance(self.local, dict):
            object.__setattr__(self, "local", make_section(LocalConfig, self.local, "local."))
        check_fields(self)
        check_positive(self, "proj_dim", "latent_dim", "dec_hidden", "enc_layers", "dec_layers")
        if (self.architecture == "local") != (self.local is not None):
            raise ValueError(f"the local architecture takes its fields in model.local and no other architecture "
                             f"has them (got architecture {self.architecture!r}, local {self.local})")
        if not (0 <= self.dropout < 1 and self.refine_steps >= 0 and self.refine_lr > 0):
            raise ValueError(f"dropout must be in [0, 1), refine_steps at least 0 and refine_lr above 0 "
                             f"(got {self.dropout}, {self.refine_steps}, {self.refine_lr})")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    epochs: int = 50
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float = 1.0
    seed: int = 0
    amp: str = "auto"  # AMP_MODES. auto: float16 autocast + GradScaler on CUDA only; on: also bfloat16 on the CPU
    minutes: float | None = None  # this session's budget: stop cleanly after the epoch that crosses it; resume later
    budget_minutes: float | None = None  # the whole run's budget, summed over sessions: the cosine anneals over it
    weight_decay: float = 0.0  # AdamW decay on the non-linear correction (ours)
    clamp_loss: bool = False  # ours: score the output clamped to the dB range, as the metric does
    shift_frames: int = 0  # augmentation: move each batch by a random whole number of frames in ±this
    shift_mels: int = 0  # augmentation: ... and of mel bands in ±this (register)
    gain_db: float = 0.0  # augmentation: add to each clip a random gain in ±this many dB
    tilt_db: float = 0.0  # augmentation: tilt each clip's spectrum, lowest band to highest, by a random ±this dB
    eq_db: float = 0.0  # augmentation: a random smooth EQ per clip, each of its EQ_ORDERS cosines over the bands ±this
    schedule: str = "constant"  # or "cosine": anneal over the epochs (or budget_minutes, whichever ends first)
    lr_floor: float = 0.02  # cosine: the learning rate ends at this fraction of its start
    flux_weight: float = 0.0  # sharper onsets: also match the output's frame-to-frame differences (L1), this much
    init: str = "scratch"  # INITS: "pretrained" fine-tunes the shipped model (its architecture: pretrained.py)

    def __post_init__(self) -> None:
        """Refuse settings that would train nothing or forever, with a message that names the option."""
        check_fields(self)
        check_positive(self, "grad_clip")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch size and epochs must be at least 1 (got {self.batch_size} and {self.epochs})")
        for name in ("minutes", "budget_minutes"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of minutes (got {value})")
        moves = (self.shift_frames, self.shift_mels, self.gain_db, self.tilt_db, self.eq_db, self.flux_weight)
        if not self.lr > 0 or not all(m >= 0 for m in moves):
            raise ValueError(f"lr must be positive; shift_frames, shift_mels, gain_db, tilt_db, eq_db and flux_weight "
                             f"not negative (got {self.lr}, {', '.join(map(str, moves))})")
        if self.amp not in AMP_MODES or self.schedule not in SCHEDULES or self.init not in INITS:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, schedule one of {', '.join(SCHEDULES)} and "
                             f"init one of {', '.join(INITS)} (got {self.amp!r}, {self.schedule!r}, {self.init!r})")


@dataclass(frozen=True)
class Config:
    profile: str = "full"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        if not isinstance(d, dict):
            raise ValueError(f"settings must be a JSON object of sections, not {type(d).__name__}")
        return cls(
            profile=d.get("profile", "full"),
            features=make_section(FeatureConfig, d.get("features", {})),
            data=make_section(DataConfig, d.get("data", {})),
            model=make_section(ModelConfig, d.get("model", {})),
            train=make_section(TrainConfig, d.get("train", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))

    def hash(self) -> str:
        return stable_hash(self.to_dict())

    def replace(self, **sections: Any) -> Config:
        """`cfg.replace(train={"epochs": 3})`: a copy with some fields of some sections changed."""
        changes = {}
        for name, values in sections.items():
            current = getattr(self, name)
            changes[name] = dataclasses.replace(current, **values) if isinstance(values, dict) else values
        return dataclasses.replace(self, **changes)


def stable_hash(obj: Any) -> str:
    """Short sha256 of canonical JSON: equal settings give equal hashes across runs and machines."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_LOCAL = {"architecture": "local", "local": {}, "dec_hidden": 128, "dec_layers": 1, "dropout": 0.2,
          "refine_steps": 30, "refine_lr": 0.1}  # local: LocalConfig's defaults
_LOCAL_TRAIN = {"weight_decay": 0.05, "schedule": "cosine", "clamp_loss": True, "eq_db": 2.0}
SHARPNESS = 0.5  # `best`'s flux weight: reconstructions that move from frame to frame as much as the clip does

# What a person chooses from: the specification's model, and ours.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "original": {"model": {"architecture": "original", "local": None}, "train": {}},
    # the latent as 32 numbers for the spectral envelope and 8 steps along the clip of 28, decoded by weights
    # shared along time and a GRU over the frames; a random EQ in training; trained for sharp onsets
    "best": {"model": _LOCAL, "train": _LOCAL_TRAIN | {"flux_weight": SHARPNESS}},
}

# The pretrained model (benchmarks/pretrain.py, docs/MODEL_CARD.md): `best` with a decoder twice as wide and two
# GRU layers, trained on the rendered corpus; `train --init pretrained` fine-tunes it under these settings.
PRETRAIN: dict[str, dict[str, Any]] = {"model": _LOCAL | {"dec_hidden": 256, "dec_layers": 2},
                                       "train": PRESETS["best"]["train"]}

# An earlier round's preset, kept reproducible for benchmarks/bench_quality.py (`--presets local`) and the tests;
# not offered in the CLI or the notebooks. Retired with their architecture: round 4's `best` and `sharp`
# (`pca_gru`, `pca_gru_sharp`); docs/RESULTS.md names the commit that reproduces their figures.
EXPERIMENTS: dict[str, dict[str, dict[str, Any]]] = {
    # round 5's `local`: `best` without the flux term, with the time shifts, gain and tilt it inherited
    "local": {"model": _LOCAL, "train": _LOCAL_TRAIN | {"shift_frames": 6, "gain_db": 3.0, "tilt_db": 6.0}},
}


DEFAULT_PRESET = "best"  # what the notebooks and the CLI train unless told otherwise
PRETRAINED, FINETUNED = "pretrained", "finetuned"  # the shipped model's name in reports; a run fine-tuned from it
DEFAULT_INIT = "pretrained"  # where notebook 03's `best` starts (docs/RESULTS.md, "Pretrained": fine-tuning wins)
FINE_TUNE_LR = 3e-4  # a third of best's: fine-tuning keeps more of what the corpus taught (docs/RESULTS.md)


def with_preset(cfg: Config, preset: str) -> Config:
    """`cfg` with a preset's settings: `original` (the specification) or `best` (ours); or one of the
    EXPERIMENTS of earlier rounds, for benchmarks."""
    if preset not in PRESETS and preset not in EXPERIMENTS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return cfg.replace(**(PRESETS.get(preset) or EXPERIMENTS[preset]))


def _profiles() -> dict[str, Config]:
    full = Config()
    demo = Config(  # 16 recordings, 2 held out for validation and 2 for test
        profile="demo",
        data=DataConfig(source="demo", demo_recordings=16, val_fraction=0.125, test_fraction=0.125),
        train=TrainConfig(epochs=12),
    )
    smoke = Config(
        profile="smoke",
        data=DataConfig(source="demo", demo_recordings=6, demo_seconds=24.0),
        model=ModelConfig(proj_dim=32, latent_dim=32, dec_hidden=32),
        train=TrainConfig(batch_size=8, epochs=2),
    )
    return {c.profile: c for c in (full, demo, smoke)}


PROFILES: dict[str, Config] = _profiles()


def get_config(profile: str | None = None) -> Config:
    """The named profile; `None` reads BEETNET_PROFILE (default `full`)."""
    name = profile or os.environ.get(PROFILE_ENV) or "full"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
