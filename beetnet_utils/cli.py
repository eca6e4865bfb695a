"""`python -m beetnet_utils {download,cache,train,evaluate,demo}`: the notebooks' steps from a shell.

Each verb calls the same `Session` step as the notebook cell, on the folders its arguments name.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .cache import SPLITS
from .config import AMP_MODES, DEFAULT_PRESET, INITS, PRESETS, PRETRAINED, PROFILES, Config
from .evaluate import markdown_table, save_report
from .pipeline import demo
from .pretrained import load_pretrained
from .run import load_run
from .runtime import DEVICES
from .session import for_folders
from .sources import SOURCES
from .storage import BeetNetError


def watched() -> bool:
    """Progress bars only where a person watches: a terminal. Redirected to a log file, a run writes one line
    per epoch instead of thousands of carriage-return updates."""
    return sys.stderr.isatty()


def _download(args: argparse.Namespace) -> None:
    session = for_folders(args.profile, clips=args.out)
    print(session.download(args.source, args.audio_dir, progress=watched()).summary())


def _cache(args: argparse.Namespace) -> None:
    session = for_folders(args.profile, clips=args.clips, cache=args.out)
    print(json.dumps(session.cache(progress=watched()).summary(), indent=2))


def _train(args: argparse.Namespace) -> None:
    session = for_folders(args.profile, cache=args.cache)
    settings = Config.from_json(args.settings.read_text()) if args.settings else None
    history = session.train(args.preset, args.run, device=args.device, gpus=args.gpus, settings=settings,
                            progress=watched(), init=args.init,
                            epochs=args.epochs, batch_size=args.batch_size, minutes=args.minutes,
                            budget_minutes=args.budget_minutes, amp=args.amp)
    if history:
        best = min(history, key=lambda h: h["val_l1"])
        print(f"best val L1 {best['val_l1']:.4f} ({best['val_l1_db']:.2f} dB) at epoch {best['epoch']}; "
              f"checkpoints, history.json and loss.png in {args.run}")


def _evaluate(args: argparse.Namespace) -> None:
    session = for_folders(args.profile, cache=args.cache)
    if not (args.run or args.pretrained):
        raise BeetNetError("evaluate needs --run FOLDER, --pretrained, or both")
    runs = {"beetnet": load_run(args.run, device=args.device)} if args.run else {}
    runs |= {PRETRAINED: load_pretrained(args.device)} if args.pretrained else {}
    report = session.evaluate(runs, args.clips, (args.split,) if args.split else ("val", "test"), save=False)
    print(markdown_table(report))  # first, so a --json that cannot be written loses nothing computed
    if args.json:
        save_report(report, args.json)
        print(f"report written to {args.json}")


def _demo(args: argparse.Namespace) -> None:
    demo(args.out, args.profile or "demo")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beetnet_utils", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, fn) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--profile", choices=list(PROFILES), default=None,
                        help="settings profile (default: $BEETNET_PROFILE or 'full')")
        sp.set_defaults(fn=fn)
        return sp

    d = add("download", "Fetch or build the folder of 2 s clips.", _download)
    d.add_argument("--source", choices=SOURCES, required=True)
    d.add_argument("--audio-dir", type=Path, help="your recordings, for --source folder")
    d.add_argument("--out", type=Path, required=True, help="clip folder to create")

    c = add("cache", "Turn a clip folder into the mel cache (reused when nothing changed).", _cache)
    c.add_argument("--clips", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)

    t = add("train", "Train the autoencoder, or resume the run in --run where it stopped.", _train)
    t.add_argument("--cache", type=Path, required=True)
    t.add_argument("--run", type=Path, required=True, help="run folder for checkpoints and history")
    t.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help="best (ours, the default): the code as a spectral envelope and 8 steps along the clip, "
                        "trained for sharp onsets; original: the specification's model")
    t.add_argument("--init", choices=INITS, default="scratch", help="pretrained: a new run that fine-tunes the "
                   "shipped model (best's settings on its architecture); scratch: seeded weights")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--device", choices=DEVICES, help="default: CUDA when present")
    t.add_argument("--minutes", type=float, help="this session's budget: stop cleanly after the epoch that crosses it; "
                   "run again to continue, on the same learning-rate schedule as a run that never stopped")
    t.add_argument("--budget-minutes", type=float, help="the whole run's budget over every session: the schedule "
                   "anneals over it and the run ends when it is spent (fixed when the run starts)")
    t.add_argument("--amp", choices=AMP_MODES, help="mixed precision (auto: on CUDA only)")
    t.add_argument("--gpus", default="1", metavar="N|all", help="train one model on N GPUs (all: every GPU there is, "
                   "or the CPU when there is none) in N processes, started by torchrun; the batch is shared out, so "
                   "it stays --batch-size. With --device cpu: N CPU processes")
    t.add_argument("--settings", type=Path, metavar="JSON", help="train exactly these settings (a Config as JSON, "
                   "instead of --profile, --preset and the options above)")

    e = add("evaluate", "Score a run and the baselines on held-out recordings (or another clip folder).", _evaluate)
    e.add_argument("--run", type=Path, help="a trained run folder")
    e.add_argument("--pretrained", action="store_true", help="also (or only) the shipped pretrained model")
    e.add_argument("--cache", type=Path, required=True,
                   help="the cache the run was trained on (baselines fit its train split)")
    e.add_argument("--clips", type=Path, help="another folder of clips, never seen: all of it is scored")
    e.add_argument("--split", choices=SPLITS, help="one split (default: val and test)")
    e.add_argument("--json", type=Path, help="write the report here")
    e.add_argument("--device", choices=DEVICES)

    m = add("demo", "Run the four notebooks headless (what `make demo` does); keeps executed copies and figures.",
            _demo)
    m.add_argument("--out", type=Path, default=Path("runs/demo"))
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (a host stopping a kernel or a container), handled as Ctrl-C is: workers stopped, files intact."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return guarded(lambda: args.fn(args))


def guarded(command: Callable[[], None]) -> int:
    """Run a command as the shell sees it: an error a user can act on is one line on stderr (exit code 2);
    Ctrl-C and SIGTERM stop it cleanly, with one line (130, 143)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        command()
    except (BeetNetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that is a file, under a file, or not ours to write: the OS says which
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}: choose another path (nothing was replaced)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        what = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        print(f"{what}: every file BeetNet had finished writing is intact; run the same command to continue",
              file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    return 0
