"""A trained run's encode time per clip on the CPU, with and without refinement: the figure to read alone
on the machine (bench_quality prints it too, but after hours of training beside whatever else runs).

Usage: python benchmarks/bench_encode.py --run RUN --cache CACHE [--split test] [--clips 512] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import encode_ms_per_clip  # noqa: E402

from beetnet_utils import load_cache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest is reported")
    args = ap.parse_args()
    x = load_cache(args.cache).clips(args.split).db[:args.clips]
    for refine in (True, False):
        ms = min(encode_ms_per_clip(args.run, x, refine) for _ in range(args.repeat))
        print(f"{'with' if refine else 'without'} refinement: {ms:.2f} ms per clip ({len(x)} {args.split} clips, "
              f"batches of 256, {torch.get_num_threads()} threads, best of {args.repeat})")


if __name__ == "__main__":
    main()
