"""`python -m beetnet_utils {download,cache,train,evaluate}`: the notebooks' steps from a shell."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PROFILES, get_config
from .storage import BeetNetError


def _download(args: argparse.Namespace) -> None:
    from .data import download

    cfg = get_config(args.profile)
    print(download(args.source, args.out, cfg, audio_dir=args.audio_dir).summary())


def _cache(args: argparse.Namespace) -> None:
    import json

    from .features import build_cache

    cfg = get_config(args.profile)
    cache = build_cache(args.clips, args.out, cfg.features, cfg.data)
    print(json.dumps(cache.summary(), indent=2))


def _train(args: argparse.Namespace) -> None:
    from .features import load_cache
    from .train import train

    from .config import with_preset

    cfg = with_preset(get_config(args.profile), args.preset)
    overrides = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                                   "minutes": args.minutes, "amp": args.amp}.items() if v is not None}
    cfg = cfg.replace(train=overrides)
    history = train(load_cache(args.cache), args.run, cfg, device=args.device)
    if history:
        best = min(history, key=lambda h: h["val_l1"])
        print(f"best val L1 {best['val_l1']:.4f} ({best['val_l1_db']:.2f} dB) at epoch {best['epoch']}; "
              f"checkpoints, history.json and loss.png in {args.run}")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_cli, markdown_table

    report = evaluate_cli(args.run, args.cache, args.clips, args.split, args.json, device=args.device)
    print(markdown_table(report))
    if args.json:
        print(f"report written to {args.json}")


def _demo(args: argparse.Namespace) -> None:
    from .pipeline import demo

    demo(args.out, args.profile or "demo")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beetnet_utils", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, fn) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--profile", choices=list(PROFILES), default=None,
                        help="settings profile (default: $BEETNET_PROFILE or 'full')")
        sp.set_defaults(fn=fn)
        return sp

    d = add("download", "Fetch or build the folder of 2 s clips.", _download)
    d.add_argument("--source", choices=["kaggle", "musicnet", "folder", "demo"], required=True)
    d.add_argument("--audio-dir", type=Path, help="your recordings, for --source folder")
    d.add_argument("--out", type=Path, required=True, help="clip folder to create")

    c = add("cache", "Turn a clip folder into the mel cache (reused when nothing changed).", _cache)
    c.add_argument("--clips", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    t = add("train", "Train the autoencoder, or resume the run in --run where it stopped.", _train)
    t.add_argument("--cache", type=Path, required=True)
    t.add_argument("--run", type=Path, required=True, help="run folder for checkpoints and history")
    t.add_argument("--preset", choices=["seed", "best"], default="seed",
                   help="seed: the specification's model; best: PCA-initialised linear path + GRU correction")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when present")
    t.add_argument("--minutes", type=float, help="stop cleanly after the epoch that crosses this budget")
    t.add_argument("--amp", choices=["auto", "on", "off"], help="mixed precision (auto: on CUDA only)")
    e = add("evaluate", "Score a run and the baselines on held-out recordings (or another clip folder).", _evaluate)
    e.add_argument("--run", type=Path, required=True)
    e.add_argument("--cache", type=Path, required=True, help="the cache the run was trained on (baselines fit its train split)")
    e.add_argument("--clips", type=Path, help="another folder of clips, never seen: all of it is scored")
    e.add_argument("--split", choices=["train", "val", "test"], help="one split (default: val and test)")
    e.add_argument("--json", type=Path, help="write the report here")
    e.add_argument("--device", choices=["cpu", "cuda"])
    m = add("demo", "Run the four notebooks headless (what `make demo` does); keeps executed copies and figures.", _demo)
    m.add_argument("--out", type=Path, default=Path("runs/demo"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (BeetNetError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
