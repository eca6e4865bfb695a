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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (BeetNetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
