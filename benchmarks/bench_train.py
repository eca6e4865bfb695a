"""Training throughput: our loop against a faithful re-creation of the original's, same model, same device.

original  one standardised .pt file per clip, a Dataset and a DataLoader (batch 32, shuffle,
          drop_last, num_workers=2), `.to(device)` per batch, float32
ours      beetnet_utils.train: the split resident on the device (float16 on CUDA), index
          permutations, float16 autocast + GradScaler on CUDA

Prints samples per second for one epoch of each (the first epoch after a warm-up of a few
batches) and, on a GPU, the projected time for 50 epochs of the full 18,825-clip set.
Usage: python benchmarks/bench_train.py [--clips 1000] [--unidirectional] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beetnet_utils import build_cache, download, get_config  # noqa: E402
from beetnet_utils.model import build_model  # noqa: E402
from beetnet_utils.train import train  # noqa: E402


class PerClipDataset(torch.utils.data.Dataset):
    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.load(self.files[i])


def original_epoch(files: list[Path], cfg, device: torch.device, warmup: int = 3) -> float:
    """Samples per second of the notebook's loop (after `warmup` batches)."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    loader = torch.utils.data.DataLoader(PerClipDataset(files), batch_size=cfg.train.batch_size, shuffle=True,
                                         drop_last=True, num_workers=2)
    seen, t0 = 0, None
    for i, xb in enumerate(loader):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            seen, t0 = 0, time.perf_counter()
        xb = xb.to(device)
        loss = F.l1_loss(model(xb), xb)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        seen += len(xb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=1000, help="demo clips to train on (about 80%% go to train)")
    ap.add_argument("--unidirectional", action="store_true", help="the encoder as the notebook ran it")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--work", type=Path, default=Path("bench/train"))
    args = ap.parse_args()

    cfg = get_config("full")
    cfg = cfg.replace(data={"source": "demo", "demo_recordings": max(3, math.ceil(args.clips / 90))},
                      model={"bidirectional": not args.unidirectional}, train={"epochs": 1})
    clips = download("demo", args.work / f"clips_{cfg.data.demo_recordings}", cfg, progress=False)
    cache = build_cache(clips.path, args.work / f"cache_{cfg.data.demo_recordings}", cfg.features, cfg.data,
                        progress=False, log=lambda m: None)
    pt = args.work / "per_clip_pt"
    shutil.rmtree(pt, ignore_errors=True)
    pt.mkdir(parents=True)
    x = cache.standardised("train")
    files = []
    for i in range(len(x)):  # the original cached standardised float32 tensors, one file per clip
        files.append(pt / f"{i}.pt")
        torch.save(x[i].clone(), files[-1])

    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"{len(x)} train clips, batch {cfg.train.batch_size}, "
          f"{'uni' if args.unidirectional else 'bi'}directional encoder, torch {torch.__version__}")
    print(f"{'device':<26} {'original':>12} {'ours':>12} {'ratio':>7}")
    for name in devices:
        device = torch.device(name)
        orig = original_epoch(files, cfg, device)
        run = args.work / f"run_{name}"
        shutil.rmtree(run, ignore_errors=True)
        ours = train(cache, run, cfg, device=name, progress=False, log=lambda m: None)[0]["samples_per_s"]
        label = torch.cuda.get_device_name(0) if name == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        print(f"{label:<26} {orig:>9.0f}/s {ours:>9.0f}/s {ours / orig:>6.2f}x")
        if name == "cuda":
            hours = 50 * 18825 / ours / 3600
            print(f"projected 50 epochs on 18,825 clips with ours: {hours * 60:.0f} min ({hours:.2f} h)")


if __name__ == "__main__":
    main()
