"""BeetNet: a GRU autoencoder for mel spectrograms of Beethoven's piano music.

The notebooks call these; everything else is an implementation detail.
"""
from .audio import mel_to_audio, save_wav
from .config import PRESETS, PROFILES, Config, DataConfig, FeatureConfig, ModelConfig, TrainConfig, get_config, with_preset
from .data import ClipFolder, download, list_clips
from .evaluate import evaluate, markdown_table, save_report
from .features import MelCache, build_cache, load_cache, mel_db
from .generate import LatentGaussian, interpolate
from .model import build_model
from .runtime import Environment, Paths, detect, paths
from .storage import BeetNetError
from .train import Run, load_run, run_summary, train

from . import audio, features, generate, model, plots, runtime, widgets  # noqa: E402  (modules the notebooks use)

__all__ = [
    "PRESETS", "PROFILES", "Config", "DataConfig", "FeatureConfig", "ModelConfig", "TrainConfig", "get_config",
    "with_preset",
    "ClipFolder", "download", "list_clips",
    "MelCache", "build_cache", "load_cache", "mel_db",
    "build_model", "train", "load_run", "run_summary", "Run",
    "evaluate", "markdown_table", "save_report",
    "mel_to_audio", "save_wav", "interpolate", "LatentGaussian",
    "Environment", "Paths", "detect", "paths",
    "BeetNetError",
    "audio", "features", "generate", "model", "plots", "runtime", "widgets",
]
