"""Training with resume: the whole train split on the device, a checkpoint every epoch.

In the shape of descript-audio-codec's scripts/train.py: a small `State`, then `load` (new or
resumed), `train_epoch`, `validate`, `checkpoint`, and `train`, which only wires them.
Batches are index permutations of one tensor that lives on the device (no DataLoader, no
per-file reads, no per-batch copies). On CUDA it runs float16 autocast with a GradScaler; the
same code runs on the CPU (bfloat16 autocast when `amp='on'`), which is how the tests exercise
it. Running `train` again on the same run folder continues from the last intact checkpoint,
exactly as if it had never stopped.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .augment import Augment
from .config import Config, TrainConfig
from .features import MelCache
from .model import Autoencoder, build_model
from .plots import loss_curves
from .run import CHECKPOINT_FORMAT, check_resumable, claim_run_dir, load_checkpoint, save_checkpoint
from .runtime import device as pick_device
from .storage import BeetNetError, atomic_write, writer_lock

Log = Callable[[str], None]


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Precision:
    """float16 on CUDA (a T4 has no fast bfloat16); bfloat16 on the CPU, only when asked ('on')."""

    enabled: bool
    dtype: torch.dtype

    @classmethod
    def choose(cls, device: torch.device, mode: str) -> "Precision":
        if device.type == "cuda":
            return cls(mode != "off", torch.float16)
        return cls(mode == "on", torch.bfloat16)

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.enabled)

    def describe(self) -> str:
        return f"AMP {str(self.dtype).split('.')[-1]}" if self.enabled else "float32"


@dataclass
class State:
    """What changes while training: all a checkpoint needs to continue exactly."""

    model: Autoencoder
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    augment: Augment
    history: list[dict] = field(default_factory=list)
    best_val: float = math.inf

    @property
    def epoch(self) -> int:
        return len(self.history)


def identity(cfg: Config, cache: MelCache) -> dict:
    """What a checkpoint must match to be continued: every setting, and the cache it trains on."""
    return {"config": cfg.to_dict(), "cache_key": cache.key, "feature_hash": cache.meta["feature_hash"],
            "stats": {"mean": cache.mean, "std": cache.std}}


def new_model(cfg: Config) -> Autoencoder:
    """The model `cfg` describes, with its seeded initial weights. Built before anything is written, so a
    config that cannot be built (a layout the latent does not fit) is refused before the run folder is made."""
    torch.manual_seed(cfg.train.seed)
    return build_model(cfg)


def load(run_dir: Path, cfg: Config, cache: MelCache, model: Autoencoder, x_train: torch.Tensor,
         precision: Precision, log: Log) -> State:
    """A new state (the model initialised from the train split when it wants to be), or the saved one."""
    tc = cfg.train
    model = model.to(x_train.device)
    scaler = torch.amp.GradScaler(x_train.device.type, enabled=precision.enabled and precision.dtype == torch.float16)
    augment = Augment(tc.shift_frames, tc.shift_mels, tc.gain_db, tc.tilt_db, cache.std, tc.seed, tc.eq_db)
    state = State(model, model.configure_optimizers(tc), scaler, augment)
    ckpt = load_checkpoint(run_dir, log=log)
    if ckpt is None:
        model.init_from_data(x_train)
        return state
    check_resumable(ckpt, cfg.to_dict(), cache.key, run_dir)
    model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt["rng"]
    state.augment.load_state_dict(rng["augment"] if "augment" in rng else {"time": rng["shift"]})  # older: time only
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():  # dropout on the GPU draws from these
        torch.cuda.set_rng_state_all(rng["cuda"])
    state.history, state.best_val = ckpt["history"], ckpt["best_val"]
    log(f"resuming {run_dir} after epoch {ckpt['epoch']} (best val L1 {state.best_val:.4f})")
    planned = ckpt["config"]["train"].get("epochs", tc.epochs)
    if tc.schedule == "cosine" and planned != tc.epochs:
        log(f"note: this run was training to {planned} epochs and now to {tc.epochs}: its cosine schedule changes "
            f"from epoch {ckpt['epoch'] + 1} on, so it will not match a run started with {tc.epochs}")
    return state


def set_learning_rate(opt: torch.optim.Optimizer, tc: TrainConfig, epoch: int, trained_seconds: float) -> None:
    """Constant, or cosine from each group's `base_lr` down to `lr_floor` of it over the run's epochs.

    The schedule depends on the epoch alone, so a run stopped by a session's `minutes` and resumed
    follows the same learning rates as a run that never stopped (bit for bit on the CPU). With a
    whole-run `budget_minutes`, it also anneals over the training time of every session so far
    (`trained_seconds`), whichever is further along: fixed when the run starts, since the budget is
    part of the run's settings, but timed, so not bit-exact across machines.
    """
    if tc.schedule == "constant":
        return
    progress = (epoch - 1) / tc.epochs
    if tc.budget_minutes:
        progress = max(progress, trained_seconds / (tc.budget_minutes * 60))
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    for group in opt.param_groups:
        group["lr"] = group.get("base_lr", tc.lr) * (tc.lr_floor + (1 - tc.lr_floor) * cosine)


def out_of_time(tc: TrainConfig, done: int, session_seconds: float, trained_seconds: float) -> str | None:
    """Why training stops after epoch `done`, before its last one, if it does: the run's budget or this session's."""
    if tc.budget_minutes is not None and trained_seconds > tc.budget_minutes * 60:
        return f"the run's time budget of {tc.budget_minutes:g} min spent after epoch {done}: the run is complete"
    if tc.minutes is not None and session_seconds > tc.minutes * 60:
        return f"time budget of {tc.minutes:g} min reached after epoch {done}: stopping; run again to continue"
    return None


def clamp_to(bounds: tuple[float, float] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    return (lambda y: y.clamp(*bounds)) if bounds else (lambda y: y)


def flux(x: torch.Tensor) -> torch.Tensor:
    """How much each band moves from frame to frame: the mean |difference| over time, (batch, n_mels)."""
    return x.diff(dim=-1).abs().mean(dim=-1)


def objective(pred: torch.Tensor, target: torch.Tensor, flux_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss, L1 plus `flux_weight` times how far each band's flux is from the clip's own; and its L1 part.

    Where a clip's detail could fall in several places, L1 scores a flat average as well as any sharp
    guess, and a decoder trained on many clips drifts to the average: onsets and repeated notes blur
    (measured: real clips move 2.8 dB per frame, reconstructions 2.1). The flux term asks every band
    to move as much as the clip does; L1 still decides where.
    """
    l1 = F.l1_loss(pred, target)
    if not flux_weight:
        return l1, l1
    return l1 + flux_weight * F.l1_loss(flux(pred), flux(target)), l1


def train_epoch(state: State, x: torch.Tensor, batches: Batches, epoch: int, tc: TrainConfig, precision: Precision,
                bounds: tuple[float, float] | None, progress: bool) -> float:
    """One pass over the train split in the epoch's seeded order; returns the mean train L1 (without the flux term)."""
    model, clamp = state.model, clamp_to(bounds)
    model.train()
    total = torch.zeros((), device=x.device)
    for idx in tqdm(batches.epoch(epoch), desc=f"epoch {epoch}/{tc.epochs}", leave=False, disable=not progress):
        xb = state.augment(x[idx.to(x.device)])
        with precision.autocast(x.device):
            loss, l1 = objective(clamp(model(xb).float()), xb.float(), tc.flux_weight)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        total += l1.detach()
    return float(total) / len(batches)


@torch.no_grad()
def validate(model: Autoencoder, x: torch.Tensor, precision: Precision, bounds: tuple[float, float] | None = None,
             batch: int = 256) -> float:
    """Mean absolute error on standardised values over a whole split (the output clamped to `bounds`)."""
    model.eval()
    clamp = clamp_to(bounds)
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        with precision.autocast(x.device):
            pred = clamp(model(xb).float())
        total += (pred - xb.float()).abs().sum(dtype=torch.float64)
    return float(total) / x.numel()


def checkpoint(state: State, run_dir: Path, ident: dict, is_best: bool) -> None:
    """last.pt every epoch, best.pt when validation improved (both complete, both resumable), history.json."""
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    ckpt = ident | {"format": CHECKPOINT_FORMAT, "epoch": state.epoch, "history": state.history,
                    "best_val": state.best_val, "model": state.model.state_dict(),
                    "optimizer": state.optimizer.state_dict(), "scaler": state.scaler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(), "cuda": cuda_rng, "augment": state.augment.state_dict()}}
    if is_best:
        save_checkpoint(ckpt, run_dir / "best.pt")
    save_checkpoint(ckpt, run_dir / "last.pt")
    atomic_write(run_dir / "history.json", lambda p: p.write_text(json.dumps(state.history, indent=1)))


def plot_history(history: list[dict], path: Path) -> Path:
    fig = loss_curves({"run": history})
    try:
        return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90, bbox_inches="tight"))
    finally:
        plt.close(fig)


def split_tensors(cache: MelCache, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and validation splits, standardised, resident on the device (float16 on CUDA: ~230 MB full)."""
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    x_train, x_val = cache.standardised("train", dev, dtype), cache.standardised("val", dev, dtype)
    if not len(x_val):
        raise BeetNetError(f"the cache {cache.path} has no validation clips: rebuild it with the `cache` step")
    return x_train, x_val


def train(cache: MelCache, run_dir: Path, cfg: Config, device: str | None = None, progress: bool = True,
          log: Log = print) -> list[dict]:
    """Train (or resume) the model `cfg` describes on `cache`'s train split; returns the history.
    The run folder is locked while it trains: a second process on it is refused, naming the first."""
    model = new_model(cfg)
    run_dir = claim_run_dir(run_dir, cache.path)
    with writer_lock(run_dir):
        return train_locked(cache, run_dir, cfg, model, device, progress, log)


def train_locked(cache: MelCache, run_dir: Path, cfg: Config, model: Autoencoder, device: str | None,
                 progress: bool, log: Log) -> list[dict]:
    tc = cfg.train
    dev = pick_device(device)
    precision = Precision.choose(dev, tc.amp)
    x_train, x_val = split_tensors(cache, dev)
    batches = Batches(len(x_train), tc.batch_size, tc.seed)
    if len(batches) == 0:
        raise BeetNetError(f"the train split has {len(x_train)} clips, fewer than one batch of {tc.batch_size}: "
                           "use a smaller --batch-size or more data")
    state = load(run_dir, cfg, cache, model, x_train, precision, log)
    bounds = tuple((v - cache.mean) / cache.std for v in cfg.features.db_range) if tc.clamp_loss else None
    ident, started = identity(cfg, cache), time.perf_counter()
    log(f"training on {dev} ({precision.describe()}): {len(x_train)} train clips, {len(x_val)} val clips, "
        f"{len(batches)} batches of {tc.batch_size}")
    first = state.epoch + 1
    for epoch in range(first, tc.epochs + 1):
        trained = sum(h["wall"] for h in state.history)  # every session's, so far
        session = time.perf_counter() - started if epoch > first else 0.0  # a session trains one epoch at least
        stop = out_of_time(tc, epoch - 1, session, trained)
        if stop:
            log(stop)
            break
        set_learning_rate(state.optimizer, tc, epoch, trained)
        t0 = time.perf_counter()
        train_l1 = train_epoch(state, x_train, batches, epoch, tc, precision, bounds, progress)
        seconds = time.perf_counter() - t0
        val_l1 = validate(state.model, x_val, precision, bounds)
        is_best, state.best_val = val_l1 < state.best_val, min(state.best_val, val_l1)
        state.history.append({"epoch": epoch, "train_l1": train_l1, "val_l1": val_l1, "val_l1_db": val_l1 * cache.std,
                              "seconds": seconds, "wall": time.perf_counter() - t0,
                              "samples_per_s": len(batches) * tc.batch_size / seconds,
                              "lr": state.optimizer.param_groups[-1]["lr"]})
        checkpoint(state, run_dir, ident, is_best)
        log(f"epoch {epoch}: train L1 {train_l1:.4f}, val L1 {val_l1:.4f} ({val_l1 * cache.std:.2f} dB)"
            f"{' *best*' if is_best else ''}, {seconds:.1f} s, {state.history[-1]['samples_per_s']:.0f} samples/s")
    if state.history:
        plot_history(state.history, run_dir / "loss.png")
    return state.history
