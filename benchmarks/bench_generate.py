"""How real are new spectrograms, and where is realism lost: the decoder, the prior, or the inversion.

For each trained run (preset) on a cache, `beetnet_utils.generate.generation_report` gives, as a
two-sample accuracy (logistic regression on PCA-64 of the standardised mel plus each band's mean
|frame-to-frame change|; 0.5 = cannot tell) and a Fréchet distance in the same features:
  real halves    two halves of the held-out real clips (a reference for scale)
  decoder        held-out real clips against reconstructions (the decoder's blur)
  floor          two halves of reconstructions of train clips the priors never saw
  prior NAME     samples of each prior against those reconstructions (the prior's own share)
  midpoint       decoded midpoints of pairs of those clips' codes
and the nearest-train distance of each set (dB; samples much nearer than held-out reconstructions
are copies). Then the inversion on the round trip of held-out real clips (audio.round_trip):
torchaudio's least squares + Griffin-Lim 32 (before), and the non-negative fit, fast and final.
Finally a figure: real clips beside their reconstructions and samples from each prior.

Usage, on the runs of `make demo` (its cache and both presets):
  python benchmarks/bench_generate.py --cache runs/demo/cache \\
      --run original=runs/demo/runs/demo-original --run best=runs/demo/runs/demo-best [--figure F.png]
on the rendered piano set, after bench_quality.py (its work folder):
  python benchmarks/bench_generate.py --cache /tmp/beetnet_bench_quality/cache \\
      --run original=/tmp/beetnet_bench_quality/run_original --run best=/tmp/beetnet_bench_quality/run_best
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
from beetnet_utils.features import load_clip  # noqa: E402
from beetnet_utils.generate import PRIORS, decode_all, encode_all, fit_prior, generation_report, realism_table  # noqa: E402


def least_squares_griffin_lim(mel: torch.Tensor, f) -> np.ndarray:
    """The inversion before issue 13: InverseMelScale (least squares, negatives clipped) + GriffinLim(32)."""
    inv = torchaudio.transforms.InverseMelScale(n_stft=f.n_fft // 2 + 1, n_mels=f.n_mels, sample_rate=f.sample_rate,
                                                driver="gels")
    gl = torchaudio.transforms.GriffinLim(n_fft=f.n_fft, hop_length=f.hop_length, power=f.power, n_iter=32,
                                          length=f.clip_samples)
    torch.manual_seed(0)
    with torch.no_grad():
        return gl(inv(torch.pow(10.0, torch.as_tensor(mel) / 20.0))).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_FOLDER, once per preset")
    ap.add_argument("--split", default="test", help="held-out split (default test)")
    ap.add_argument("--listen", type=int, default=24, help="held-out clips for the inversion rows")
    ap.add_argument("--figure", type=Path)
    args = ap.parse_args()

    cache = load_cache(args.cache)
    runs = {name: load_run(path) for name, path in (r.split("=", 1) for r in args.run)}
    train_db, heldout_db = cache.db("train"), cache.db(args.split)
    print(f"{cache.path}: {len(train_db)} train clips, {len(heldout_db)} {args.split} clips; threads {torch.get_num_threads()}")

    reports = {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        reports[name] = generation_report(run, train_db, heldout_db)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print()
    print(realism_table(reports))
    print()
    for name, rep in reports.items():
        rows = rep["rows"]
        floor = rows["floor"]["accuracy"]
        gauss = rows["prior gaussian"]["accuracy"]
        best = min((r for r in rows if r.startswith("prior")), key=lambda r: rows[r]["accuracy"])
        closed = (gauss - rows[best]["accuracy"]) / max(gauss - floor, 1e-9)
        print(f"{name}: best prior {best} ({rows[best]['accuracy']:.3f}) closes {100 * closed:.0f}% of the Gaussian's "
              f"gap to the floor ({gauss:.3f} -> {floor:.3f}; goal: at least half)")

    f = cache.features
    idx = cache.indices(args.split)
    picked = idx[np.linspace(0, len(idx) - 1, min(args.listen, len(idx))).round().astype(int)]
    clips_dir = Path(cache.meta["clips_dir"])
    waves = [load_clip(clips_dir / cache.names[i], f)[0] for i in picked]
    waves = torch.stack([w for w in waves if w is not None])
    print(f"\ninversion, round trip of {len(waves)} {args.split} clips (audio -> mel -> audio):")
    print("| inversion | LSD dB | spectral convergence | ms per clip |")
    print("|---|---:|---:|---:|")
    for label, render in [("least squares + Griffin-Lim 32 (before)", lambda m: least_squares_griffin_lim(m, f)),
                          ("non-negative fit + Griffin-Lim 32 (fast, sliders)", lambda m: mel_to_audio(m, f, quality="fast")),
                          ("non-negative fit + Griffin-Lim 100 (final)", lambda m: mel_to_audio(m, f, quality="final"))]:
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
