"""Held-out evaluation and the report: the model beside baselines fitted on the same train split, its
realism rows, the report's schema (below), its tables, and writing it.

The original reported only a training loss. Here every number is on recordings the model
never saw (split by recording), beside three baselines a model must beat to be worth it:
  global_mean          the mean train spectrogram, whatever the clip
  clip_mean_spectrum   each clip's own time-averaged spectrum, repeated over time
  pca_<k>              a linear autoencoder: PCA with as many components as the latent size
All predictions are clamped to the feature dB range, as the model's are. benchmarks/bench_quality.py
adds `pca_<k> + refine` (`refined_pca`): PCA's codes fitted by the encode-time refinement that ours
use (model.fit_codes), so that a model's gain is not only that refinement.

The report (`evaluate`, with realism rows when asked, as `Session.evaluate` does, which writes it as
runs/report.json; the CLI's `evaluate --json OUT` where asked), version REPORT_VERSION:

  {
    "version": REPORT_VERSION,
    "cache": path, "stats": {"mean": dB, "std": dB}, "latent_dim": n,  the first run's train statistics
    "runs": {name: {"path", "architecture", "epoch"}},   architecture: the run's model.architecture
                                                         ("local" for the best preset)
    "other_clips": path,                                 only for another folder of clips (--clips)
    "splits": {split: {                                  "val" and "test" (or the splits asked for),
                                                         or "other" for that folder
      "clips": n, "recordings": n,
      "models": {model: {"l1_std", "l1_db", "rmse_db"}}, each run by name, then the baselines
      "per_recording": {recording: {"clips": n, model: l1_std, ...}}}},
    "realism": {name: {                                  evaluate(realism=True), not for another folder:
                                                         the splits scored against train, when they have
                                                         REALISM_HELDOUT clips and train REALISM_TRAIN
      "rows": {row: {"accuracy", "frechet", "clips", "recordings"}},
                                                         realism.realism_report's rows: real halves,
                                                         decoder, floor, prior NAME, midpoint; accuracy
                                                         None (n/m) where a side has under 2 recordings;
                                                         recordings: each side's names (None: samples)
      "temperature": t,
      "nearest_train_db": {"held-out reconstructions" | "prior NAME": dB},
      "clips": {"fit", "unseen", "held-out"}, "recordings": {"fit", "unseen", "held-out"}}}
  }

`l1_std` is the original's figure: L1 on values standardised with the train statistics; `l1_db` and
`rmse_db` are in decibels. With another folder of clips, every clip of it is scored with the run's
statistics, and the baselines stay fitted on the run's own train split.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cache import SAMPLE_CLIPS, MelCache
from .cache_build import build_cache
from .generate import FIT_CLIPS, decode_all, encode_all, generation_report
from .model import fit_codes
from .pca import PCA
from .run import Run
from .storage import BeetNetError, atomic_write, check_not_inside, open_regular

REPORT_VERSION = 4
REALISM_HELDOUT, REALISM_TRAIN = 8, 16  # the fewest clips the two-sample test measures with: 4 a side


def metrics(pred_db: np.ndarray, target_db: np.ndarray, std: float) -> dict[str, float]:
    """L1 on standardised values (the original's figure), L1 and RMSE in dB."""
    err = pred_db.astype(np.float64) - target_db.astype(np.float64)
    l1_db = float(np.abs(err).mean())
    return {"l1_std": l1_db / std, "l1_db": l1_db, "rmse_db": float(np.sqrt(np.square(err).mean()))}


@dataclass
class Baselines:
    template: np.ndarray  # mean train spectrogram (n_mels, frames), dB
    pca: PCA
    db_range: tuple[float, float]

    @classmethod
    def fit(cls, train_db: np.ndarray, k: int, db_range: tuple[float, float]) -> Baselines:
        return cls(train_db.mean(0), PCA.fit(train_db, k), db_range)

    def predict(self, x_db: np.ndarray) -> dict[str, np.ndarray]:
        lo, hi = self.db_range
        spectrum = x_db.mean(axis=2, keepdims=True)
        return {
            "global_mean": np.broadcast_to(self.template, x_db.shape),
            "clip_mean_spectrum": np.broadcast_to(spectrum, x_db.shape),
            f"pca_{len(self.pca.components)}": self.pca.reconstruct(x_db).clip(lo, hi),
        }


class PCACodes(nn.Module):
    """PCA as a frozen linear autoencoder of standardised clips, so `refine` fits its codes as it fits `best`'s.

    Standardised units put the codes on the scale of `best`'s (whose linear path starts at this PCA),
    so the same learning rate takes the same steps.
    """

    def __init__(self, pca: PCA, mean: float, std: float, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("components", torch.as_tensor(pca.components, dtype=torch.float32))
        self.register_buffer("centre", torch.as_tensor((pca.mean - mean) / std, dtype=torch.float32))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.centre) @ self.components.T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.components + self.centre).view(len(z), *self.shape)


def refined_pca(pca: PCA, x_db: np.ndarray, stats: dict, db_range: tuple[float, float], steps: int, lr: float,
                batch: int = 256) -> np.ndarray:
    """PCA's reconstruction (dB, clamped) after `steps` of `best`'s encode-time refinement at `lr`, in the
    standardisation `stats` of the run it is compared with."""
    mean, std = stats["mean"], stats["std"]
    model = PCACodes(pca, mean, std, x_db.shape[1:])
    bounds = ((db_range[0] - mean) / std, (db_range[1] - mean) / std)
    out = []
    for i in range(0, len(x_db), batch):
        x = (torch.as_tensor(x_db[i:i + batch], dtype=torch.float32) - mean) / std
        with torch.no_grad():
            y = model.decode(fit_codes(model, x, steps, lr, bounds)) * std + mean
        out.append(y.clamp(*db_range).numpy())
    return np.concatenate(out) if out else x_db.copy()


def reconstruct_all(run: Run, x_db: np.ndarray, batch: int = 256, refine: bool = True) -> np.ndarray:
    """`run.reconstruct` in batches; `refine=False` gives the plain encoder's code (see Run.encode)."""
    return np.concatenate([run.reconstruct(x_db[i:i + batch], refine).numpy() for i in range(0, len(x_db), batch)]) \
        if len(x_db) else x_db.copy()


def score(preds: dict[str, np.ndarray], x_db: np.ndarray, recordings: np.ndarray, std: float) -> dict:
    """Metrics of every prediction of these clips, overall and per recording."""
    out = {"clips": len(x_db), "recordings": len(set(recordings)),
           "models": {m: metrics(p, x_db, std) for m, p in preds.items()}, "per_recording": {}}
    for rec in sorted(set(recordings)):
        sel = recordings == rec
        out["per_recording"][str(rec)] = {"clips": int(sel.sum())} | {
            m: metrics(p[sel], x_db[sel], std)["l1_std"] for m, p in preds.items()}
    return out


def evaluate(runs: Run | dict[str, Run], cache: MelCache, splits: tuple[str, ...] = ("val", "test"),
             other: MelCache | None = None, realism: bool = False) -> dict:
    """The report: baselines fitted on `cache`'s train split (at most SAMPLE_CLIPS of it); every run and
    baseline scored on `splits` (or on every clip of `other`). `runs` is one run (named beetnet) or
    {name: run} to compare presets. `realism`: add each run's realism rows (generate.generation_report),
    `splits` against train (at most generate.FIT_CLIPS of it), where there are enough clips for the test."""
    runs = {"beetnet": runs} if isinstance(runs, Run) else dict(runs)
    if not runs:
        raise BeetNetError("evaluate needs at least one trained run: pass a Run or {name: Run} (train one first)")
    for run in runs.values():
        run.check_cache(cache)
    first = next(iter(runs.values()))
    f = cache.features
    fitted_on = cache.clips("train", most=SAMPLE_CLIPS).db
    baselines = Baselines.fit(fitted_on, first.config.model.latent_dim, (f.db_min, f.db_max))
    report = {"version": REPORT_VERSION, "cache": str(cache.path), "stats": first.stats,
              "latent_dim": first.config.model.latent_dim,
              "runs": {n: {"path": str(r.path), "architecture": r.config.model.architecture, "epoch": r.epoch}
                       for n, r in runs.items()},
              "splits": {}}
    sets = ({"other": (other.mels.astype(np.float32), other.recordings)} if other is not None else
            {s: cache.clips(s) for s in splits})
    if other is not None:
        report["other_clips"] = other.meta["clips_dir"]
    codes = {name: [] for name in runs}  # each run's codes of the splits, in order: the realism rows reuse them
    for split, (x, recordings) in sets.items():
        for name, run in runs.items():
            codes[name].append(encode_all(run, x))
        preds = {name: decode_all(run, codes[name][-1]) for name, run in runs.items()} | baselines.predict(x)
        report["splits"][split] = score(preds, x, recordings, first.stats["std"])
    if realism and other is None:
        train, heldout = cache.clips("train", most=FIT_CLIPS), cache.clips(splits)  # with their recordings
        if len(heldout.db) >= REALISM_HELDOUT and len(train.db) >= REALISM_TRAIN:
            report["realism"] = {name: generation_report(run, *train, *heldout, heldout_codes=np.concatenate(z))
                                 for (name, run), z in zip(runs.items(), codes.values())}
    return report


def markdown_table(report: dict) -> str:
    """One row per model, columns per split: L1 (standardised), L1 dB, RMSE dB."""
    splits = list(report["splits"])
    head = "| model | " + " | ".join(f"{s} L1 (std) | {s} L1 dB | {s} RMSE dB" for s in splits) + " |"
    rule = "|---|" + "---:|" * (3 * len(splits))
    models = list(report["splits"][splits[0]]["models"])
    rows = []
    for m in models:
        cells = []
        for s in splits:
            r = report["splits"][s]["models"][m]
            cells += [f"{r['l1_std']:.4f}", f"{r['l1_db']:.2f}", f"{r['rmse_db']:.2f}"]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    sizes = ", ".join(f"{s}: {report['splits'][s]['clips']} clips from {report['splits'][s]['recordings']} "
                      f"recordings" for s in splits)
    epochs = ", ".join(f"{n} at epoch {r['epoch']}" for n, r in report["runs"].items())  # by run (preset) name
    return "\n".join([head, rule, *rows, "", f"({sizes}; {epochs})"])


def realism_table(reports: dict[str, dict]) -> str:
    """One row per measure and run: two-sample accuracy (0.5: indistinguishable) and Fréchet distance."""
    if not reports:
        return (f"(too few clips to measure realism: it needs at least {REALISM_HELDOUT} held-out and "
                f"{REALISM_TRAIN} train clips)")
    names = list(reports)
    first = next(iter(reports.values()))
    head = "| measure | recordings | " + " | ".join(f"{n} accuracy | {n} Fréchet" for n in names) + " |"
    lines = [head, "|---|---:|" + "---:|" * (2 * len(names))]
    for row, measured in first["rows"].items():
        sides = " v ".join("samples" if r is None else str(len(r)) for r in measured["recordings"])
        cells = [f"{_figure(reports[n]['rows'][row]['accuracy'], '.3f')} | "
                 f"{_figure(reports[n]['rows'][row]['frechet'], '.1f')}" for n in names]
        lines.append(f"| {row} | {sides} | " + " | ".join(cells) + " |")
    if any(r["accuracy"] is None for rep in reports.values() for r in rep["rows"].values()):
        lines += ["", "n/m: not measurable: the classifier is fitted and scored on different recordings, so it needs "
                      "at least 2 on each side (the Fréchet distance, 2 clips)."]
    lines += ["", "| nearest train clip (dB) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in first["nearest_train_db"]:
        lines.append(f"| {key} | " + " | ".join(f"{reports[n]['nearest_train_db'][key]:.2f}" for n in names) + " |")
    return "\n".join(lines)


def _figure(x: float | None, spec: str) -> str:
    return "n/m" if x is None else format(x, spec)


def best_prior(report: dict, run: str, default: str = "gaussian") -> str:
    """The prior whose samples look most real for `run` in an evaluation report: the lowest two-sample
    accuracy of its `prior NAME` rows, the lowest Fréchet distance where no accuracy is measurable, and
    `default` where the report has no realism rows for the run (too few clips)."""
    rows = report.get("realism", {}).get(run, {}).get("rows", {})
    measured = {name.removeprefix("prior "): (row["accuracy"], row["frechet"])
                for name, row in rows.items() if name.startswith("prior ")}
    ranked = sorted(measured, key=lambda p: [(x is None, x or 0.0) for x in measured[p]])
    return ranked[0] if ranked else default


def is_report(path: Path) -> bool:
    """Is `path` a report BeetNet wrote (of any version): a JSON object with its version and splits?"""
    try:
        with open_regular(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"version", "splits"} <= saved.keys()


def save_report(report: dict, path: Path) -> Path:
    """Write the report as JSON, atomically. A report replaces only a report: never a checkpoint, a
    thesis or anything else that happens to be at `path`."""
    path = Path(path)
    if os.path.lexists(path) and not is_report(path):
        raise BeetNetError(f"{path} exists and is not a BeetNet report: name a new file for the report "
                           "(a report replaces only an earlier report)")
    return atomic_write(path, lambda p: p.write_text(json.dumps(report, indent=2)))


def evaluate_clips(runs: Run | dict[str, Run], cache: MelCache, clips: Path, eval_cache: Path) -> dict:
    """Every clip of another folder (never seen), cached at `eval_cache` with the runs' own features;
    the baselines stay fitted on `cache`'s train split and the scores use the runs' statistics."""
    every = [runs] if isinstance(runs, Run) else list(runs.values())
    check_not_inside(eval_cache, cache.path, clips, *(run.path for run in every))  # a name derived from an input
    other = build_cache(clips, eval_cache, cache.features, every[0].config.data, split=False)
    return evaluate(runs, cache, other=other)
