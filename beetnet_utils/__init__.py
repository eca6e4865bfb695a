"""BeetNet: a GRU autoencoder for mel spectrograms of Beethoven's piano music.

The notebooks call these; everything else is an implementation detail.
"""
from .config import PROFILES, Config, DataConfig, FeatureConfig, ModelConfig, TrainConfig, get_config
from .data import ClipFolder, download, list_clips
from .features import MelCache, build_cache, load_cache, mel_db
from .runtime import Environment, Paths, detect, paths
from .storage import BeetNetError

__all__ = [
    "PROFILES", "Config", "DataConfig", "FeatureConfig", "ModelConfig", "TrainConfig", "get_config",
    "ClipFolder", "download", "list_clips",
    "MelCache", "build_cache", "load_cache", "mel_db",
    "Environment", "Paths", "detect", "paths",
    "BeetNetError",
]
