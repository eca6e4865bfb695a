"""The GPU path, checked for real in one command (`make gpu-check`, under 8 minutes on one T4 or better).

  presets   both presets train on the demo data on CUDA with mixed precision: epochs, samples/s, val L1
            (finite: float16 autocast and its GradScaler did not blow up)
  resume    `best` killed (SIGKILL) once its first checkpoint is written, then the same command again:
            it resumes after that epoch and ends with every epoch once; its val L1 beside the straight run's
            (CUDA's GRU kernels are not bit-deterministic, so close, not equal)
  speed     benchmarks/bench_train.py's CUDA row: our loop against the original's DataLoader loop
  two GPUs  with two or more GPUs visible, `best` on two (torchrun, NCCL) against one: the speed-up

Every step runs the package's CLI as a person would, in a process of its own, and the check prints one
table; it exits 1 if any step failed. `--device cpu` runs the same steps on the CPU (two gloo processes for
the two-GPU row), a dry run of the check itself on a machine without a GPU.
Usage: python benchmarks/gpu_check.py [--epochs 4] [--work bench/gpu_check] [--device cuda|cpu]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "beetnet_utils", *args], cwd=ROOT, capture_output=True, text=True)
    if check and done.returncode:
        raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1])
    return done


def history(run: Path) -> list[dict]:
    path = run / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


class Check:
    """The table's rows, each a step that either measured something or failed with its one line."""

    def __init__(self):
        self.rows: list[tuple[str, bool, str, float]] = []

    def step(self, name: str, fn) -> object:
        t0 = time.perf_counter()
        try:
            ok, result, value = True, *fn()
        except Exception as exc:  # noqa: BLE001  a failed step is a row of the table, not the end of the check
            ok, result, value = False, f"{type(exc).__name__}: {exc}", None
        self.rows.append((name, ok, result, time.perf_counter() - t0))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {result}", flush=True)
        return value

    def table(self) -> str:
        lines = ["| step | ok | result | s |", "|---|---|---|---:|"]
        lines += [f"| {n} | {'yes' if ok else 'NO'} | {r} | {s:.0f} |" for n, ok, r, s in self.rows]
        return "\n".join(lines)


PROFILE = "demo"  # --profile: smoke for a quick dry run on the CPU


def train_args(cache: Path, run: Path, preset: str, epochs: int, device: str, *extra: str) -> list[str]:
    return ["train", "--profile", PROFILE, "--cache", str(cache), "--run", str(run), "--preset", preset,
            "--epochs", str(epochs), "--device", device, "--amp", "on" if device == "cuda" else "off", *extra]


def trained(run: Path, epochs: int) -> tuple[str, dict]:
    h = history(run)
    if len(h) != epochs or [e["epoch"] for e in h] != list(range(1, epochs + 1)):
        raise RuntimeError(f"history has epochs {[e['epoch'] for e in h]}, not 1..{epochs}")
    last = h[-1]
    if not math.isfinite(last["val_l1"]):
        raise RuntimeError(f"val L1 is {last['val_l1']} after {epochs} epochs")
    samples = sum(e["samples_per_s"] for e in h[1:] or h) / len(h[1:] or h)  # the first epoch warms up
    return f"{epochs} epochs, {samples:.0f} samples/s, val L1 {last['val_l1']:.4f}", {"val": last["val_l1"],
                                                                                    "samples_per_s": samples}


def kill_and_resume(cache: Path, run: Path, epochs: int, device: str, straight: dict | None) -> tuple[str, None]:
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "beetnet_utils", *train_args(cache, run, "best", epochs, device)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not history(run) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = len(history(run))
    if not 1 <= killed_after < epochs:
        raise RuntimeError(f"the kill landed after {killed_after} epochs of {epochs}: use more --epochs")
    again = cli(*train_args(cache, run, "best", epochs, device))
    said = f"resuming {run} after epoch {killed_after}"
    if said not in again.stdout + again.stderr:
        raise RuntimeError(f"the second run did not say '{said}'")
    result, _ = trained(run, epochs)
    versus = f"; straight run {straight['val']:.4f}" if straight else ""
    return f"killed after epoch {killed_after}, resumed: {result}{versus}", None


def bench_train(device: str) -> tuple[str, None]:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--device", device,
                           "--clips", "2000"], cwd=ROOT, capture_output=True, text=True, check=True)
    rows = [line for line in done.stdout.splitlines() if "/s" in line or "projected" in line]
    return "; ".join(" ".join(r.split()) for r in rows), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("bench/gpu_check"))
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--profile", choices=["demo", "smoke"], default="demo", help="smoke: a dry run's quick data")
    ap.add_argument("--skip-speed", action="store_true", help="leave out bench_train's row")
    args = ap.parse_args()
    global PROFILE
    PROFILE = args.profile
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device == "cuda" and not gpus:
        sys.exit("error: no CUDA GPU is visible here: run this on a CUDA machine (--device cpu: a dry run on the CPU)")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"GPU check on {gpus} x {name}" if args.device == "cuda" else "GPU check, dry run on the CPU", flush=True)
    started, check = time.perf_counter(), Check()
    clips, cache = args.work / "clips", args.work / "cache"

    def data():
        cli("download", "--profile", PROFILE, "--source", "demo", "--out", str(clips))
        cli("cache", "--profile", PROFILE, "--clips", str(clips), "--out", str(cache))
        from beetnet_utils import load_cache

        splits = load_cache(cache).splits
        return f"{len(splits)} clips cached, {(splits == 'train').sum()} of them train", None
    check.step(f"{PROFILE} data", data)
    straight = {}
    for preset in ("best", "original"):
        run = args.work / f"run_{preset}"

        def train_preset(preset=preset, run=run):
            shutil.rmtree(run, ignore_errors=True)
            cli(*train_args(cache, run, preset, args.epochs, args.device))
            return trained(run, args.epochs)
        straight[preset] = check.step(f"{preset}, AMP" if args.device == "cuda" else preset, train_preset)
    check.step("kill and resume", lambda: kill_and_resume(cache, args.work / "run_killed", args.epochs, args.device,
                                                           straight.get("best")))
    if not args.skip_speed:
        check.step("bench_train", lambda: bench_train(args.device))
    if gpus >= 2 or args.device == "cpu":
        def two():
            run = args.work / "run_two"
            shutil.rmtree(run, ignore_errors=True)
            cli(*train_args(cache, run, "best", args.epochs, args.device, "--gpus", "2"))
            result, two_ = trained(run, args.epochs)
            one = straight.get("best")
            speedup = f", {two_['samples_per_s'] / one['samples_per_s']:.2f}x one process" if one else ""
            return f"{result}{speedup}", None
        check.step("two processes" if args.device == "cpu" else "two GPUs", two)
    print(f"\n{check.table()}\n\n{name}, torch {torch.__version__}; {(time.perf_counter() - started) / 60:.1f} min")
    sys.exit(0 if all(ok for _, ok, _, _ in check.rows) else 1)


if __name__ == "__main__":
    main()
