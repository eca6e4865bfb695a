"""The cost of each stage against the number of clips: the cache build, its peak memory, the load, training.

Clips: the demo set (16 synthesised recordings of 3 min) copied until there are N, each copy a recording of
its own, every clip of it scaled by a small gain (uniform in -1..0 dB, seeded; 16-bit PCM again), so that no
two files hold the same bytes: the content hash, the split by recording and the statistics see N clips.

Each stage runs in a process of its own, and its peak memory is the kernel's VmHWM, reset when the stage
starts (the process's imports are in it, not its parent's: getrusage's ru_maxrss would carry those):
  build     build_cache on every core: seconds, clips/s, peak resident memory of the building process
  load      load_cache: mels.npy read whole (under 1 GiB), and memory-mapped
  resident  one epoch of --preset on the CPU, the splits held whole: samples/s, peak memory
  streamed  the same epoch streamed from the mapped cache (resident_bytes=0): samples/s, peak memory
  gloo      the same epoch in two CPU processes under torchrun (gloo, one thread each): samples/s

An epoch is cut to its first --batches batches (default 60) of the permutation over the whole train split:
the access pattern of a full epoch (random rows of the whole mels.npy), at a fixed cost per size. It is
validated on the whole val split, as always.

Usage: python benchmarks/bench_scale.py [--sizes 2000,20000,200000] [--stages build,load,resident,streamed,gloo]
       [--preset best] [--batches 60] [--work bench/scale] [--json R.json] [--figure F.png]
Disk: about 77 KB a clip (its WAV and its row of mels.npy): 1.5 GB at 20,000, 15.4 GB at 200,000.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STAGES = ("build", "load", "resident", "streamed", "gloo")
# "--": the stage's --run is not torchrun's --run-path
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--"]


def memory_kib(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)[1])


def start_peak() -> None:
    """From here, VmHWM is this stage's peak (Linux: clear_refs 5 resets it to the current resident size)."""
    Path("/proc/self/clear_refs").write_text("5")


def make_clips(n: int, work: Path, source: Path | None) -> Path:
    """N clips copied from `source` (default: the demo set) with small gains, made once per size."""
    import numpy as np
    import soundfile as sf

    from beetnet_utils import download, get_config, list_clips
    from beetnet_utils.data import parse_clip_name

    out = work / f"clips_{n}"
    if (out / ".complete").exists():
        return out
    source = source or download("demo", work / "demo_clips", get_config("demo"), progress=False).path
    originals = [(parse_clip_name(p.name), *sf.read(p, dtype="float32")) for p in list_clips(source)]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    gains = 10 ** (np.random.default_rng(0).uniform(-1.0, 0.0, n) / 20)
    for i in range(n):
        (rec, k), audio, sr = originals[i % len(originals)]
        sf.write(out / f"{rec}g{i // len(originals)}_{k}.wav", audio * gains[i], sr, subtype="PCM_16")
    (out / ".complete").touch()
    return out


def cut_epochs(batches: int) -> None:
    """Every epoch from here is its first `batches` batches (Batches.epoch takes len(self) rows)."""
    from beetnet_utils.batches import Batches

    whole = Batches.__len__
    Batches.__len__ = lambda self: min(whole(self), batches)


def run_stage(name: str, clips: Path, cache: Path, run: Path, preset: str, batches: int) -> dict:
    """One stage, in this process (gloo: one of torchrun's two); what it measured."""
    start_peak()
    t0 = time.perf_counter()
    from beetnet_utils import build_cache, get_config, load_cache, with_preset
    from beetnet_utils.train import train

    cfg = get_config("full")
    if name == "build":
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        built = build_cache(clips, cache, cfg.features, cfg.data, progress=False, log=lambda m: None)
        seconds = time.perf_counter() - t0
        return {"clips": len(built.names), "seconds": seconds, "clips_per_s": len(built.names) / seconds,
                "peak_mb": memory_kib("VmHWM") / 1024}
    if name == "load":
        t0 = time.perf_counter()
        whole = load_cache(cache)
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_cache(cache, in_memory=0)
        return {"read_s": read, "mapped_s": time.perf_counter() - t0, "read_whole": not hasattr(whole.mels, "filename")}
    cut_epochs(batches)
    train_cfg = with_preset(cfg, preset).replace(train={"epochs": 1})
    if os.environ.get("RANK", "0") == "0":
        shutil.rmtree(run, ignore_errors=True)
    history = train(load_cache(cache, in_memory=0), run, train_cfg, device="cpu", progress=False, log=lambda m: None,
                    resident_bytes=0 if name == "streamed" else 1 << 40)
    return {"samples_per_s": history[-1]["samples_per_s"], "peak_mb": memory_kib("VmHWM") / 1024,
            "seconds": history[-1]["seconds"]}


def measure(name: str, clips: Path, cache: Path, run: Path, preset: str, batches: int) -> dict:
    """A stage in a fresh process (its peak memory its own); gloo in torchrun's two (rank 0's figures)."""
    cmd = [__file__, "--stage", name, "--clips", str(clips), "--cache", str(cache), "--run", str(run),
           "--preset", preset, "--batches", str(batches)]
    cmd = [*TORCHRUN, *cmd] if name == "gloo" else [sys.executable, *cmd]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[int, dict]) -> str:
    rows = [f"{'clips':>7} {'build s':>8} {'clips/s':>8} {'build MB':>9} {'load s':>7} {'mapped s':>9} "
            f"{'resident/s':>11} {'MB':>6} {'streamed/s':>11} {'MB':>6} {'2 gloo/s':>9}"]
    for n, r in results.items():
        get = lambda stage, key, fmt: (format(r[stage][key], fmt) if stage in r  # noqa: E731
                                       else "-".rjust(int(fmt.split(".")[0])))
        rows.append(f"{n:>7} {get('build', 'seconds', '8.1f')} {get('build', 'clips_per_s', '8.0f')} "
                    f"{get('build', 'peak_mb', '9.0f')} {get('load', 'read_s', '7.2f')} "
                    f"{get('load', 'mapped_s', '9.3f')} "
                    f"{get('resident', 'samples_per_s', '11.0f')} {get('resident', 'peak_mb', '6.0f')} "
                    f"{get('streamed', 'samples_per_s', '11.0f')} {get('streamed', 'peak_mb', '6.0f')} "
                    f"{get('gloo', 'samples_per_s', '9.0f')}")
    return "\n".join(rows)


def figure(results: dict[int, dict], path: Path, note: str) -> None:
    """Each stage's cost against the clips, log-log: time and memory that grow linearly lie on a slope of 1
    (build seconds) or stay flat (peak memory, samples/s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    series = [("build s", "build", "seconds"), ("build peak MB", "build", "peak_mb"),
              ("resident samples/s", "resident", "samples_per_s"), ("resident peak MB", "resident", "peak_mb"),
              ("streamed samples/s", "streamed", "samples_per_s"), ("streamed peak MB", "streamed", "peak_mb"),
              ("2 gloo processes samples/s", "gloo", "samples_per_s")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, stage, key in series:
        points = [(n, results[n][stage][key]) for n in sizes if stage in results[n]]
        if points:
            ax.plot(*zip(*points), marker="o", label=label, linestyle="--" if "MB" in label else "-")
    linear = [(n, results[n]["build"]["seconds"]) for n in sizes if "build" in results[n]]
    if linear:
        n0, s0 = linear[0]
        ax.plot(sizes, [s0 * n / n0 for n in sizes], color="grey", linewidth=0.8, label="linear from the first build")
    ax.set(xscale="log", yscale="log", xlabel="clips", title=f"BeetNet's cost against the clips ({note})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,20000,200000", help="numbers of clips, comma-separated")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"which of {', '.join(STAGES)}")
    ap.add_argument("--preset", default="best", help="the preset trained for one (cut) epoch")
    ap.add_argument("--batches", type=int, default=60, help="batches an epoch is cut to")
    ap.add_argument("--work", type=Path, default=Path("bench/scale"))
    ap.add_argument("--json", type=Path, help="write the measurements here")
    ap.add_argument("--figure", type=Path, help="write the log-log figure here")
    ap.add_argument("--source", type=Path, help="clips to copy (default: the demo set, synthesised once)")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in this process
    ap.add_argument("--clips", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        measured = run_stage(args.stage, args.clips, args.cache, args.run, args.preset, args.batches)
        if os.environ.get("RANK", "0") == "0":
            print(json.dumps(measured))
        return
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stages {', '.join(sorted(unknown))}: choose from {', '.join(STAGES)}")
    results: dict[int, dict] = {}
    for n in map(int, args.sizes.split(",")):
        clips, cache, run = make_clips(n, args.work, args.source), args.work / f"cache_{n}", args.work / f"run_{n}"
        results[n] = {}
        for name in stages:
            results[n][name] = measure(name, clips, cache, run, args.preset, args.batches)
            print(f"{n} clips, {name}: {results[n][name]}", flush=True)
    print(f"\nCPU: {os.cpu_count()} cores; preset {args.preset}, one epoch cut to {args.batches} batches; "
          "clips: demo copies with -1..0 dB gains")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.figure:
        figure(results, args.figure, f"{os.cpu_count()} CPU cores, {args.preset}")


if __name__ == "__main__":
    main()
