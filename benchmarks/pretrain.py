#!/usr/bin/env python3
"""Pretrain BeetNet on the corpus of benchmarks/build_corpus.py, and export the weights the package ships.

The settings are config.PRETRAIN (`best` with a decoder twice as wide and two GRU layers) for EPOCHS
epochs, the cosine schedule over all of them; 2% of the recordings validate, 2% are kept back. The run
resumes where it stopped: give each session its `--minutes`, and run the same command again.

  python benchmarks/build_corpus.py --out bench/corpus          # in its own venv, see there
  .venv/bin/python benchmarks/pretrain.py --corpus bench/corpus --work bench/pretrain --minutes 100
  .venv/bin/python benchmarks/pretrain.py --corpus bench/corpus --work bench/pretrain --export

--export writes beetnet_utils/pretrained/beetnet-pretrained.pt from the run's best checkpoint and prints
its sha256, which beetnet_utils/pretrained.py holds (PRETRAINED_SHA256).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beetnet_utils import build_cache, get_config  # noqa: E402
from beetnet_utils.config import PRETRAIN  # noqa: E402
from beetnet_utils.pretrained import PRETRAINED_PATH, export_pretrained  # noqa: E402
from beetnet_utils.train import train  # noqa: E402

EPOCHS = 12
SPLIT = {"val_fraction": 0.02, "test_fraction": 0.02}


def settings():
    return get_config("full").replace(data=SPLIT, **PRETRAIN).replace(train={"epochs": EPOCHS})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="build_corpus.py's --out (clips/, manifest.json)")
    ap.add_argument("--work", type=Path, required=True, help="where the cache and the run go")
    ap.add_argument("--minutes", type=float, help="this session's budget; run again to continue")
    ap.add_argument("--export", action="store_true", help="write the package's weights from the run's best epoch")
    ap.add_argument("--out", type=Path, default=PRETRAINED_PATH)
    args = ap.parse_args()
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    cfg = settings()
    if args.minutes:
        cfg = cfg.replace(train={"minutes": args.minutes})
    cache = build_cache(args.corpus / "clips", args.work / "cache", cfg.features, cfg.data, progress=False)
    if args.export:
        sha = export_pretrained(args.work / "run", args.out, corpus={"sha256": manifest["sha256"],
                                "recordings": manifest["n_recordings"], "clips": manifest["n_clips"]})
        print(json.dumps({"weights": str(args.out), "sha256": sha, "bytes": args.out.stat().st_size}))
        return
    train(cache, args.work / "run", cfg, progress=False)


if __name__ == "__main__":
    main()
