"""BeetNet: a GRU autoencoder for mel spectrograms of Beethoven's piano music.

A notebook needs one call, `bn.start()`, and then the session's steps:
`download`, `cache`, `train`, `evaluate`. After training, `bn.load_run(folder)` gives a
model that encodes and decodes spectrograms in dB. docs/ARCHITECTURE.md maps the modules.

The public names below are imported from their modules on first use (PEP 562), so that
`import beetnet_utils` and `python -m beetnet_utils --help` do not wait seconds for torch,
scikit-learn and matplotlib; `from beetnet_utils import X` works as usual.
"""
from __future__ import annotations

from importlib import import_module

# module -> the public names it holds
_API = {
    "config": ["DEFAULT_PRESET", "PRESETS", "PROFILES", "Config", "DataConfig", "FeatureConfig", "ModelConfig",
               "TrainConfig", "get_config", "with_preset"],
    "data": ["ClipFolder", "download", "list_clips"],
    "features": ["MelCache", "build_cache", "load_cache", "mel_db"],
    "model": ["build_model"],
    "train": ["train"],
    "run": ["Run", "load_run", "run_summary"],
    "evaluate": ["evaluate", "markdown_table", "save_report"],
    "audio": ["mel_to_audio", "save_wav"],
    "generate": ["interpolate", "LatentGaussian"],
    "runtime": ["Environment", "Paths", "detect", "paths"],
    "session": ["Session", "start"],
    "storage": ["BeetNetError"],
}
MODULES = ["audio", "features", "generate", "model", "plots", "runtime", "widgets"]  # the ones notebooks use by name
_HOME = {name: module for module, names in _API.items() for name in names}

__all__ = [*_HOME, *MODULES]


def __getattr__(name: str):
    if name in MODULES:
        return import_module(f".{name}", __name__)
    if name in _HOME:
        value = getattr(import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value  # found once, then an ordinary attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
