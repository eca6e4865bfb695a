"""Training with resume: the train split on the device, a checkpoint every epoch, on one process or several.

In the shape of descript-audio-codec's scripts/train.py: a small `State`, then `load` (new or
resumed), `train_epoch`, `validate`, `checkpoint`, and `train`, which only wires them.
What it reads, batch by batch, is batches.py's: the splits resident on the device, or streamed from
the cache when they are too big. On CUDA it runs float16 autocast with a GradScaler; the
same code runs on the CPU (bfloat16 autocast when `amp='on'`), which is how the tests exercise
it. Running `train` again on the same run folder continues from the last intact checkpoint,
exactly as if it had never stopped.

Under torchrun (`train --gpus N`, see distributed.py) each of the N ranks trains on its share of
every batch of the epoch's one permutation (batch_size / N clips: the global batch stays the
preset's), DistributedDataParallel averages the gradients, validation is shared out and summed, and
rank 0 alone logs, writes the run folder and holds its lock. Each rank draws its own augmentation and
dropout, from seeds that depend on its rank, and every rank's random states go into the checkpoint,
so a run resumed on as many processes ends bit-equal to one that never stopped. Resumed on another
number of processes it continues on the same permutations and learning rates, but not bit-equal: the
ranks draw their random moves and dropout anew (their saved streams belong to other shares of the
batch), and the gradients and losses are summed in another order (float rounding).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .augment import Augment
from .batches import Batches, Resident, Streamed, default_resident_bytes, split_data
from .cache import MelCache
from .config import Config, TrainConfig
from .distributed import SINGLE, Group, joined
from .model import Autoencoder, build_model
from .plots import loss_curves
from .pretrained import load_pretrained
from .run import CHECKPOINT_FORMAT, CHECKPOINTS, check_resumable, claim_run_dir, load_checkpoint, save_checkpoint
from .runtime import pick_device
from .storage import BeetNetError, atomic_write, reader_lock, writer_lock

Log = Callable[[str], None]
T = TypeVar("T")
RANK_SEED = 1000  # rank r draws its augmentation and dropout from seed + r * RANK_SEED (rank 0: the run's own)


def quiet(message: str) -> None:
    """The log of the ranks that are not rank 0."""


@dataclass(frozen=True)
class Precision:
    """float16 on CUDA (a T4 has no fast bfloat16); bfloat16 on the CPU, only when asked ('on')."""

    enabled: bool
    dtype: torch.dtype

    @classmethod
    def choose(cls, device: torch.device, mode: str) -> Precision:
        if device.type == "cuda":
            return cls(mode != "off", torch.float16)
        return cls(mode == "on", torch.bfloat16)

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.enabled)

    def describe(self) -> str:
        return f"AMP {str(self.dtype).split('.')[-1]}" if self.enabled else "float32"


@dataclass
class State:
    """What changes while training: all a checkpoint needs to continue exactly. `net` is what the batches go
    through: the model itself, or DistributedDataParallel around it."""

    model: Autoencoder
    net: nn.Module
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


def pretrained_weights(cfg: Config) -> dict:
    """The shipped model's weights, for a new run that fine-tunes it: its architecture must be `cfg`'s."""
    pretrained = load_pretrained()
    if pretrained.config.model != cfg.model:
        raise BeetNetError("init pretrained needs the pretrained model's architecture: train it with "
                           "Session.train(init='pretrained') or `train --init pretrained`, which set it")
    return pretrained.model.state_dict()


def random_states(state: State) -> dict:
    """This rank's random sources: dropout's (torch's, CUDA's) and each augmentation's."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "augment": state.augment.state_dict()}


def restore_random_states(state: State, rng: dict) -> None:
    state.augment.load_state_dict(rng["augment"] if "augment" in rng else {"time": rng["shift"]})  # older: time only
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():  # dropout on the GPU draws from these
        torch.cuda.set_rng_state_all(rng["cuda"])


def load(run_dir: Path, cfg: Config, cache: MelCache, model: Autoencoder, x_train: Resident | Streamed,
         precision: Precision, log: Log, group: Group = SINGLE) -> State:
    """A new state (the model initialised from the train split when it wants to be), or the saved one.
    Every rank reads the same checkpoint; rank 0's weights reach the others through `group.wrap`."""
    tc, dev = cfg.train, x_train.device
    model = model.to(dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision.enabled and precision.dtype == torch.float16)
    seed = tc.seed + group.rank * RANK_SEED
    augment = Augment(tc.shift_frames, tc.shift_mels, tc.gain_db, tc.tilt_db, cache.std, seed, tc.eq_db)
    state = State(model, model, model.configure_optimizers(tc), scaler, augment)
    if group.rank:
        torch.manual_seed(seed)  # this rank's dropout (rank 0 keeps the stream of a single process)
    ckpt = load_checkpoint(run_dir, log=log)
    if ckpt is None:
        if tc.init == "pretrained":  # every rank reads the same file: the same start
            model.load_state_dict(pretrained_weights(cfg))
        elif group.main:
            model.init_from_data(x_train.sample(tc.seed))
        state.net = group.wrap(model, dev)
        return state
    check_resumable(ckpt, cfg.to_dict(), cache.key, run_dir)
    model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scaler.load_state_dict(ckpt["scaler"])
    saved = ckpt.get("processes", 1)
    if saved == group.size:
        restore_random_states(state, ckpt["rng"]["ranks"][group.rank] if saved > 1 else ckpt["rng"])
    else:
        log(f"note: this run was trained in {saved} process(es) and continues in {group.size}: the same batches and "
            "learning rates, but the ranks draw their augmentation and dropout anew and sum in another order, so it "
            f"will not be bit-equal to a run that stayed at {saved}")
    state.history, state.best_val = ckpt["history"], ckpt["best_val"]
    log(f"resuming {run_dir} after epoch {ckpt['epoch']} (best val L1 {state.best_val:.4f})")
    planned = ckpt["config"]["train"].get("epochs", tc.epochs)
    if tc.schedule == "cosine" and planned != tc.epochs:
        log(f"note: this run was training to {planned} epochs and now to {tc.epochs}: its cosine schedule changes "
            f"from epoch {ckpt['epoch'] + 1} on, so it will not match a run started with {tc.epochs}")
    state.net = group.wrap(model, dev)
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


def progress_bar(items: Iterable[T], total: int, what: str, shown: bool) -> Iterable[T]:
    """A bar a person watches, gone when its epoch ends; `items` as they are when no one watches."""
    return tqdm(items, total=total, desc=what, leave=False) if shown else items


def train_epoch(state: State, x: Resident | Streamed, order: torch.Tensor, epoch: int, tc: TrainConfig,
                precision: Precision, bounds: tuple[float, float] | None, progress: bool,
                group: Group = SINGLE) -> float:
    """One pass over `order` (this rank's share of the epoch's batches); returns the mean train L1 over every
    rank (without the flux term)."""
    clamp = clamp_to(bounds)
    state.model.train()
    total = torch.zeros((), device=x.device)
    for xb in progress_bar(x.batches(order), len(order), f"epoch {epoch}/{tc.epochs}", progress):
        xb = state.augment(xb)
        with precision.autocast(x.device):
            loss, l1 = objective(clamp(state.net(xb).float()), xb.float(), tc.flux_weight)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), tc.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        total += l1.detach()
    return float(group.sum(total)) / (group.size * len(order))


@torch.no_grad()
def validate(model: Autoencoder, x: Resident | Streamed, precision: Precision,
             bounds: tuple[float, float] | None = None, batch: int = 256, group: Group = SINGLE) -> float:
    """Mean absolute error on standardised values over a whole split (the output clamped to `bounds`); each rank
    scores its share of the clips, and the sums are added up."""
    model.eval()
    clamp = clamp_to(bounds)
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for xb in x.chunks(group.shard(len(x)), batch):
        with precision.autocast(x.device):
            pred = clamp(model(xb).float())
        total += (pred - xb.float()).abs().sum(dtype=torch.float64)
    return float(group.sum(total)) / (len(x) * math.prod(x.shape[1:]))


def checkpoint(state: State, run_dir: Path, ident: dict, is_best: bool, group: Group = SINGLE) -> None:
    """last.pt every epoch, best.pt when validation improved (both complete, both resumable), history.json;
    written by rank 0, with every rank's random states."""
    ranks = group.gather(random_states(state))
    if not group.main:
        return
    rng = ranks[0] | ({"ranks": ranks} if group.size > 1 else {})
    ckpt = ident | {"format": CHECKPOINT_FORMAT, "epoch": state.epoch, "history": state.history,
                    "best_val": state.best_val, "model": state.model.state_dict(),
                    "optimizer": state.optimizer.state_dict(), "scaler": state.scaler.state_dict(),
                    "rng": rng, "processes": group.size}
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


def check_shares(batch_size: int, processes: int) -> None:
    """Refuse a batch that `processes` ranks cannot share equally (the global batch must stay the preset's)."""
    if batch_size % processes:
        raise BeetNetError(f"a batch of {batch_size} does not split into {processes} equal parts: use a --batch-size "
                           f"that {processes} divides")


def check_features(cfg: Config, cache: MelCache) -> None:
    """Refuse, before anything is written, settings whose features are not the cache's: the model would
    train and score on spectrograms other than the ones the settings describe."""
    if cfg.features != cache.features:
        theirs, ours = dataclasses.asdict(cache.features), dataclasses.asdict(cfg.features)
        diffs = [f"{k} {theirs[k]} in the cache, {ours[k]} in the settings" for k in ours if ours[k] != theirs[k]]
        raise BeetNetError(f"the cache {cache.path} was built with other feature settings ({'; '.join(diffs)}): "
                           "rebuild the cache with these settings, or train with the cache's")


def train(cache: MelCache, run_dir: Path, cfg: Config, device: str | None = None, progress: bool = True,
          log: Log = print, resident_bytes: int | None = None) -> list[dict]:
    """Train (or resume) the model `cfg` describes on `cache`'s train split; returns the history.
    The run folder is locked while it trains: a second process on it is refused, naming the first.
    Under torchrun, this process is one rank of the job (see the module's docstring). The splits stay on
    the device if they fit in `resident_bytes` (default: default_resident_bytes), else they are streamed."""
    check_features(cfg, cache)
    model = new_model(cfg)
    if cfg.train.init == "pretrained" and not any((Path(run_dir) / f"{c}.pt").exists() for c in CHECKPOINTS):
        pretrained_weights(cfg)  # a new run: refuse another architecture before the run folder is made
    with joined(pick_device(device)) as (group, dev):
        check_shares(cfg.train.batch_size, group.size)
        if not group.main:
            progress, log = False, quiet
        else:
            run_dir = claim_run_dir(run_dir, cache.path)
        with writer_lock(run_dir) if group.main else contextlib.nullcontext(), reader_lock(cache.path):
            group.barrier()  # the others read the run folder once rank 0 holds it
            budget = default_resident_bytes(dev, group.size) if resident_bytes is None else resident_bytes
            history = train_locked(cache, Path(run_dir), cfg, model, dev, progress, log, group, budget)
            group.barrier()  # every rank is done before rank 0 lets the folder go
            return history


def train_locked(cache: MelCache, run_dir: Path, cfg: Config, model: Autoencoder, dev: torch.device,
                 progress: bool, log: Log, group: Group, resident_bytes: int) -> list[dict]:
    tc = cfg.train
    precision = Precision.choose(dev, tc.amp)
    x_train, x_val = split_data(cache, dev, resident_bytes)
    batches = Batches(len(x_train), tc.batch_size, tc.seed)
    if len(batches) == 0:
        raise BeetNetError(f"the train split has {len(x_train)} clips, fewer than one batch of {tc.batch_size}: "
                           "use a smaller --batch-size or more data")
    state = load(run_dir, cfg, cache, model, x_train, precision, log, group)
    bounds = tuple((v - cache.mean) / cache.std for v in cfg.features.db_range) if tc.clamp_loss else None
    ident, started = identity(cfg, cache), time.perf_counter()
    ranks = f", in {group.size} processes of {tc.batch_size // group.size}" if group.size > 1 else ""
    streamed = (f"; streamed from the cache (the splits take more than resident_bytes, {resident_bytes / 1e9:.2g} GB)"
                if isinstance(x_train, Streamed) else "")
    log(f"training on {dev} ({precision.describe()}): {len(x_train)} train clips, {len(x_val)} val clips, "
        f"{len(batches)} batches of {tc.batch_size}{ranks}{streamed}")
    first = state.epoch + 1
    for epoch in range(first, tc.epochs + 1):
        trained = sum(h["wall"] for h in state.history)  # every session's, so far
        session = time.perf_counter() - started if epoch > first else 0.0  # a session trains one epoch at least
        stop = group.share(out_of_time(tc, epoch - 1, session, trained))  # rank 0's clock decides for all
        if stop:
            log(stop)
            break
        set_learning_rate(state.optimizer, tc, epoch, trained)
        t0 = time.perf_counter()
        train_l1 = train_epoch(state, x_train, batches.share(epoch, group), epoch, tc, precision, bounds, progress,
                               group)
        seconds = time.perf_counter() - t0
        val_l1 = validate(state.model, x_val, precision, bounds, group=group)
        if not (math.isfinite(train_l1) and math.isfinite(val_l1)):
            kept = f"its checkpoints keep epoch {state.epoch}" if state.epoch else "no checkpoint was written"
            raise BeetNetError(f"training diverged in epoch {epoch} (L1 {train_l1}, val {val_l1}); {kept}: train a "
                               "new run with a lower learning rate")
        is_best, state.best_val = val_l1 < state.best_val, min(state.best_val, val_l1)
        state.history.append(group.share({
            "epoch": epoch, "train_l1": train_l1, "val_l1": val_l1, "val_l1_db": val_l1 * cache.std,
            "seconds": seconds, "wall": time.perf_counter() - t0,
            "samples_per_s": len(batches) * tc.batch_size / seconds, "lr": state.optimizer.param_groups[-1]["lr"]}))
        checkpoint(state, run_dir, ident, is_best, group)
        log(f"epoch {epoch}: train L1 {train_l1:.4f}, val L1 {val_l1:.4f} ({val_l1 * cache.std:.2f} dB)"
            f"{' *best*' if is_best else ''}, {seconds:.1f} s, {state.history[-1]['samples_per_s']:.0f} samples/s")
    if state.history and group.main:
        plot_history(state.history, run_dir / "loss.png")
    return state.history
