"""A trained run: the checkpoint format, and `Run`, the object people load after training.

Kept apart from the loop that made it (train.py), as nanoGPT keeps `sample.py` apart from
`train.py`: evaluation, generation and the widgets import this module, never the training one.

A run folder holds `last.pt` (the newest epoch) and `best.pt` (the lowest validation loss), each
a complete checkpoint: settings, cache identity, weights, optimizer, random states and history.
So either one can resume training, and either one can be loaded for use.
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .model import build_model, fit_codes
from .runtime import pick_device
from .storage import MARKERS, BeetNetError, atomic_write, check_array, claim_dir

CHECKPOINT_FORMAT = 4  # plain data only (tensors, numbers, strings, lists, dicts), read with weights_only
CHECKPOINTS = ("last", "best")
# Settings that may change between a run and its resumption; anything else must match.
RESUMABLE_CHANGES = {"train.epochs", "train.minutes", "train.amp", "profile"}
PRETRAINED_KEY = "pretrained"  # the cache_key of the shipped model (pretrained.py): trained on no cache of yours


def save_checkpoint(ckpt: dict, path: Path) -> Path:
    """Atomically: a kill or a full disk leaves the previous file intact.

    Serialised in memory first, so a full disk surfaces as the OS's own error ("disk full while
    writing PATH"), not as torch's "enforce fail ... unexpected pos".
    """
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buf.getbuffer()))


REQUIRED = ("config", "stats", "cache_key", "epoch", "history", "best_val", "model", "optimizer", "scaler", "rng")


class ForeignCheckpoint(BeetNetError):
    """A checkpoint that reads, but not as this version's: never skipped, never overwritten."""


PLAIN = (torch.Tensor, str, int, float, bool, type(None))


def plain(obj: Any) -> bool:
    """Whether `obj` is tensors, numbers, strings, lists (tuples) and dicts only, all the way down."""
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(plain(v) for v in obj)
    return isinstance(obj, PLAIN)


def read_plain(path: Path, source: Path | io.BytesIO | None = None) -> Any:
    """A torch file as plain data, never code: torch's safe unpickler refuses a pickle that names a function
    or a class (os.system, say) before anything is built, so it never runs; what it does build (sets, bytes,
    dtypes and devices too) must then be plain data. `source`: its bytes, when they were read already."""
    try:
        data = torch.load(path if source is None else source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ForeignCheckpoint(f"{path} holds objects other than tensors, numbers, strings, lists and dicts, "
                                "which BeetNet never loads (a file from elsewhere is data, never code): delete it, "
                                "or train into a new --run folder") from None
    if not plain(data):
        raise ForeignCheckpoint(f"{path} holds objects other than tensors, numbers, strings, lists and dicts: "
                                "delete it, or train into a new --run folder")
    return data


def _read(path: Path) -> dict:
    """A checkpoint of this version, read as plain data (read_plain)."""
    ckpt = read_plain(path)
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise ForeignCheckpoint(f"{path} is not a BeetNet checkpoint: move it away, or train into a new --run folder")
    missing = [k for k in REQUIRED if k not in ckpt]
    if ckpt["format"] != CHECKPOINT_FORMAT or missing:
        what = (f"of format {ckpt['format']!r}, not {CHECKPOINT_FORMAT}" if ckpt["format"] != CHECKPOINT_FORMAT
                else f"without {', '.join(missing)}")
        raise ForeignCheckpoint(f"{path} is a checkpoint {what}: another version of BeetNet wrote it; use that "
                                "version, or train into a new --run folder (this one is left as it is)")
    return ckpt


def load_checkpoint(run_dir: Path, name: str = "last", log=print) -> dict | None:
    """The checkpoint `name`, else the other one, with a warning. None if there is none.

    A torn file (a copy or a Drive mount that died mid-write) is skipped with a warning, never fatal.
    A checkpoint of another version (ForeignCheckpoint) is refused: training over it would destroy it.
    """
    for candidate in (name, *(c for c in CHECKPOINTS if c != name)):
        path = Path(run_dir) / f"{candidate}.pt"
        if not path.is_file():
            continue
        try:
            ckpt = _read(path)
        except ForeignCheckpoint:
            raise
        except Exception as exc:
            log(f"warning: {path} is unreadable ({type(exc).__name__}: {str(exc)[:80]}); trying the next checkpoint")
            continue
        if candidate != name:
            log(f"warning: using {path.name} (epoch {ckpt['epoch']}) because {name}.pt is missing or unreadable")
        return ckpt
    return None


def claim_run_dir(run_dir: Path, cache_dir: Path) -> Path:
    """A run folder is new, empty or already a run (its run.json says so), and never the cache or inside it."""
    return claim_dir(run_dir, "run", cache_dir)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """'train.lr 0.001 -> 0.002' for every setting that differs and may not change on resume.

    A setting the saved run predates counts as its default: that is what the older code did."""
    try:  # defaults at every level, model.local's too
        a = _flat(Config.from_dict(saved).to_dict())
    except (ValueError, TypeError):  # a setting this version does not know: listed as differing
        a = _flat(Config().to_dict()) | _flat(saved)
    b = _flat(current)
    return [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
            if k not in RESUMABLE_CHANGES and json.dumps(a.get(k)) != json.dumps(b.get(k))]


def check_resumable(ckpt: dict, config: dict, cache_key: str, run_dir: Path) -> None:
    """Refuse to continue a run with other settings or on another cache, saying what differs."""
    diffs = config_differences(ckpt["config"], config)
    if ckpt["cache_key"] != cache_key:
        diffs.append("the mel cache (other clips, features or split)")
    if diffs:
        raise BeetNetError(f"{run_dir} holds a run with other settings ({'; '.join(diffs)}): "
                           "use a new --run folder or the original settings")


class Run:
    """A trained model behind a dB-in, dB-out interface; standardisation stays inside."""

    def __init__(self, ckpt: dict, path: Path, device: torch.device):
        self.path, self.device = path, device
        try:
            self.config = Config.from_dict(ckpt["config"])
        except (TypeError, ValueError) as exc:
            raise ForeignCheckpoint(f"{path}: {exc}; another version of BeetNet wrote this run: use that version, "
                                    "or train a new run") from None
        self.stats = ckpt["stats"]
        self.history: list[dict] = ckpt["history"]
        self.epoch: int = ckpt["epoch"]
        self.cache_key: str = ckpt["cache_key"]
        if not all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point()):
            raise BeetNetError(f"{path} holds weights that are not finite numbers (its training diverged): train "
                               "a new run, with a lower learning rate")
        self.model = build_model(self.config).to(device).eval()
        self.model.load_state_dict(ckpt["model"])

    @property
    def pretrained(self) -> bool:
        return self.cache_key == PRETRAINED_KEY

    def check_cache(self, cache: Any) -> None:
        """A run is scored on the cache it was trained on (the baselines fit its train split); the pretrained
        model on any cache of the mel settings it was trained on."""
        if not self.pretrained and self.cache_key != cache.key:
            raise BeetNetError(f"{self.path} was trained on another cache than {cache.path}: "
                               "pass the cache it was trained on (baselines are fitted on its train split)")
        if self.config.features != cache.features:
            ours, theirs = vars(self.config.features), vars(cache.features)
            diffs = [f"{k} {theirs[k]} (the model's: {ours[k]})" for k in ours if ours[k] != theirs[k]]
            raise BeetNetError(f"{cache.path} holds other mel settings than {self.path} was trained on "
                               f"({'; '.join(diffs)}): build the cache with the model's FeatureConfig")

    def _batch(self, x: Any, item: tuple[int, ...], where: str, expected: str) -> tuple[torch.Tensor, bool]:
        """A batch on the model's device, and whether `x` was a single item of shape `item`."""
        check_array(x, where, expected, item)
        item_dims = len(item)
        shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        if len(shape) > item_dims + 1:
            raise BeetNetError(f"{where} expects {expected}: one, or a batch of them, not an array of shape {shape}")
        t = torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x), dtype=torch.float32)
        single = t.dim() == item_dims
        return (t.unsqueeze(0) if single else t).to(self.device), single

    def _bounds(self) -> tuple[float, float]:
        """The feature dB range in standardised units: where the metric clamps."""
        lo, hi = self.config.features.db_range
        return (lo - self.stats["mean"]) / self.stats["std"], (hi - self.stats["mean"]) / self.stats["std"]

    @torch.no_grad()
    def encode(self, mel_db: Any, refine: bool = True) -> torch.Tensor:
        """dB spectrogram(s) (…, n_mels, frames) -> latent(s) (…, latent), on the CPU.

        With `refine_steps` in the config (preset `best`), each code is then fitted to its clip by
        L1 descent through the frozen decoder; `refine=False` gives the plain encoder's code.
        """
        shape = self.config.features.shape
        x, single = self._batch(mel_db, shape, "Run.encode", f"dB spectrogram(s) of shape (…, {shape[0]}, {shape[1]})")
        x = (x - self.stats["mean"]) / self.stats["std"]
        m = self.config.model
        if refine and m.refine_steps > 0:
            z = fit_codes(self.model, x, m.refine_steps, m.refine_lr, self._bounds())
        else:
            z = self.model.encode(x)
        z = z.float().cpu()
        return z[0] if single else z

    @torch.no_grad()
    def decode(self, z: Any) -> torch.Tensor:
        """latent(s) -> dB spectrogram(s), clamped to the feature range, on the CPU."""
        d = self.config.model.latent_dim
        t, single = self._batch(z, (d,), "Run.decode", f"latent code(s) of shape (…, {d})")
        y = self.model.decode(t).float() * self.stats["std"] + self.stats["mean"]
        y = y.clamp(*self.config.features.db_range).cpu()
        return y[0] if single else y

    def reconstruct(self, mel_db: Any, refine: bool = True) -> torch.Tensor:
        return self.decode(self.encode(mel_db, refine))


def load_run(run_dir: Path, which: str = "best", device: str | None = None) -> Run:
    """The trained model in `run_dir` (`best` by validation L1, or `last`), ready to encode and decode."""
    if which not in CHECKPOINTS:
        raise ValueError(f"which must be one of {', '.join(CHECKPOINTS)}, not {which!r}")
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise BeetNetError(f"{run_dir} is a file: pass the run folder that holds it ({run_dir.parent})")
    if (run_dir / MARKERS["cache"]).is_file() or (run_dir / MARKERS["clips"]).is_file():
        raise BeetNetError(f"{run_dir} is a mel cache or a clip folder, not a run: pass the run folder that "
                           "training wrote (the one with last.pt and best.pt)")
    ckpt = load_checkpoint(run_dir, which)
    if ckpt is None:
        raise BeetNetError(f"no checkpoint in {run_dir}: train first (python -m beetnet_utils train --run {run_dir})")
    return Run(ckpt, Path(run_dir), pick_device(device))


def run_summary(run_dir: Path) -> str:
    """What is in a run folder and how far it got, for a notebook."""
    run_dir = Path(run_dir)
    lines = [f"run folder: {run_dir}"]
    for f in sorted(run_dir.glob("*")):
        if not f.name.startswith("."):
            lines.append(f"  {f.name:<14} {f.stat().st_size / 2**20:7.1f} MB")
    ckpt = load_checkpoint(run_dir)
    if ckpt:
        best = min(ckpt["history"], key=lambda h: h["val_l1"])
        lines.append(f"trained {ckpt['epoch']} epochs; best val L1 {best['val_l1']:.4f} at epoch {best['epoch']}")
    return "\n".join(lines)
