"""Peak memory of cutting one long recording into clips (`download --source folder`), by its length.

Each measurement is a fresh process (ru_maxrss, so the figure includes Python, torch and numpy: about
0.8 GB before any audio): `streamed` is the product's path (sources.from_folder, 30 s at a time); `whole`
reads the file whole and resamples it in one call (data.read_audio + data.segment), as it did before.

    python benchmarks/bench_long_recording.py --minutes 2 20 60
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

STREAMED = """
from beetnet_utils import get_config
from beetnet_utils.sources import from_folder
clips = from_folder({folder!r}, {out!r}, get_config("smoke").features, progress=False).clips
"""
WHOLE = """
from beetnet_utils import get_config
from beetnet_utils.data import read_audio, segment
audio, sr, _ = read_audio(__import__("pathlib").Path({path!r}))
clips = len(segment(audio.mean(axis=1), sr, get_config("smoke").features))
"""
MEASURE = "\nimport json, resource\nprint(json.dumps([clips, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))\n"


def write_recording(path: Path, minutes: float, sr: int) -> None:
    """Changing tones with a little noise, written a minute at a time (never whole in this process)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, 1, subtype="PCM_16") as f:
        for m in range(math.ceil(minutes)):
            t = np.arange(int(sr * 60 * min(1.0, minutes - m))) / sr
            x = 0.3 * np.sin(2 * np.pi * (220 + 40 * m) * t) + 0.01 * rng.standard_normal(len(t))
            f.write(x.astype(np.float32))


def measure(script: str) -> tuple[int, float]:
    r = subprocess.run([sys.executable, "-c", script + MEASURE], cwd=ROOT, capture_output=True, text=True, check=True)
    clips, kb = json.loads(r.stdout.strip().splitlines()[-1])
    return clips, kb / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[2, 20, 60])
    p.add_argument("--rate", type=int, default=22050, help="the recording's sample rate (resampled to 16 kHz)")
    args = p.parse_args()
    print(f"| minutes at {args.rate} Hz | clips | streamed peak GB | whole peak GB |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            folder = Path(tmp) / f"rec{minutes:g}"
            folder.mkdir()
            write_recording(folder / "take.wav", minutes, args.rate)
            clips, streamed = measure(STREAMED.format(folder=str(folder), out=str(Path(tmp) / f"out{minutes:g}")))
            _, whole = measure(WHOLE.format(path=str(folder / "take.wav")))
            print(f"| {minutes:g} | {clips} | {streamed:.2f} | {whole:.2f} |", flush=True)


if __name__ == "__main__":
    main()
