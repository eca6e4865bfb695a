"""Peak memory of cutting one long recording into clips (`download --source folder`), by its length.

Each measurement is a fresh process (ru_maxrss, so the figure includes Python, torch and numpy: about
0.8 GB before any audio): `streamed` is the product's path (sources.from_folder, 30 s at a time); `whole`
reads the file whole and resamples it in one call (data.read_audio + data.segment), as it did before.

    python benchmarks/bench_long_recording.py --minutes 2 20 60
    python benchmarks/bench_long_recording.py --minutes 60 --rate 44100 --channels 2 --streamed-only
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


def write_recording(path: Path, minutes: float, sr: int, channels: int = 1) -> None:
    """Changing tones with a little noise, written a minute at a time (never whole in this process)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16") as f:
        for m in range(math.ceil(minutes)):
            t = np.arange(int(sr * 60 * min(1.0, minutes - m))) / sr
            x = 0.3 * np.sin(2 * np.pi * (220 + 40 * m) * t) + 0.01 * rng.standard_normal(len(t))
            f.write(np.repeat(x.astype(np.float32)[:, None], channels, axis=1))


def measure(script: str) -> tuple[int, float]:
    r = subprocess.run([sys.executable, "-c", script + MEASURE], cwd=ROOT, capture_output=True, text=True, check=True)
    clips, kb = json.loads(r.stdout.strip().splitlines()[-1])
    return clips, kb / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[2, 20, 60])
    p.add_argument("--rate", type=int, default=22050, help="the recording's sample rate (resampled to 16 kHz)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--streamed-only", action="store_true", help="skip reading the file whole (it needs the memory)")
    args = p.parse_args()
    print(f"| minutes at {args.rate} Hz, {args.channels} channel(s) | clips | streamed peak GB | whole peak GB |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            folder = Path(tmp) / f"rec{minutes:g}"
            folder.mkdir()
            write_recording(folder / "take.wav", minutes, args.rate, args.channels)
            clips, streamed = measure(STREAMED.format(folder=str(folder), out=str(Path(tmp) / f"out{minutes:g}")))
            whole = "-" if args.streamed_only else f"{measure(WHOLE.format(path=str(folder / 'take.wav')))[1]:.2f}"
            print(f"| {minutes:g} | {clips} | {streamed:.2f} | {whole} |", flush=True)


if __name__ == "__main__":
    main()
