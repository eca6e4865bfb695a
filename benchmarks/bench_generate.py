"""How real are new spectrograms, and where is realism lost: the decoder, the prior, or the inversion.

For each trained run (preset) on a cache, `beetnet_utils.generate.generation_report` gives, as a
two-sample accuracy (logistic regression on PCA-64 of the standardised mel plus each band's mean
|frame-to-frame change|; 0.5 = cannot tell) and a Fréchet distance in the same features, every
set split by recording (no recording on both sides, nor in both the classifier's halves):
  real halves    two halves of the held-out recordings (a reference for scale)
  decoder        reconstructions of one half against real clips of the other (the decoder's blur)
  floor          two halves of reconstructions of train recordings the priors never saw
  prior NAME     samples of each prior against those reconstructions (the prior's own share)
  midpoint       decoded midpoints of pairs of those clips' codes, against the other half
and the nearest-train distance of each set (dB; samples much nearer than held-out reconstructions
are copies). With --seeds N, each accuracy's mean and spread over N seeds (other recordings in
each half, other classifier halves): the noise the rows are read against. Then the inversion on
the round trip of held-out real clips (audio.round_trip): torchaudio's least squares +
Griffin-Lim 32 (before), and the non-negative fit, fast and final.
Finally a figure: real clips beside their reconstructions and samples from each prior.

Usage, on the runs of `make demo` (its cache and both presets):
  python benchmarks/bench_generate.py --cache runs/demo/cache \\
      --run original=runs/demo/runs/demo-original --run best=runs/demo/runs/demo-best [--figure F.png] [--seeds 10]
on the rendered piano set, after bench_quality.py (its work folder):
  python benchmarks/bench_generate.py --cache bench/quality/cache \\
      --run original=bench/quality/run_original --run best=bench/quality/run_best
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

from beetnet_utils import load_cache, load_run  # noqa: E402
from beetnet_utils.audio import mel_to_audio, round_trip  # noqa: E402
from beetnet_utils.evaluate import realism_table  # noqa: E402
from beetnet_utils.features import load_clip  # noqa: E402
from beetnet_utils.generate import PRIORS, decode_all, encode_all, fit_prior, generation_report  # noqa: E402


def least_squares_griffin_lim(mel: torch.Tensor, f) -> np.ndarray:
    """The inversion before issue 13: InverseMelScale (least squares, negatives clipped) + GriffinLim(32)."""
    inv = torchaudio.transforms.InverseMelScale(n_stft=f.n_fft // 2 + 1, n_mels=f.n_mels, sample_rate=f.sample_rate,
                                                driver="gels")
    gl = torchaudio.transforms.GriffinLim(n_fft=f.n_fft, hop_length=f.hop_length, power=f.power, n_iter=32,
                                          length=f.clip_samples)
    torch.manual_seed(0)
    with torch.no_grad():
        return gl(inv(torch.pow(10.0, torch.as_tensor(mel) / 20.0))).numpy()


def _spread(accuracies: list[float | None]) -> str:
    measured = [a for a in accuracies if a is not None]
    if not measured:
        return "n/m"
    return f"{np.mean(measured):.3f} ± {np.std(measured):.3f} ({min(measured):.3f}-{max(measured):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_FOLDER, once per preset")
    ap.add_argument("--heldout", nargs="+", default=["val", "test"], help="held-out splits (default val test)")
    ap.add_argument("--listen", type=int, default=24, help="held-out clips for the inversion rows")
    ap.add_argument("--seeds", type=int, default=1, help="measure every row over this many seeds: mean and spread")
    ap.add_argument("--figure", type=Path)
    args = ap.parse_args()

    cache = load_cache(args.cache)
    runs = {name: load_run(path) for name, path in (r.split("=", 1) for r in args.run)}
    train, heldout = cache.clips(("train",)), cache.clips(tuple(args.heldout))
    train_db, heldout_db = train[0], heldout[0]
    print(f"{cache.path}: {len(train_db)} train clips of {len(set(train[1]))} recordings, {len(heldout_db)} "
          f"{'+'.join(args.heldout)} clips of {len(set(heldout[1]))}; threads {torch.get_num_threads()}")

    reports, spread = {}, {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        by_seed = [generation_report(run, *train, *heldout, seed=seed) for seed in range(args.seeds)]
        reports[name] = by_seed[0]
        spread[name] = {row: [r["rows"][row]["accuracy"] for r in by_seed] for row in by_seed[0]["rows"]}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print()
    print(realism_table(reports))
    print()
    for name, rep in reports.items():
        rows = rep["rows"]
        floor, gauss = rows["floor"]["accuracy"], rows["prior gaussian"]["accuracy"]
        measured = [r for r in rows if r.startswith("prior") and rows[r]["accuracy"] is not None]
        if floor is None or gauss is None or not measured:
            print(f"{name}: the floor or the Gaussian prior is not measurable here: no gap to close")
            continue
        best = min(measured, key=lambda r: rows[r]["accuracy"])
        closed = (gauss - rows[best]["accuracy"]) / max(gauss - floor, 1e-9)
        print(f"{name}: best prior {best} ({rows[best]['accuracy']:.3f}) closes {100 * closed:.0f}% of the Gaussian's "
              f"gap to the floor ({gauss:.3f} -> {floor:.3f}; goal: at least half)")
    if args.seeds > 1:
        print(f"\naccuracy over seeds 0-{args.seeds - 1}: mean ± standard deviation (min-max)")
        print("| measure | " + " | ".join(runs) + " |")
        print("|---|" + "---:|" * len(runs))
        for row in spread[next(iter(runs))]:
            cells = [_spread(spread[name][row]) for name in runs]
            print(f"| {row} | " + " | ".join(cells) + " |")

    f = cache.features
    idx = np.concatenate([cache.indices(split) for split in args.heldout])
    picked = idx[np.linspace(0, len(idx) - 1, min(args.listen, len(idx))).round().astype(int)]
    clips_dir = Path(cache.meta["clips_dir"])
    waves = [load_clip(clips_dir / cache.names[i], f)[0] for i in picked]
    waves = torch.stack([w for w in waves if w is not None])
    print(f"\ninversion, round trip of {len(waves)} {'+'.join(args.heldout)} clips (audio -> mel -> audio):")
    print("| inversion | LSD dB | spectral convergence | ms per clip |")
    print("|---|---:|---:|---:|")
    for label, render in [("least squares + Griffin-Lim 32 (before)", lambda m: least_squares_griffin_lim(m, f)),
                          ("non-negative fit + Griffin-Lim 32 (fast, sliders)",
                           lambda m: mel_to_audio(m, f, quality="fast")),
                          ("non-negative fit + Griffin-Lim 100 (final)",
                           lambda m: mel_to_audio(m, f, quality="final"))]:
        r = round_trip(waves, f, render)
        print(f"| {label} | {r['lsd_db']:.2f} | {r['spectral_convergence']:.3f} | {r['ms_per_clip']:.0f} |")

    if args.figure:
        from beetnet_utils.plots import grid

        rows = {"real": list(heldout_db[:4])}
        for name, run in runs.items():
            rows[f"{name} recon"] = list(run.reconstruct(heldout_db[:4]).numpy())
            z = encode_all(run, train_db)
            for prior in PRIORS:
                rows[f"{name} {prior}"] = list(decode_all(run, fit_prior(prior, z).sample(4, seed=0)))
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        grid(rows).savefig(args.figure, dpi=70)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
