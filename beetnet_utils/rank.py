"""One process of a training in several (`train --gpus N`, `Session.train(gpus=N)`): distributed.launch has
torchrun start this module N times, each with the cache, the run folder and the exact Config as JSON, and
each calls the training loop directly.

    python -m torch.distributed.run --standalone --nproc-per-node=2 -m beetnet_utils.rank -- \
        --cache=CACHE --run=RUN --config='{"train": {...}, ...}'
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cache import load_cache
from .cli import guarded
from .config import Config
from .runtime import DEVICES
from .train import train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beetnet_utils.rank", description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="a cache the launcher has checked")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--config", required=True, help="the Config to train, as JSON (Config.to_json)")
    p.add_argument("--device", choices=DEVICES)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv[1:] if argv[:1] == ["--"] else argv)  # torchrun passes its "--" on

    def one_rank() -> None:  # each rank maps the cache (in_memory=0): the ranks share one copy, the OS's
        train(load_cache(args.cache, in_memory=0), args.run, Config.from_json(args.config), device=args.device,
              progress=False)

    return guarded(one_rank)


if __name__ == "__main__":
    sys.exit(main())
