"""Listening quality and speed of the mel -> audio inversion: the original pipeline against each step.

Round trip of real clips: audio -> mel dB -> render -> audio, scored against the original audio.
  LSD dB   mel log-spectral distance (beetnet_utils.audio.log_spectral_distance; lower is better)
  SC       spectral convergence on the linear STFT magnitude (audio.spectral_convergence; lower is better)
  ms       wall time of the render only: per clip rendered one at a time, one slider update of
           3 clips (the widgets render 1 to 3 per update; the budget is 300 ms), and per clip in
           one batch of 16 (fewer if --n is smaller)

Rows:
  original      torchaudio InverseMelScale (least squares, negatives clipped) + GriffinLim(32), as before;
                then the same with 100 iterations, to show what iterations alone buy
  KL fit        the non-negative mel -> linear fit + GriffinLim: 32 iterations is quality="fast",
                100 quality="final", and 200 to show that more buys next to nothing

With --run and --cache, also each widget update as a person waits for it: the observer's wall time
(decode, draw the panels, every player's audio; refine where the view has no background thread or
the interpolation's new pair), each move timed once as it comes, 0.5 s apart (--pace) and with no
pause; the budget for a slider is 300 ms. For the compare view also how many moves were drawn from
the encoder's code before their clip was refined, and for a recording picked or a jump far ahead
how long until the refined drawing replaced it. The dropdowns are timed too.

Usage: python benchmarks/bench_listen.py [--n 24] [--clips DIR] [--threads T] [--work bench/listen]
                                        [--run RUN --cache CACHE [--pace 0.5]]
Without --clips it renders clips of the demo set (its modelled pianos); --clips takes any folder of
{recording}_{k}.wav clips (e.g. the rendered piano set) and picks --n of them evenly.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beetnet_utils import download, get_config, list_clips, load_cache, load_run, mel_db  # noqa: E402
from beetnet_utils.audio import mel_to_audio, round_trip  # noqa: E402
from beetnet_utils.features import load_clip  # noqa: E402


def original(mel: torch.Tensor, f, n_iter: int = 32) -> np.ndarray:
    """The inversion as it was before issue 13, verbatim (32 Griffin-Lim iterations)."""
    inv_mel = torchaudio.transforms.InverseMelScale(
        n_stft=f.n_fft // 2 + 1, n_mels=f.n_mels, sample_rate=f.sample_rate, driver="gels")
    griffin_lim = torchaudio.transforms.GriffinLim(
        n_fft=f.n_fft, hop_length=f.hop_length, power=f.power, n_iter=n_iter, length=f.clip_samples)
    torch.manual_seed(0)
    with torch.no_grad():
        return griffin_lim(inv_mel(torch.pow(10.0, mel / 20.0))).numpy()


def load_waves(clips: list[Path], n: int, f) -> torch.Tensor:
    picked = [clips[i] for i in np.linspace(0, len(clips) - 1, min(n, len(clips))).round().astype(int)]
    waves = [load_clip(p, f)[0] for p in picked]
    return torch.stack([w for w in waves if w is not None])


def best_ms(render, mel: torch.Tensor, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        render(mel)
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def slider_updates(run_dir: Path, cache_dir: Path, moves: int = 40, pace: float = 0.5) -> dict[str, dict]:
    """Each update as a person makes it, timed once (first visits, caches included): ms until the
    observer's redraw returns; for the compare view, how many moves were drawn from the encoder's code
    (not yet refined) and, where asked, ms until the refined drawing replaced it.

    A person looks before the next move: `pace` seconds, during which the compare view's background
    work runs. The clip slider is also moved with no pause (an arrow key held down), where that work
    competes with every update for the cores: the worst case."""
    from beetnet_utils.widgets import CompareView, InterpolateView

    run, cache = load_run(run_dir, device="cpu"), load_cache(cache_dir)
    compare, walk = CompareView(run, cache), InterpolateView(run, cache)
    refined = lambda: "data-refined='1'" in compare.readout.value  # noqa: E731

    def timed(widget, values, pause: float = pace, until_refined: bool = False) -> dict:
        out = {"ms": [], "unrefined": 0, "refined_ms": []}
        for v in values:
            time.sleep(pause)
            start = time.perf_counter()
            widget.value = v  # its observer redraws
            out["ms"].append(1000 * (time.perf_counter() - start))
            if widget in (compare.clip, compare.recording):
                out["unrefined"] += not refined()
            while until_refined and not refined():  # the worker draws it again, refined
                if time.perf_counter() - start > 120:
                    raise SystemExit(f"no refined drawing 120 s after {v!r}: {compare.readout.value[:200]}")
                time.sleep(0.005)
            if until_refined:
                out["refined_ms"].append(1000 * (time.perf_counter() - start))
        return out

    recordings = list(compare.recording.options)
    longest = sorted(recordings, key=lambda r: (cache.recordings == r).sum())[-2:]  # the most clips
    picks = [r for r in recordings if r not in longest and r != compare.recording.value][:3] + longest[:1]
    out = {"compare: recording dropdown (refines its first 16 clips)":
           timed(compare.recording, picks, until_refined=True)}
    steps = range(1, min(moves, compare.clip.max) + 1)
    out[f"compare: clip slider, {len(steps)} steps right, {pace:g} s apart"] = timed(compare.clip, steps)
    compare.clip.value = 0
    time.sleep(pace)
    compare.recording.value = longest[1]
    out[f"compare: clip slider, {len(steps)} steps right, no pause"] = timed(compare.clip, steps, pause=0)
    far = [k for k in (compare.clip.max // 2, compare.clip.max * 3 // 4, compare.clip.max)
           if k > steps[-1] + 2 * compare.refiner.WINDOW]
    if far:
        out["compare: clip slider, a jump far ahead (refines its window)"] = \
            timed(compare.clip, far, until_refined=True)
    out["interpolate: clip B dropdown (refines A and B)"] = timed(walk.b, list(walk.b.options)[1:5])
    out["interpolate: alpha slider (decodes only)"] = timed(walk.alpha, [0.1, 0.3, 0.45, 0.7, 0.9])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="clips to score")
    ap.add_argument("--clips", type=Path, help="a folder of real clips instead of the demo set")
    ap.add_argument("--work", type=Path, default=Path("bench/listen"))
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice, as in a notebook)")
    ap.add_argument("--run", type=Path, help="a trained run: also time the widgets' slider updates")
    ap.add_argument("--cache", type=Path, help="the cache that run was trained on")
    ap.add_argument("--pace", type=float, default=0.5, help="seconds a person looks before the next move")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    cfg = get_config("smoke")  # the features are the same in every profile; smoke's demo set is quick to make
    f = cfg.features
    folder = a.clips or download("demo", a.work / "clips", cfg, progress=False).path
    waves = load_waves(list_clips(folder), a.n, f)
    print(f"{len(waves)} clips from {folder}; torch threads {torch.get_num_threads()}")

    rows = {
        "original: least squares + GL 32": lambda m: original(m, f),
        "least squares + GL 100 (iterations alone)": lambda m: original(m, f, 100),
        "KL fit + GL 32 (fast)": lambda m: mel_to_audio(m, f, quality="fast"),
        "KL fit + GL 100 (final)": lambda m: mel_to_audio(m, f, quality="final"),
        "KL fit + GL 200": lambda m: mel_to_audio(m, f, n_iter=200, quality="final"),
    }
    mels = mel_db(waves, f)
    big = min(16, len(mels))
    print(f"| inversion | LSD dB | SC | ms/clip (1 at a time) | ms per 3-clip update | ms/clip (a batch of {big}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, render in rows.items():
        r = round_trip(waves, f, render, batch=1)
        three = best_ms(render, mels[:3])
        batched = best_ms(render, mels[:big], repeats=1) / big
        print(f"| {name} | {r['lsd_db']:.2f} | {r['spectral_convergence']:.3f} | {r['ms_per_clip']:.0f} | "
              f"{three:.0f} | {batched:.0f} |", flush=True)

    if a.run and a.cache:
        print(f"\nwidget updates, {a.run} (each move timed once; budget for a slider 300 ms):")
        print("| update | moves | median ms | max ms | over 300 ms | drawn unrefined | refined after, median ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for view, t in slider_updates(a.run, a.cache, pace=a.pace).items():
            ms, after = t["ms"], f"{np.median(t['refined_ms']):.0f}" if t["refined_ms"] else "-"
            print(f"| {view} | {len(ms)} | {np.median(ms):.0f} | {max(ms):.0f} | {sum(m > 300 for m in ms)} | "
                  f"{t['unrefined'] if view.startswith('compare') else '-'} | {after} |")


if __name__ == "__main__":
    main()
