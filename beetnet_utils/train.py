"""Training with resume: the whole train split on the device, checkpoints every epoch.

One loop in the spirit of nanoGPT's train.py. Batches are index permutations of one
tensor that lives on the device (no DataLoader, no per-file reads, no per-batch
copies). On CUDA it runs float16 autocast with a GradScaler; the same code runs on
the CPU (bfloat16 autocast when `amp='on'`), which is how the tests exercise it.
Running `train` again on the same run folder continues from the last intact checkpoint.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import runtime
from .config import Config
from .features import MelCache
from .model import build_model
from .pca import shift_time
from .model import refine as refine_codes
from .storage import BeetNetError, atomic_write

CHECKPOINT_FORMAT = 1
# Fields that may change between a run and its resumption; anything else must match.
RESUMABLE_CHANGES = {"train.epochs", "train.minutes", "train.amp", "profile"}


def _amp(device: torch.device, mode: str) -> tuple[bool, torch.dtype]:
    """float16 on CUDA (a T4 has no fast bfloat16); bfloat16 on the CPU, only when asked ('on')."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"amp must be auto, on or off, not {mode!r}")
    if device.type == "cuda":
        return mode != "off", torch.float16
    return mode == "on", torch.bfloat16


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """'train.lr 0.001 -> 0.002' for every field that differs and may not change on resume."""
    a, b = _flat(saved), _flat(current)
    return [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
            if k not in RESUMABLE_CHANGES and json.dumps(a.get(k)) != json.dumps(b.get(k))]


def load_checkpoint(run_dir: Path, name: str = "last") -> dict | None:
    """The checkpoint `name`, or for `last` the newest intact one; None if the run is new."""
    candidates = ["last", "best"] if name == "last" else [name]
    for candidate in candidates:
        path = Path(run_dir) / f"{candidate}.pt"
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a torn file from a copy or a dying Drive mount
            print(f"warning: {path} is unreadable ({type(exc).__name__}); trying the next checkpoint")
    return None


@dataclass
class Batches:
    """Seeded index permutations: epoch e's order depends only on (seed, e), so resume is exact."""

    n: int
    batch_size: int
    seed: int

    def __len__(self) -> int:
        return self.n // self.batch_size  # drop_last, as the original

    def epoch(self, e: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + e)
        return torch.randperm(self.n, generator=g)[: len(self) * self.batch_size].view(len(self), self.batch_size)


@torch.no_grad()
def evaluate_l1(model: torch.nn.Module, x: torch.Tensor, amp: tuple[bool, torch.dtype], batch: int = 256,
                bounds: tuple[float, float] | None = None) -> float:
    """Mean absolute error on standardised values over a whole split (output clamped to `bounds`)."""
    model.eval()
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        with torch.autocast(x.device.type, dtype=amp[1], enabled=amp[0]):
            pred = model(xb).float()
        if bounds:
            pred = pred.clamp(*bounds)
        total += (pred - xb.float()).abs().sum(dtype=torch.float64)
    model.train()
    return float(total) / x.numel()


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Adam as the original; for `best`, AdamW with weight decay on the non-linear correction only."""
    tc = cfg.train
    if not hasattr(model, "correction_parameters"):
        return torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tc.betas)
    correction = {id(p) for p in model.correction_parameters()}
    linear = tc.lr * tc.linear_lr_scale
    groups = [{"params": [p for p in model.parameters() if id(p) not in correction], "weight_decay": 0.0,
               "lr": linear, "base_lr": linear},
              {"params": model.correction_parameters(), "weight_decay": tc.weight_decay, "lr": tc.lr, "base_lr": tc.lr}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=tc.betas)


def set_learning_rate(opt: torch.optim.Optimizer, cfg: Config, epoch: int, trained_seconds: float) -> None:
    """Constant, or cosine over the epochs or the time budget, whichever is further along.

    Time counts the training seconds of every session so far, so a resumed run picks up the
    schedule where it stopped (the budget's stop rule, by contrast, is per session).
    """
    tc = cfg.train
    if tc.schedule == "constant":
        return
    if tc.schedule != "cosine":
        raise ValueError(f"schedule must be constant or cosine, not {tc.schedule!r}")
    progress = (epoch - 1) / tc.epochs
    if tc.minutes:
        progress = max(progress, trained_seconds / (tc.minutes * 60))
    for group in opt.param_groups:
        base = group.get("base_lr", tc.lr)
        group["lr"] = base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def plot_history(history: list[dict], path: Path) -> Path:
    from .plots import loss_curves

    fig = loss_curves({"run": history})
    fig.savefig(path, dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def train(cache: MelCache, run_dir: Path, cfg: Config, device: str | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> list[dict]:
    """Train (or resume) the model `cfg` describes on `cache`'s train split; returns the history."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):  # left by a process killed mid-write
        stale.unlink()
    dev = runtime.device(device)
    amp = _amp(dev, cfg.train.amp)
    tc = cfg.train
    identity = {"config": cfg.to_dict(), "cache_key": cache.key, "feature_hash": cache.meta["feature_hash"],
                "stats": {"mean": cache.mean, "std": cache.std}}

    torch.manual_seed(tc.seed)
    model = build_model(cfg).to(dev)
    opt = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp[0] and amp[1] == torch.float16)
    history: list[dict] = []
    best = math.inf

    ckpt = load_checkpoint(run_dir)
    if ckpt is not None:
        diffs = config_differences(ckpt["config"], identity["config"])
        if ckpt["cache_key"] != identity["cache_key"]:
            diffs.append("the mel cache (other clips, features or split)")
        if diffs:
            raise BeetNetError(f"{run_dir} holds a run with other settings ({'; '.join(diffs)}): "
                               "use a new --run folder or the original settings")
        model.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:
            opt.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        history, best = ckpt["history"], ckpt["best_val"]
        log(f"resuming {run_dir} after epoch {ckpt['epoch']} (best val L1 {best:.4f})")

    data_dtype = torch.float16 if dev.type == "cuda" else torch.float32  # 18,825 clips: ~230 MB in float16
    x_train = cache.standardised("train", dev, data_dtype)
    x_val = cache.standardised("val", dev, data_dtype)
    if ckpt is None and hasattr(model, "init_from_data"):
        model.init_from_data(x_train)  # best: the linear path starts at PCA of the train split
    batches = Batches(len(x_train), tc.batch_size, tc.seed)
    if len(batches) == 0:
        raise BeetNetError(f"the train split has {len(x_train)} clips, fewer than one batch of {tc.batch_size}: "
                           "use a smaller --batch-size or more data")
    autocast = (lambda: torch.autocast(dev.type, dtype=amp[1])) if amp[0] else nullcontext
    f = cfg.features
    bounds = ((f.db_min - cache.mean) / cache.std, (f.db_max - cache.mean) / cache.std) if tc.clamp_loss else None
    clamp = (lambda y: y.clamp(*bounds)) if bounds else (lambda y: y)
    started = time.perf_counter()
    log(f"training on {dev} ({'AMP ' + str(amp[1]).split('.')[-1] if amp[0] else 'float32'}): "
        f"{len(x_train)} train clips, {len(x_val)} val clips, {len(batches)} batches of {tc.batch_size}")

    for epoch in range(len(history) + 1, tc.epochs + 1):
        set_learning_rate(opt, cfg, epoch, sum(h.get("wall", h["seconds"]) for h in history))  # every session
        t0 = time.perf_counter()
        total = torch.zeros((), device=dev)
        model.train()
        for b, idx in enumerate(tqdm(batches.epoch(epoch), desc=f"epoch {epoch}/{tc.epochs}", leave=False,
                                     disable=not progress)):
            xb = x_train[idx.to(dev)]
            if tc.shift_frames:  # a seeded, resumable random time shift per batch
                shift = (epoch * 7919 + b * 104729 + tc.seed) % (2 * tc.shift_frames + 1) - tc.shift_frames
                xb = shift_time(xb, shift)
            with autocast():
                z = model.encode(xb)
                loss = F.l1_loss(clamp(model.decode(z).float()), xb.float())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(opt)
            scaler.update()
            total += loss.detach()
        train_l1 = float(total) / len(batches)
        seconds = time.perf_counter() - t0
        val_l1 = evaluate_l1(model, x_val, amp, bounds=bounds) if len(x_val) else float("nan")
        history.append({"epoch": epoch, "train_l1": train_l1, "val_l1": val_l1, "val_l1_db": val_l1 * cache.std,
                        "seconds": seconds, "wall": time.perf_counter() - t0,
                        "samples_per_s": len(batches) * tc.batch_size / seconds,
                        "lr": opt.param_groups[-1]["lr"]})
        is_best = val_l1 < best
        best = min(best, val_l1)
        state = identity | {"format": CHECKPOINT_FORMAT, "epoch": epoch, "history": history, "best_val": best,
                            "model": model.state_dict()}
        if is_best:  # weights only: best.pt is for evaluation, last.pt for resuming
            atomic_write(run_dir / "best.pt", lambda p: torch.save(state, p))
        atomic_write(run_dir / "last.pt", lambda p: torch.save(
            state | {"optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                     "rng": {"torch": torch.get_rng_state()}}, p))
        atomic_write(run_dir / "history.json", lambda p: p.write_text(json.dumps(history, indent=1)))
        log(f"epoch {epoch}: train L1 {train_l1:.4f}, val L1 {val_l1:.4f} ({val_l1 * cache.std:.2f} dB)"
            f"{' *best*' if is_best else ''}, {seconds:.1f} s, {history[-1]['samples_per_s']:.0f} samples/s")
        if tc.minutes is not None and time.perf_counter() - started > tc.minutes * 60 and epoch < tc.epochs:
            log(f"time budget of {tc.minutes} min reached after epoch {epoch}: stopping; run again to continue")
            break
    if history:
        plot_history(history, run_dir / "loss.png")
    return history


# --- using a trained run -----------------------------------------------------------------------

class Run:
    """A trained model behind a dB-in, dB-out interface; standardisation stays inside."""

    def __init__(self, ckpt: dict, path: Path, device: torch.device):
        self.path, self.device = path, device
        self.config = Config.from_dict(ckpt["config"])
        self.stats = ckpt["stats"]
        self.history: list[dict] = ckpt["history"]
        self.epoch: int = ckpt["epoch"]
        self.cache_key: str = ckpt["cache_key"]
        self.model = build_model(self.config).to(device).eval()
        self.model.load_state_dict(ckpt["model"])

    def _batch(self, x: Any, item_dims: int) -> tuple[torch.Tensor, bool]:
        """A batch on the model's device, and whether `x` was a single item."""
        t = torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x), dtype=torch.float32)
        single = t.dim() == item_dims
        return (t.unsqueeze(0) if single else t).to(self.device), single

    @torch.no_grad()
    def encode(self, mel_db: Any, refine: bool = True) -> torch.Tensor:
        """dB spectrogram(s) (…, n_mels, frames) -> latent(s) (…, latent), on the CPU.

        With `refine_steps` in the config (preset `best`), each code is then fitted to its clip by
        L1 descent through the frozen decoder; `refine=False` gives the plain encoder's code.
        """
        x, single = self._batch(mel_db, 2)
        x = (x - self.stats["mean"]) / self.stats["std"]
        m = self.config.model
        if refine and m.refine_steps > 0:
            f, mean, std = self.config.features, self.stats["mean"], self.stats["std"]
            z = refine_codes(self.model, x, m.refine_steps, m.refine_lr, ((f.db_min - mean) / std, (f.db_max - mean) / std))
        else:
            z = self.model.encode(x)
        z = z.float().cpu()
        return z[0] if single else z

    @torch.no_grad()
    def decode(self, z: Any) -> torch.Tensor:
        """latent(s) -> dB spectrogram(s), clamped to the feature range, on the CPU."""
        t, single = self._batch(z, 1)
        y = self.model.decode(t).float() * self.stats["std"] + self.stats["mean"]
        f = self.config.features
        y = y.clamp(f.db_min, f.db_max).cpu()
        return y[0] if single else y

    def reconstruct(self, mel_db: Any, refine: bool = True) -> torch.Tensor:
        return self.decode(self.encode(mel_db, refine))


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


def load_run(run_dir: Path, which: str = "best", device: str | None = None) -> Run:
    """The trained model in `run_dir` (`best` by validation L1, or `last`), ready to encode and decode."""
    ckpt = load_checkpoint(Path(run_dir), which)
    if ckpt is None:
        raise BeetNetError(f"no checkpoint in {run_dir}: train first (python -m beetnet_utils train --run {run_dir})")
    return Run(ckpt, Path(run_dir), runtime.device(device))
