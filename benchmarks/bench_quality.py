"""Model quality on realistic piano audio: `seed` and `best` under the same time budget, beside baselines.

Data: the set that ../shared/bench-data/render_piano_set.py renders (public-domain scores, FluidR3 GM
piano, ~45 recordings, ~5,000 clips), split by recording with the project's own split; and the same
scores rendered with a soundfont the models never heard (TimGM6mb), scored on the test recordings.

Prints one table: baselines (global mean, clip's own mean spectrum, PCA-256) and both presets, on
validation and test recordings and under the unseen soundfont, in standardised L1 and dB, with
training time and samples per second; then the goals. Saves the loss curves of both presets.

Usage (render the sets first, see the README):
  python benchmarks/bench_quality.py --clips /work/bench/pianoset/clips \\
      --unseen-clips /work/bench/pianoset-timgm/clips --minutes 12 [--figure docs/quality_loss.png]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beetnet_utils import build_cache, get_config, load_run, train  # noqa: E402
from beetnet_utils.config import with_preset  # noqa: E402
from beetnet_utils.evaluate import Baselines, reconstruct_all, score  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, required=True, help="the rendered set's clips/ folder")
    ap.add_argument("--unseen-clips", type=Path, help="the same scores, another soundfont")
    ap.add_argument("--minutes", type=float, default=12.0, help="training budget per preset")
    ap.add_argument("--presets", nargs="+", default=["seed", "best"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/beetnet_bench_quality"))
    ap.add_argument("--figure", type=Path, help="write the loss curves of the presets here")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    quiet = lambda m: None  # noqa: E731

    cfg = get_config("full").replace(train={"epochs": 1000, "minutes": args.minutes})
    cache = build_cache(args.clips, args.work / "cache", cfg.features, cfg.data, progress=False, log=quiet)
    test_recs = set(cache.recordings[cache.indices("test")])
    unseen = None
    if args.unseen_clips:
        other = build_cache(args.unseen_clips, args.work / "cache_unseen", cfg.features, cfg.data, progress=False,
                            log=quiet, split=False)
        keep = np.isin(other.recordings, list(test_recs))
        unseen = (other.mels[keep].astype(np.float32), other.recordings[keep])

    f = cache.features
    baselines = Baselines.fit(cache.db("train"), cfg.model.latent_dim, (f.db_min, f.db_max))
    data = {s: (cache.mels[cache.indices(s)].astype(np.float32), cache.recordings[cache.indices(s)])
            for s in ("val", "test")}
    if unseen is not None:
        data["unseen soundfont"] = unseen

    results, histories, timing = {}, {}, {}
    for preset in args.presets:
        run_dir = args.work / f"run_{preset}"
        shutil.rmtree(run_dir, ignore_errors=True)
        history = train(cache, run_dir, with_preset(cfg, preset), device=args.device, progress=False, log=quiet)
        histories[preset] = history
        timing[preset] = {"minutes": sum(h["seconds"] for h in history) / 60, "epochs": len(history),
                          "samples_per_s": float(np.mean([h["samples_per_s"] for h in history]))}
        run = load_run(run_dir, device=args.device)
        t0 = time.perf_counter()
        for name, (x, recs) in data.items():
            results.setdefault(name, {})
            scored = score({preset: reconstruct_all(run, x)} | baselines.predict(x), x, recs, run.stats["std"])
            results[name].update(scored["models"])
        timing[preset]["eval_s"] = time.perf_counter() - t0
        print(f"{preset}: {len(history)} epochs in {timing[preset]['minutes']:.1f} min, "
              f"evaluation {timing[preset]['eval_s']:.0f} s", flush=True)

    n = {name: len(x) for name, (x, _) in data.items()}
    print(f"\n{len(cache.names)} clips: train {len(cache.indices('train'))} clips / "
          f"{len(set(cache.recordings[cache.indices('train')]))} recordings; "
          + "; ".join(f"{k} {v} clips" for k, v in n.items())
          + f"; budget {args.minutes:g} min per preset on {'cuda' if args.device == 'cuda' else 'cpu'}")
    cols = list(data)
    print("| model | " + " | ".join(f"{c} L1 (std) | {c} L1 dB" for c in cols) + " | train min | samples/s |")
    print("|---|" + "---:|" * (2 * len(cols) + 2))
    models = ["global_mean", "clip_mean_spectrum", f"pca_{cfg.model.latent_dim}", *args.presets]
    for m in models:
        cells = [f"{results[c][m]['l1_std']:.4f} | {results[c][m]['l1_db']:.2f}" for c in cols]
        t = timing.get(m)
        extra = f"{t['minutes']:.1f} ({t['epochs']} ep) | {t['samples_per_s']:.0f}" if t else "- | -"
        print(f"| {m} | " + " | ".join(cells) + f" | {extra} |")

    pca = f"pca_{cfg.model.latent_dim}"
    if "best" in results["test"]:
        b, p = results["test"]["best"]["l1_std"], results["test"][pca]["l1_std"]
        print(f"\ngoal 1: best {100 * (1 - b / p):+.1f}% lower test L1 than PCA-256 (goal: at least 3%)")
        if "unseen soundfont" in results:
            bu, pu = results["unseen soundfont"]["best"]["l1_std"], results["unseen soundfont"][pca]["l1_std"]
            print(f"goal 2: under the unseen soundfont best {bu:.4f} vs PCA-256 {pu:.4f} "
                  f"({100 * (1 - bu / pu):+.1f}%; goal: no worse)")
        if "seed" in results["test"]:
            s = results["test"]["seed"]["l1_std"]
            print(f"goal 3: best {100 * (1 - b / s):+.1f}% lower test L1 than seed (goal: at least 40%)")
    if args.figure:
        from beetnet_utils.plots import loss_curves

        args.figure.parent.mkdir(parents=True, exist_ok=True)
        loss_curves(histories).savefig(args.figure, dpi=90, bbox_inches="tight")
    (args.work / "results.json").write_text(json.dumps({"results": results, "timing": timing}, indent=2))
    print(f"total {(time.perf_counter() - started) / 60:.1f} min; results in {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
