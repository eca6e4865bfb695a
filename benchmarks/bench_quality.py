"""Model quality on realistic piano audio: the presets under the same time budget, beside baselines.

Data: the set that benchmarks/render_piano_set.py renders (public-domain scores, FluidR3 GM piano,
45 recordings, 5,044 clips), split by recording with the project's own split; and the same scores
rendered with a soundfont the models never heard (TimGM6mb), scored on the test recordings.

Prints one table, like for like: baselines (global mean, clip's own mean spectrum, PCA-256, and
PCA-256 + refine: PCA's codes fitted by the same encode-time refinement as ours) and the presets
(ours also without their refinement), on validation and test recordings and under the unseen
soundfont, in standardised L1 and dB, with training time and samples per second; then the encode time
per clip on the CPU of `--subject` (default `best`) and its goals. `--presets` also takes the
EXPERIMENTS of earlier rounds (config.py: `local`), kept reproducible here; the retired `pca_gru` and
`pca_gru_sharp` at commit 39a3bf8.
`--ablation [ROUTE ...]` also trains the subject with each route of ABLATIONS (or those named)
switched off, one at a time, and prints a second table; `--ablation-minutes M` gives those rows a
budget of their own, with the subject retrained at M beside them (and the main table then trains
only the --presets named, none with `--presets` alone).

Usage (render the sets first, see render_piano_set.py):
  python benchmarks/bench_quality.py --clips bench/pianoset/clips \\
      --unseen-clips bench/pianoset-timgm/clips --minutes 12 [--figure docs/quality_loss.png]
  python benchmarks/bench_quality.py --clips bench/pianoset/clips \\
      --unseen-clips bench/pianoset-timgm/clips --presets --ablation --ablation-minutes 4
A quick end-to-end check (about a minute; the numbers mean nothing):
  python benchmarks/bench_quality.py --clips bench/pianoset/clips \\
      --unseen-clips bench/pianoset-timgm/clips --minutes 0.2 --max-recordings 12 --ablation
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beetnet_utils import MelCache, build_cache, get_config, list_clips, load_run, train  # noqa: E402
from beetnet_utils.config import EXPERIMENTS, PRESETS, Config, with_preset  # noqa: E402
from beetnet_utils.data import parse_clip_name  # noqa: E402
from beetnet_utils.evaluate import Baselines, reconstruct_all, refined_pca, score  # noqa: E402
from beetnet_utils.train import quiet  # noqa: E402

# the subject with one route switched off: name -> the config sections it changes. The routes of `best` (and of
# round 5's `local`, the same architecture).
ABLATIONS = {
    "no_flux": {"train": {"flux_weight": 0.0}},  # best's sharpness term (local has none)
    "no_envelope": {"model": {"local": {"envelope_dims": 0, "channels": 32}}},  # all 256 numbers local: 8 steps of 32
    "no_eq": {"train": {"eq_db": 0.0}},
    "no_refine": {"model": {"refine_steps": 0}},
}
ENCODE_TIME = {"refine_steps", "refine_lr"}  # model settings training never reads


def plain(name: str) -> str:
    return f"{name} (no refine)"


def encode_time_only(changes: dict) -> bool:
    """True when training would give `best`'s weights anyway, so the row reuses them instead of retraining."""
    return set(changes) == {"model"} and set(changes["model"]) <= ENCODE_TIME


def link_recordings(clips: Path, recordings: list[str], dest: Path) -> Path:
    """A fresh folder of links to the clips of these recordings only: a quick check on a subset."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for p in list_clips(clips):
        if parse_clip_name(p.name)[0] in recordings:
            (dest / p.name).symlink_to(p.resolve())
    return dest


def encode_ms_per_clip(run_dir: Path, x: np.ndarray, refine: bool, batch: int = 256) -> float:
    """Wall time of a run's encoder per clip on the CPU, in batches of `batch`, with or without refinement."""
    run = load_run(run_dir, device="cpu")
    run.encode(x[:8], refine)  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        run.encode(x[i:i + batch], refine)
    return 1000 * (time.perf_counter() - t0) / len(x)


def change(a: float, b: float) -> str:
    """How much lower a is than b, in percent (positive: a is better)."""
    return f"{100 * (1 - a / b):+.1f}%"


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """["train.flux_weight=0", ...] -> {"train": {"flux_weight": 0}}: changes for Config.replace."""
    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(section, {})[name] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def worse(a: float, b: float) -> str:
    """How much higher a is than b, in percent (positive: a is worse)."""
    return f"{100 * (a / b - 1):+.1f}%"


def routes_of(subject: str) -> dict[str, dict]:
    return ABLATIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, --ablation resolved to the subject's routes (all when none is named) and --ablation-minutes
    to its default: a route the subject lacks is an argparse error, before any data is read."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, required=True, help="the rendered set's clips/ folder")
    ap.add_argument("--unseen-clips", type=Path, help="the same scores, another soundfont")
    ap.add_argument("--minutes", type=float, default=12.0, help="training budget per preset (and per ablation)")
    ap.add_argument("--epochs", type=int, help="train each model this many epochs instead of to --minutes (a "
                    "budget that does not depend on what else the machine is doing)")
    ap.add_argument("--presets", nargs="*", default=["best"], choices=[*PRESETS, *EXPERIMENTS],
                    help="the presets of the main table: ours, the specification's, or an earlier round's")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                    help="change a setting of every preset trained, e.g. train.flux_weight=0 (repeatable; the "
                         "value is read as JSON, else as a string)")
    ap.add_argument("--subject", choices=["best", "local"], default="best",
                    help="the preset the encode time, the goals and the ablation are about")
    ap.add_argument("--ablation", nargs="*", choices=sorted(ABLATIONS), metavar="ROUTE",
                    help=f"also train the subject with each route off, one at a time: {', '.join(ABLATIONS)} "
                         "(all when none is named)")
    ap.add_argument("--ablation-minutes", type=float, help="budget of each ablation row (default --minutes)")
    ap.add_argument("--max-recordings", type=int, help="only the first N recordings (a quick check)")
    ap.add_argument("--encode-clips", type=int, default=512, help="test clips timed for the encode time")
    ap.add_argument("--work", type=Path, default=Path("bench/quality"))
    ap.add_argument("--figure", type=Path, help="write the loss curves of the presets here")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = ap.parse_args(argv)
    routes = routes_of(args.subject)
    args.ablation = None if args.ablation is None else (args.ablation or list(routes))
    if args.ablation and set(args.ablation) - set(routes):
        ap.error(f"{args.subject}'s routes are {', '.join(routes)} "
                 f"(not {', '.join(sorted(set(args.ablation) - set(routes)))})")
    args.ablation_minutes = args.ablation_minutes or args.minutes
    return args


@dataclass
class Bench:
    """What the stages share: each stage adds its scores, timing and loss curves here, and the tables,
    the goals and results.json read them back."""
    args: argparse.Namespace
    cfg: Config  # the full profile under the run's budget (before any preset)
    cache: MelCache
    data: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (mels, recordings): val, test, unseen soundfont
    results: dict[str, dict] = field(default_factory=dict)  # split -> model -> score
    timing: dict[str, dict] = field(default_factory=dict)  # model -> training and evaluation time; encode_ms
    histories: dict[str, list[dict]] = field(default_factory=dict)  # model -> training history
    ablated: dict[str, dict] = field(default_factory=dict)  # route -> the config changes it made
    encode_clips: int = 0  # how many test clips the encode time was measured on

    @property
    def subject(self) -> str:
        return self.args.subject

    @property
    def pca(self) -> str:
        return f"pca_{self.cfg.model.latent_dim}"

    @property
    def pca_refined(self) -> str:
        return f"{self.pca} + refine"

    @property
    def subject_is_reference(self) -> bool:
        """The ablation rows are compared with the subject at their own budget: the main table's, or one of
        their own (then the subject is retrained at it)."""
        return self.args.ablation is not None and self.args.ablation_minutes == self.args.minutes

    @property
    def presets(self) -> list[str]:
        return list(dict.fromkeys([*self.args.presets, *([self.subject] if self.subject_is_reference else [])]))

    @property
    def reference(self) -> str:
        """The ablation table's first row: the subject at the ablation budget."""
        return self.subject if self.subject_is_reference else f"{self.subject} ({self.args.ablation_minutes:g} min)"

    @property
    def reference_dir(self) -> Path:
        return self.args.work / (f"run_{self.subject}" if self.subject_is_reference else f"run_{self.subject}_ablation")


def load_data(args: argparse.Namespace) -> Bench:
    """The caches (of a subset of links with --max-recordings) and the clips scored: val and test, and the
    unseen soundfont's renderings of the test recordings only (music no model trained on, in a new sound)."""
    clips, unseen_clips = args.clips, args.unseen_clips
    if args.max_recordings:
        recs = sorted({parse_clip_name(p.name)[0] for p in list_clips(clips)})[:args.max_recordings]
        clips = link_recordings(clips, recs, args.work / "subset")
        if unseen_clips:
            unseen_clips = link_recordings(unseen_clips, recs, args.work / "subset_unseen")
    budget = {"epochs": args.epochs, "budget_minutes": None} if args.epochs else \
        {"epochs": 1000, "budget_minutes": args.minutes}
    cfg = get_config("full").replace(train=budget)
    cache = build_cache(clips, args.work / "cache", cfg.features, cfg.data, progress=False, log=quiet)
    test_recs = set(cache.recordings[cache.indices("test")])
    data = {s: (cache.mels[cache.indices(s)].astype(np.float32), cache.recordings[cache.indices(s)])
            for s in ("val", "test")}
    if unseen_clips:
        other = build_cache(unseen_clips, args.work / "cache_unseen", cfg.features, cfg.data, progress=False,
                            log=quiet, split=False)
        keep = np.isin(other.recordings, list(test_recs))
        data["unseen soundfont"] = (other.mels[keep].astype(np.float32), other.recordings[keep])
    return Bench(args, cfg, cache, data)


def score_baselines(bench: Bench) -> None:
    """The baselines, PCA's codes refined with the subject's own refinement settings."""
    cache, f = bench.cache, bench.cache.features
    subject_model = with_preset(bench.cfg, bench.subject).model
    baselines = Baselines.fit(cache.clips("train").db, bench.cfg.model.latent_dim, (f.db_min, f.db_max))
    stats = {"mean": cache.mean, "std": cache.std}
    bench.results = {name: {} for name in bench.data}
    for name, (x, recs) in bench.data.items():
        preds = baselines.predict(x) | {bench.pca_refined: refined_pca(baselines.pca, x, stats, f.db_range,
                                                                       subject_model.refine_steps,
                                                                       subject_model.refine_lr)}
        bench.results[name] |= score(preds, x, recs, cache.std)["models"]


def train_and_score(bench: Bench, name: str, run_cfg: Config, run_dir: Path) -> None:
    """Train one model afresh and score it on every split (a preset also without its refinement)."""
    args, timing = bench.args, bench.timing
    shutil.rmtree(run_dir, ignore_errors=True)
    history = train(bench.cache, run_dir, run_cfg, device=args.device, progress=False, log=quiet)
    bench.histories[name] = history
    timing[name] = {"minutes": sum(h["seconds"] for h in history) / 60, "epochs": len(history),
                    "samples_per_s": float(np.mean([h["samples_per_s"] for h in history]))}
    run = load_run(run_dir, device=args.device)
    t0 = time.perf_counter()
    for split, (x, recs) in bench.data.items():
        preds = {name: reconstruct_all(run, x)}
        if run.config.model.refine_steps and (name in PRESETS or name in EXPERIMENTS):
            preds[plain(name)] = reconstruct_all(run, x, refine=False)
        bench.results[split] |= score(preds, x, recs, run.stats["std"])["models"]
    timing[name]["eval_s"] = time.perf_counter() - t0
    print(f"{name}: {len(history)} epochs in {timing[name]['minutes']:.1f} min, "
          f"evaluation {timing[name]['eval_s']:.0f} s", flush=True)


def train_presets(bench: Bench) -> None:
    """The main table's presets (with --set's changes), then the subject's encode time if it was one."""
    args, overrides = bench.args, parse_overrides(bench.args.overrides)
    for preset in bench.presets:
        train_and_score(bench, preset, with_preset(bench.cfg, preset).replace(**overrides), args.work / f"run_{preset}")
    if bench.subject in bench.timing:
        x_test = bench.data["test"][0][:args.encode_clips]
        bench.encode_clips = len(x_test)
        bench.timing["encode_ms"] = {key: encode_ms_per_clip(args.work / f"run_{bench.subject}", x_test, refine)
                                     for key, refine in (("refine", True), ("plain", False))}


def run_ablation(bench: Bench) -> None:
    """The subject with each route off, at the ablation budget; a route that only changes encode-time
    settings reuses the reference's weights instead of retraining."""
    args, subject, reference = bench.args, bench.subject, bench.reference
    if args.ablation is None:
        return
    ablation_cfg = with_preset(bench.cfg if args.epochs else
                               bench.cfg.replace(train={"budget_minutes": args.ablation_minutes}), subject)
    if not bench.subject_is_reference:
        train_and_score(bench, reference, ablation_cfg, bench.reference_dir)
    for name in args.ablation:
        changes = routes_of(subject)[name]
        if encode_time_only(changes):  # the reference's weights, encoded with these settings
            run = load_run(bench.reference_dir, device=args.device)
            run.config = run.config.replace(**changes)
            for split, (x, recs) in bench.data.items():
                bench.results[split] |= score({name: reconstruct_all(run, x)}, x, recs, run.stats["std"])["models"]
            bench.timing[name] = bench.timing[reference] | {"reused": True}
        else:
            train_and_score(bench, name, ablation_cfg.replace(**changes), args.work / f"run_{name}")
        bench.ablated[name] = changes


def print_table(bench: Bench) -> None:
    args, cache, results, timing = bench.args, bench.cache, bench.results, bench.timing
    n = {name: len(x) for name, (x, _) in bench.data.items()}
    print(f"\n{len(cache.names)} clips: train {len(cache.indices('train'))} clips / "
          f"{len(set(cache.recordings[cache.indices('train')]))} recordings; "
          + "; ".join(f"{k} {v} clips" for k, v in n.items())
          + f"; budget {args.minutes:g} min per preset on {'cuda' if args.device == 'cuda' else 'cpu'}")
    cols = list(bench.data)
    print("| model | " + " | ".join(f"{c} L1 (std) | {c} L1 dB" for c in cols) + " | train min | samples/s |")
    print("|---|" + "---:|" * (2 * len(cols) + 2))
    rows = ["global_mean", "clip_mean_spectrum", bench.pca, bench.pca_refined]
    rows += [m for p in bench.presets for m in ((plain(p), p) if plain(p) in results["test"] else (p,))]
    for m in rows:
        cells = [f"{results[c][m]['l1_std']:.4f} | {results[c][m]['l1_db']:.2f}" for c in cols]
        t = timing.get(m)
        extra = f"{t['minutes']:.1f} ({t['epochs']} ep) | {t['samples_per_s']:.0f}" if t else "- | -"
        print(f"| {m} | " + " | ".join(cells) + f" | {extra} |")


def print_goals(bench: Bench) -> None:
    """The subject's encode time, then how far its test L1 is from the goals and from the other presets."""
    subject, results = bench.subject, bench.results
    pca, pca_refined = bench.pca, bench.pca_refined
    if "encode_ms" in bench.timing:
        e, steps = bench.timing["encode_ms"], with_preset(bench.cfg, subject).model.refine_steps
        print(f"\n{subject}'s encode time per clip on the CPU (batches of 256, {bench.encode_clips} test clips, "
              f"{torch.get_num_threads()} threads): {e['refine']:.2f} ms with refinement "
              f"({steps} steps), {e['plain']:.3f} ms without")
    if subject not in results["test"]:
        return
    b, p, pr = (results["test"][m]["l1_std"] for m in (subject, pca, pca_refined))
    print(f"\ngoal 1: {subject} {change(b, p)} lower test L1 than PCA-256 (goal: at least 17%)")
    print(f"        {subject} {change(b, pr)} lower test L1 than PCA-256 + refine")
    if plain(subject) in results["test"]:
        bp = results["test"][plain(subject)]["l1_std"]
        print(f"        {plain(subject)} {change(bp, p)} lower than PCA-256, "
              f"{change(bp, pr)} than PCA-256 + refine")
    if "unseen soundfont" in results:
        u = results["unseen soundfont"]
        bu, pu, pru = (u[m]["l1_std"] for m in (subject, pca, pca_refined))
        print(f"goal 2: under the unseen soundfont {subject} {bu:.4f} vs PCA-256 {pu:.4f}: {change(bu, pu)} lower "
              f"(goal: at least 16%); vs PCA-256 + refine {pru:.4f}: {change(bu, pru)}")
    for other_preset in ("best", "original", "local"):
        if other_preset != subject and other_preset in results["test"]:
            other_l1 = results["test"][other_preset]["l1_std"]
            print(f"{subject} {change(b, other_l1)} lower test L1 than {other_preset}")


def print_ablation(bench: Bench) -> None:
    if not bench.ablated:
        return
    subject, reference, results, ablated = bench.subject, bench.reference, bench.results, bench.ablated
    cols = [c for c in ("test", "unseen soundfont") if c in results]
    print(f"\nAblation: {subject} with one route off, each {bench.timing[reference]['minutes']:.1f} min "
          f"({', '.join('unseen recordings' if c == 'test' else c for c in cols)}; "
          f"vs {subject}: how much higher L1 is without the route)")
    print("| model | changes | " + " | ".join(f"{c} L1 (std) | {c} L1 dB | vs {subject}" for c in cols)
          + " | train min |")
    print("|---|---|" + "---:|" * (3 * len(cols) + 1))
    for m in [reference, *ablated]:
        what = "; ".join(f"{s}.{k}={v}" for s, kv in ablated.get(m, {}).items() for k, v in kv.items()) or "-"
        cells = [f"{results[c][m]['l1_std']:.4f} | {results[c][m]['l1_db']:.2f} | "
                 f"{worse(results[c][m]['l1_std'], results[c][reference]['l1_std']) if m != reference else '-'}"
                 for c in cols]
        t = bench.timing[m]
        extra = f"{reference}'s weights" if t.get("reused") else f"{t['minutes']:.1f} ({t['epochs']} ep)"
        print(f"| {m} | {what} | " + " | ".join(cells) + f" | {extra} |")


def write_outputs(bench: Bench, started: float) -> None:
    """The presets' loss curves (with --figure) and results.json."""
    args = bench.args
    if args.figure:
        from beetnet_utils.plots import loss_curves

        args.figure.parent.mkdir(parents=True, exist_ok=True)
        curves = loss_curves({p: bench.histories[p] for p in bench.presets if p in bench.histories})
        curves.savefig(args.figure, dpi=90, bbox_inches="tight")
    (args.work / "results.json").write_text(json.dumps({"results": bench.results, "timing": bench.timing,
                                                        "ablations": bench.ablated}, indent=2, default=list))
    print(f"total {(time.perf_counter() - started) / 60:.1f} min; results in {args.work / 'results.json'}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    bench = load_data(args)
    score_baselines(bench)
    train_presets(bench)
    run_ablation(bench)
    print_table(bench)
    print_goals(bench)
    print_ablation(bench)
    write_outputs(bench, started)


if __name__ == "__main__":
    main()
