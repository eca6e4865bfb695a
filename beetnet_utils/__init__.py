"""BeetNet: a GRU autoencoder for mel spectrograms of Beethoven's piano music.

A notebook needs one call, `bn.start()`, and then the session's steps:
`download`, `cache`, `train`, `evaluate`. `bn.load_pretrained()` gives the shipped model, and
after training `bn.load_run(folder)` yours: each encodes and decodes spectrograms in dB.
docs/ARCHITECTURE.md maps the modules.
"""
from . import audio, cache, features, generate, model, plots, runtime, widgets  # the modules the notebooks use
from .audio import mel_to_audio, save_wav
from .cache import MelCache, load_cache
from .cache_build import build_cache
from .config import (
    DEFAULT_PRESET,
    PRESETS,
    PROFILES,
    Config,
    DataConfig,
    FeatureConfig,
    ModelConfig,
    TrainConfig,
    get_config,
    with_preset,
)
from .data import ClipFolder, list_clips
from .evaluate import best_prior, evaluate, markdown_table, realism_table, save_report
from .features import mel_db
from .generate import LatentGaussian, interpolate
from .model import build_model
from .pretrained import load_pretrained
from .run import Run, load_run, run_summary
from .runtime import Environment, Paths, detect, paths
from .session import Session, start
from .sources import download
from .storage import BeetNetError
from .train import train

__all__ = [
    "DEFAULT_PRESET", "PRESETS", "PROFILES", "Config", "DataConfig", "FeatureConfig", "ModelConfig", "TrainConfig",
    "get_config", "with_preset",
    "ClipFolder", "download", "list_clips",
    "MelCache", "build_cache", "load_cache", "mel_db",
    "build_model", "train", "load_run", "load_pretrained", "run_summary", "Run",
    "evaluate", "markdown_table", "realism_table", "best_prior", "save_report",
    "mel_to_audio", "save_wav", "interpolate", "LatentGaussian",
    "Environment", "Paths", "detect", "paths", "Session", "start",
    "BeetNetError",
    "audio", "cache", "features", "generate", "model", "plots", "runtime", "widgets",
]
