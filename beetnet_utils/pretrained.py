"""The pretrained BeetNet the package ships: `load_pretrained()`, and the export that wrote it.

benchmarks/pretrain.py trains it on the corpus of benchmarks/build_corpus.py; docs/MODEL_CARD.md
says on what, how and how well. The file is data from elsewhere like any checkpoint: its bytes must
have the SHA-256 held here before torch's safe unpickler reads them, and they are read once, so the
file checked is the file loaded.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

from .config import DEFAULT_PRESET, FINE_TUNE_LR, Config, with_preset
from .run import PRETRAINED_KEY, ForeignCheckpoint, Run, load_checkpoint, read_plain, save_checkpoint
from .runtime import pick_device
from .storage import BeetNetError

PRETRAINED_PATH = Path(__file__).parent / "pretrained" / "beetnet-pretrained.pt"
PRETRAINED_SHA256 = "fb1c91cbe01fe5ca6ba16c8fbdb4b7e6c865c862c53692dccbc12291f2fc94aa"
PRETRAINED_FORMAT = "beetnet-pretrained-1"
# what the file holds besides the weights (Run reads config, stats, history, epoch; the rest is for the card)
KEEP = ("config", "stats", "epoch", "history", "model")


def export_pretrained(run_dir: Path, out: Path, corpus: dict) -> str:
    """The best checkpoint of a pretraining run as the package's weights file (no optimizer, no random
    states), written atomically; returns its SHA-256 for PRETRAINED_SHA256."""
    ckpt = load_checkpoint(Path(run_dir), "best")
    if ckpt is None:
        raise BeetNetError(f"no checkpoint in {run_dir}: pretrain first")
    weights = {k: ckpt[k] for k in KEEP} | {"format": PRETRAINED_FORMAT, "cache_key": PRETRAINED_KEY,
                                            "corpus": corpus}
    weights["history"] = [{k: h[k] for k in ("epoch", "train_l1", "val_l1", "val_l1_db", "seconds")}
                          for h in ckpt["history"]]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(weights, Path(out))
    return hashlib.sha256(Path(out).read_bytes()).hexdigest()


def load_pretrained(device: str | None = None, path: Path | None = None, sha256: str = PRETRAINED_SHA256) -> Run:
    """The pretrained BeetNet, offline: a `Run` that encodes, decodes and reconstructs like a trained one.
    A file whose SHA-256 is not the one this version ships (changed, swapped, torn) is refused in one line."""
    path = Path(path or PRETRAINED_PATH)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BeetNetError(f"the pretrained weights are missing at {path} ({exc.strerror}): restore them with "
                           "`git checkout -- beetnet_utils/pretrained`, or reinstall BeetNet") from None
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise BeetNetError(f"{path} is not the pretrained BeetNet this version ships (SHA-256 {found[:12]}…, "
                           f"expected {sha256[:12]}…): it was changed or swapped; restore it with "
                           "`git checkout -- beetnet_utils/pretrained`")
    weights = read_plain(path, io.BytesIO(data))
    if not isinstance(weights, dict) or weights.get("format") != PRETRAINED_FORMAT:
        raise ForeignCheckpoint(f"{path} is not a BeetNet pretrained weights file of format {PRETRAINED_FORMAT}")
    return Run(weights, path, pick_device(device))


def fine_tune_config(cfg: Config) -> Config:
    """`cfg` set to fine-tune the shipped model: `best`'s training settings on the pretrained architecture, its
    weights as the start, at FINE_TUNE_LR. The statistics are re-fitted: the run standardises with its cache's,
    as any run does (docs/RESULTS.md measures the pretrained model both ways, and the learning rates)."""
    model = load_pretrained().config.model
    return with_preset(cfg, DEFAULT_PRESET).replace(model=model, train={"init": "pretrained", "lr": FINE_TUNE_LR})
