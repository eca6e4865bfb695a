#!/usr/bin/env python3
"""What the pretrained BeetNet buys: zero-shot, fine-tuned against from scratch, the small-data curve, realism.

Targets (none of them in the pretraining corpus, benchmarks/build_corpus.py):
  demo      the demo profile's clips (beetnet_utils/synth.py), its own split: test recordings
  rendered  the rendered set (render_piano_set.py, FluidR3 GM), the full profile's split: test recordings
  unseen    the rendered set's test recordings on TimGM6mb, a piano the corpus left out
Every model is scored in L1 dB (each standardises with its own statistics) against PCA-256 fitted on the
target's train split. `finetuned` is `Session.settings(init="pretrained")`: `best`'s training settings on the
pretrained architecture, from its weights; `scratch` is today's `best`, trained from seeded weights.

Stages (--stages, default all):
  zero_shot   the pretrained model as shipped, and with the target's statistics (the fine-tuning rule)
  epochs      finetuned and scratch at --epochs (default 5 12 30) on the rendered set and the demo data
  lr          finetuned at 12 epochs with learning rates below best's 1e-3
  small_data  finetuned, scratch and PCA-256 on 1, 2, 4, 8, 16 and all train recordings of the rendered
              set (each run at least --samples clip presentations, at least 12 epochs); --figure draws it
  realism     the two-sample accuracy of the 12-epoch finetuned run's reconstructions (split by recording)

  .venv/bin/python benchmarks/bench_pretrained.py --clips bench/pianoset/clips \\
      --unseen-clips bench/pianoset-timgm/clips --work bench/bp \\
      --figure docs/small_data.png --json docs/bench_pretrained.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beetnet_utils import MelCache, build_cache, download, get_config, load_run, with_preset  # noqa: E402
from beetnet_utils.config import Config  # noqa: E402
from beetnet_utils.evaluate import Baselines, metrics, reconstruct_all  # noqa: E402
from beetnet_utils.generate import generation_report  # noqa: E402
from beetnet_utils.pretrained import fine_tune_config, load_pretrained  # noqa: E402
from beetnet_utils.train import quiet, train  # noqa: E402

SIZES = (1, 2, 4, 8, 16, None)  # train recordings of the small-data curve (None: all)
REALISM_TRAIN_RECORDINGS = 6  # what the realism rows' feature space is fitted on
REALISM_SEEDS = (0, 1, 2)  # halves of the held-out recordings: the rows' spread


@dataclasses.dataclass
class Target:
    """A cache to train on and the clips it is scored on (its test recordings, or the unseen piano's)."""
    cache: MelCache
    scored: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (dB clips, recordings)

    def pca(self, train_db: np.ndarray | None = None) -> Baselines:
        f = self.cache.features
        return Baselines.fit(self.cache.clips("train").db if train_db is None else train_db, 256, f.db_range)


def l1_db(pred: np.ndarray, x: np.ndarray) -> float:
    return metrics(pred, x, 1.0)["l1_db"]


def load_targets(args) -> dict[str, Target]:
    full, demo = get_config("full"), get_config("demo")
    rendered = build_cache(args.clips, args.work / "cache_rendered", full.features, full.data, progress=False,
                           log=quiet)
    test = rendered.indices("test")
    scored = {"rendered": (rendered.mels[test].astype(np.float32), rendered.recordings[test])}
    if args.unseen_clips:
        other = build_cache(args.unseen_clips, args.work / "cache_unseen", full.features, full.data, split=False,
                            progress=False, log=quiet)
        keep = np.isin(other.recordings, rendered.recordings[test])
        scored["unseen"] = (other.mels[keep].astype(np.float32), other.recordings[keep])
    clips = args.work / "demo_clips"
    if not clips.is_dir():
        download("demo", clips, demo, progress=False)
    demo_cache = build_cache(clips, args.work / "cache_demo", demo.features, demo.data, progress=False, log=quiet)
    dtest = demo_cache.indices("test")
    return {"rendered": Target(rendered, scored),
            "demo": Target(demo_cache, {"demo": (demo_cache.mels[dtest].astype(np.float32),
                                                 demo_cache.recordings[dtest])})}


def with_stats(cache: MelCache):
    """The pretrained weights, standardising with the target's statistics (what a fine-tune starts from)."""
    twin = load_pretrained()
    twin.stats = {"mean": cache.mean, "std": cache.std}
    return twin


def zero_shot(targets: dict[str, Target]) -> dict:
    pre = load_pretrained()
    out = {}
    for target in targets.values():
        pca = target.pca()
        for name, (x, _) in target.scored.items():
            out[name] = {"pretrained": l1_db(reconstruct_all(pre, x), x),
                         "pretrained, target's statistics": l1_db(reconstruct_all(with_stats(target.cache), x), x),
                         "pca_256": l1_db(pca.predict(x)["pca_256"], x)}
    return out


def settings(kind: str, epochs: int, profile: str, lr: float | None = None) -> Config:
    base = get_config(profile).replace(train={"epochs": epochs})
    cfg = fine_tune_config(base) if kind == "finetuned" else with_preset(base, "best")
    return cfg.replace(train={"epochs": epochs} | ({"lr": lr} if lr else {}))


def train_and_score(target: Target, cache: MelCache, kind: str, epochs: int, run_dir: Path, profile: str,
                    lr: float | None = None) -> dict:
    t0 = time.perf_counter()
    history = train(cache, run_dir, settings(kind, epochs, profile, lr), progress=False, log=quiet)
    seconds = time.perf_counter() - t0
    run = load_run(run_dir)
    scores = {name: l1_db(reconstruct_all(run, x), x) for name, (x, _) in target.scored.items()}
    return {"scores": scores, "train_seconds": seconds, "epochs": epochs, "best_epoch": run.epoch,
            "val_l1_db_first_epoch": history[0]["val_l1_db"]}


def epochs_stage(targets: dict[str, Target], args) -> dict:
    out = {}
    for tname, target in targets.items():
        profile = "demo" if tname == "demo" else "full"
        for epochs in args.epochs:
            for kind in ("finetuned", "scratch"):
                key = f"{tname}/{kind}/{epochs}"
                out[key] = train_and_score(target, target.cache, kind, epochs, args.work / "runs" / key, profile)
                print(json.dumps({key: out[key]["scores"]}), flush=True)
    return out


def lr_stage(targets: dict[str, Target], args) -> dict:
    """The fine-tuning rule's learning rate: `best`'s 1e-3 (the epochs stage) against smaller ones, at 12 epochs."""
    out = {}
    for tname, target in targets.items():
        for lr in (3e-4, 1e-4):
            key = f"{tname}/finetuned-lr{lr:g}/12"
            out[key] = train_and_score(target, target.cache, "finetuned", 12, args.work / "runs" / key,
                                       "demo" if tname == "demo" else "full", lr)
            print(json.dumps({key: out[key]["scores"]}), flush=True)
    return out


def subset(cache: MelCache, n: int | None, seed: int = 0) -> MelCache:
    """The cache with only `n` of its train recordings left in `train` (drawn at random, nested: the 2 include
    the 1); the other train clips leave every split. Validation and test stay as they are."""
    recs = np.unique(cache.recordings[cache.indices("train")])
    order = np.random.default_rng(seed).permutation(recs)
    if n is None or n >= len(recs):
        return cache
    splits = cache.splits.copy()
    splits[(splits == "train") & ~np.isin(cache.recordings, order[:n])] = "unused"
    return dataclasses.replace(cache, splits=splits)


def small_data(targets: dict[str, Target], args) -> dict:
    target = targets["rendered"]
    out = {}
    for n in SIZES:
        cache = subset(target.cache, n)
        train_clips = len(cache.indices("train"))
        epochs = max(12, math.ceil(args.samples / train_clips))
        row = {"recordings": n or len(np.unique(cache.recordings[cache.indices("train")])), "clips": train_clips,
               "epochs": epochs}
        pca = target.pca(cache.clips("train").db)
        # PCA-256, or as many components as the clips span (one recording's ~110 clips span fewer than 256)
        row["pca_256"] = {name: l1_db(next(v for k, v in pca.predict(x).items() if k.startswith("pca_")), x)
                          for name, (x, _) in target.scored.items()}
        row["pca_components"] = len(pca.pca.components)
        for kind in ("finetuned", "scratch"):
            key = f"small/{kind}/{n or 'all'}"
            row[kind] = train_and_score(target, cache, kind, epochs, args.work / "runs" / key, "full")["scores"]
        out[str(n or "all")] = row
        print(json.dumps({n or "all": row}), flush=True)
    return out


def realism(targets: dict[str, Target], args) -> dict:
    target = targets["rendered"]
    run_dirs = {f"{kind} (12 epochs)": args.work / "runs" / f"rendered/{kind}/12" for kind in ("finetuned", "scratch")}
    for name, run_dir in run_dirs.items():
        if not (run_dir / "best.pt").exists():
            train_and_score(target, target.cache, name.split()[0], 12, run_dir, "full")
    runs = {name: load_run(run_dir) for name, run_dir in run_dirs.items()} | {"pretrained": load_pretrained()}
    # the rows asked for (real halves, decoder) compare held-out clips with their reconstructions; the train
    # recordings only fit the feature space (400 clips) and the priors (none here): 6 of them are plenty, and
    # spare refining every train clip. Each seed draws other halves of the 8 held-out recordings.
    train_db, train_recs = subset(target.cache, REALISM_TRAIN_RECORDINGS).clips("train")
    held_db, held_recs = target.cache.clips(("val", "test"))
    out = {}
    for name, run in runs.items():
        out[name] = {}
        for seed in REALISM_SEEDS:
            rows = generation_report(run, train_db, train_recs, held_db, held_recs, priors=(), seed=seed)["rows"]
            out[name][str(seed)] = {k: rows[k] for k in ("real halves", "decoder")}
        print(json.dumps({name: {s: {k: r["accuracy"] for k, r in rows.items()} for s, rows in out[name].items()}}),
              flush=True)
    return out


def figure(small: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    xs = [row["recordings"] for row in small.values()]
    for ax, scored in zip(axes, ("rendered", "unseen")):
        for kind, style in (("finetuned", "o-"), ("scratch", "s--"), ("pca_256", "^:")):
            ax.plot(xs, [row[kind][scored] for row in small.values()], style, label=kind)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("train recordings (rendered set)")
        ax.set_title({"rendered": "test recordings", "unseen": "test recordings, unseen piano"}[scored])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("L1 (dB), lower is better")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_tables(results: dict) -> None:
    if "zero_shot" in results:
        print("\n| zero-shot, test L1 dB | " + " | ".join(results["zero_shot"]) + " |")
        print("|---|" + "---:|" * len(results["zero_shot"]))
        for model in next(iter(results["zero_shot"].values())):
            print(f"| {model} | " + " | ".join(f"{v[model]:.2f}" for v in results["zero_shot"].values()) + " |")
    if "epochs" in results:
        print("\n| target | epochs | finetuned | scratch (best) | train s (ft / scratch) |")
        print("|---|---:|---:|---:|---:|")
        for key, row in results["epochs"].items():
            tname, kind, epochs = key.split("/")
            if kind != "finetuned":
                continue
            other = results["epochs"][f"{tname}/scratch/{epochs}"]
            for scored in row["scores"]:
                print(f"| {scored} | {epochs} | {row['scores'][scored]:.2f} | {other['scores'][scored]:.2f} | "
                      f"{row['train_seconds']:.0f} / {other['train_seconds']:.0f} |")
    if "lr" in results:
        print("\n| fine-tuned 12 epochs, learning rate | scored on | test L1 dB |")
        print("|---|---|---:|")
        for key, row in results["lr"].items():
            for scored, value in row["scores"].items():
                print(f"| {key.split('/')[1].removeprefix('finetuned-lr')} | {scored} | {value:.2f} |")
    if "small_data" in results:
        print("\n| train recordings (clips, epochs) | finetuned | scratch | pca_256 "
              "| unseen piano: ft / scratch / pca |")
        print("|---|---:|---:|---:|---|")
        for row in results["small_data"].values():
            u = " / ".join(f"{row[k]['unseen']:.2f}" for k in ("finetuned", "scratch", "pca_256")) \
                if "unseen" in row["pca_256"] else ""
            print(f"| {row['recordings']} ({row['clips']}, {row['epochs']}) | {row['finetuned']['rendered']:.2f} | "
                  f"{row['scratch']['rendered']:.2f} | {row['pca_256']['rendered']:.2f} | {u} |")
    if "realism" in results:
        print("\n| rendered set, held-out recordings | real halves: accuracy | decoder: accuracy | decoder: Fréchet |")
        print("|---|---:|---:|---:|")
        for name, seeds in results["realism"].items():
            cells = []
            for row, key in (("real halves", "accuracy"), ("decoder", "accuracy"), ("decoder", "frechet")):
                v = [s[row][key] for s in seeds.values()]
                cells.append(f"{np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})")
            print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, required=True, help="render_piano_set.py's clips")
    ap.add_argument("--unseen-clips", type=Path, help="the same scores on TimGM6mb")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--stages", default="zero_shot,epochs,small_data,realism")
    ap.add_argument("--epochs", type=int, nargs="+", default=[5, 12, 30])
    ap.add_argument("--samples", type=int, default=20000, help="small_data: clip presentations per run, at least")
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    targets = load_targets(args)
    stages = {"zero_shot": lambda: zero_shot(targets), "epochs": lambda: epochs_stage(targets, args),
              "lr": lambda: lr_stage(targets, args),
              "small_data": lambda: small_data(targets, args), "realism": lambda: realism(targets, args)}
    results = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for stage in args.stages.split(","):
        t0 = time.perf_counter()
        results[stage] = stages[stage]()
        results.setdefault("seconds", {})[stage] = round(time.perf_counter() - t0)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print_tables(results)
    if args.figure and "small_data" in results:
        figure(results["small_data"], args.figure)


if __name__ == "__main__":
    main()
