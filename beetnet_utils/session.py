"""What a notebook needs: one set-up call (`start`), then one call per step.

The four steps are methods of `Session`: `download`, `cache`, `train`, `evaluate`. The CLI
verbs call the very same methods (with folders from their arguments instead of the
environment's), so a notebook cell and a shell command cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .cache import META, MelCache, load_cache
from .cache_build import build_cache
from .config import (
    DEFAULT_INIT,
    DEFAULT_PRESET,
    FINETUNED,
    INITS,
    PRESETS,
    PRETRAINED,
    PROFILE_ENV,
    Config,
    get_config,
    with_preset,
)
from .data import ClipFolder, describe
from .distributed import launch, processes
from .evaluate import evaluate, evaluate_clips, save_report
from .pretrained import fine_tune_config, load_pretrained
from .run import Run, load_run
from .runtime import (
    Environment,
    Paths,
    adopt_attached_runs,
    backup_cache,
    colab_secrets,
    detect,
    mount_drive,
    paths,
    restore_cache,
)
from .sources import SOURCES, download
from .storage import BeetNetError, atomic_write
from .train import check_shares, train

# The kernel's environment steers a session (make demo and the tests set these; a person need not).
PRESET_ENV, MINUTES_ENV = "BEETNET_PRESET", "BEETNET_MINUTES"
SOURCE_ENV, EPOCHS_ENV = "BEETNET_SOURCE", "BEETNET_EPOCHS"  # change the profile's clip source and epochs
INIT_ENV = "BEETNET_INIT"  # where notebook 03's `best` starts: pretrained (fine-tune) or scratch
HOME_ENV = "BEETNET_HOME"  # one folder for clips, cache and runs (runtime.paths)


@dataclass(frozen=True)
class Steering:
    """What the BEETNET_* variables of the kernel's environment ask for, each checked where it is read:
    a bad value is one line naming the variable, not a traceback three cells later."""

    preset: str | None = None
    source: str | None = None
    epochs: int | None = None
    minutes: float | None = None
    init: str | None = None

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Steering:
        def bad(name: str, wanted: str) -> BeetNetError:
            return BeetNetError(f"{name}={environ[name]!r} is not {wanted}: fix or unset it")

        preset, source = environ.get(PRESET_ENV) or None, environ.get(SOURCE_ENV) or None
        init = environ.get(INIT_ENV) or None
        if preset is not None and preset not in PRESETS:
            raise bad(PRESET_ENV, f"a preset ({', '.join(PRESETS)})")
        if init is not None and init not in INITS:
            raise bad(INIT_ENV, f"one of {', '.join(INITS)}")
        if source is not None and source not in SOURCES:
            raise bad(SOURCE_ENV, f"a clip source ({', '.join(SOURCES)})")
        epochs = minutes = None
        if environ.get(EPOCHS_ENV):
            try:
                epochs = int(environ[EPOCHS_ENV])
            except ValueError:
                epochs = 0
            if epochs < 1:
                raise bad(EPOCHS_ENV, "a whole number of epochs, at least 1")
        if environ.get(MINUTES_ENV):
            try:
                minutes = float(environ[MINUTES_ENV])
            except ValueError:
                minutes = math.nan
            if not (minutes > 0 and math.isfinite(minutes)):
                raise bad(MINUTES_ENV, "a positive number of minutes")
        return cls(preset, source, epochs, minutes, init)


def check_home(home: str | None) -> None:
    """BEETNET_HOME (runtime.detect reads it), when set, must be a folder BeetNet can make and write."""
    if not home:
        return
    path = Path(home).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".beetnet-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise BeetNetError(f"{HOME_ENV}={home!r} cannot be used as BeetNet's folder ({exc.strerror or exc}): "
                           "point it at a folder you can write, or unset it") from None


@dataclass
class Session:
    """Where it runs, where files live, which settings; and the four steps."""

    env: Environment
    paths: Paths
    config: Config
    preset: str = DEFAULT_PRESET  # the model preset notebook 03 trains
    minutes: float | None = None  # notebook 03's time budget (None: train every epoch)
    init: str = DEFAULT_INIT  # where notebook 03's `best` starts (`original` always from scratch)

    def describe(self) -> str:
        p = self.paths
        return "\n".join([
            f"running on: {self.env.describe()}",
            f"profile:    {self.config.profile} (source {self.config.data.source}, {self.config.train.epochs} epochs, "
            f"model preset {self.preset}"
            + (", fine-tuned from the pretrained model)" if self.fine_tunes else ")"),
            f"clips:      {p.clips}" + (" (an attached dataset, read in place)" if p.clips_attached else ""),
            f"cache:      {p.cache}" + (f" (kept on Drive as {p.cache_archive})" if p.cache_archive else ""),
            f"runs:       {p.runs}",
        ])

    def __repr__(self) -> str:
        return self.describe()

    @property
    def fine_tunes(self) -> bool:
        """Whether notebook 03 fine-tunes the pretrained model (the session's preset is `best`, its init pretrained)."""
        return self.preset == DEFAULT_PRESET and self.init == "pretrained"

    def run_dir(self, preset: str | None = None, init: str = "scratch") -> Path:
        """Where step 3 trains `preset` (or `finetuned`, the run fine-tuned from the pretrained model)."""
        name = FINETUNED if init == "pretrained" else preset or self.preset
        return self.paths.runs / f"{self.config.profile}-{name}"

    # --- the four steps ------------------------------------------------------------------------

    def download(self, source: str | None = None, audio_dir: Path | None = None, progress: bool = True) -> ClipFolder:
        """Step 1: fetch or build the clip folder (`source` defaults to the profile's). Kaggle Notebooks
        with the dataset attached: its clips are used where they are, never copied."""
        if self.paths.clips_attached and (source or self.config.data.source) == "kaggle":
            return describe(self.paths.clips, "kaggle (attached dataset)")
        source = source or self.config.data.source
        clips = download(source, self.paths.clips, self.config, audio_dir, progress)
        if self.env.hosted:
            chosen = {"source": source, "audio_dir": str(Path(audio_dir).resolve()) if audio_dir else None}
            atomic_write(self.clip_choice, lambda p: p.write_text(json.dumps(chosen)))
        return clips

    @property
    def clip_choice(self) -> Path:
        """Where step 1 notes which clips it fetched (beside the runs: on Drive in Colab), so that a later
        notebook on a new machine fetches the same ones: your recordings, not the profile's source."""
        return self.paths.runs.parent / "clips-source.json"

    def fetch_again(self, progress: bool) -> ClipFolder:
        """Step 1 again, as it was done (a hosted runtime gives each notebook its own machine)."""
        try:
            chosen = json.loads(self.clip_choice.read_text())
        except (OSError, ValueError):
            chosen = {}
        audio_dir = chosen.get("audio_dir")
        return self.download(chosen.get("source"), Path(audio_dir) if audio_dir else None, progress)

    def cache(self, progress: bool = True) -> MelCache:
        """Step 2: build or reuse the mel cache; in Colab also keep a one-file copy on Drive. Each Colab
        or Kaggle notebook runs on its own machine, so there the clips of notebook 01 are fetched again if
        missing."""
        if self.env.hosted and not self.paths.clips.is_dir():
            print("the clips are not on this machine (each notebook has its own): fetching them again")
            self.fetch_again(progress)
        cache = build_cache(self.paths.clips, self.paths.cache, self.config.features, self.config.data,
                            progress=progress)
        archive = self.paths.cache_archive
        if archive and (not archive.exists() or archive.stat().st_mtime < (cache.path / META).stat().st_mtime):
            print(f"copying the cache to Drive as one file: {archive}")
            backup_cache(cache.path, archive)
        return cache

    def load_cache(self) -> MelCache:
        """The cache built by step 2: restored from Drive first if the VM lost it. In Colab and Kaggle each
        notebook runs on its own machine, so there a missing cache is built again (from the clips)."""
        if self.paths.cache_archive and restore_cache(self.paths.cache_archive, self.paths.cache):
            print(f"restored the cache from {self.paths.cache_archive}")
        if self.env.hosted and not (self.paths.cache / META).exists():
            print("no mel cache on this machine (each notebook has its own): building it")
            return self.cache(progress=False)
        try:
            return load_cache(self.paths.cache)
        except BeetNetError as exc:
            if not self.env.hosted:
                raise
            print(f"warning: {exc}; building it again")  # a damaged copy from Drive: the clips are still there
            return self.cache(progress=False)

    def settings(self, preset: str | None = None, init: str | None = None, **overrides) -> Config:
        """What step 3 trains: `preset`'s settings with `overrides` (TrainConfig fields). `init="pretrained"`
        fine-tunes the shipped model: `best`'s training settings on the pretrained model's architecture. By
        default `best` starts where the session says (`init`), `original` from scratch (it is the specification's)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        preset = preset or self.preset
        init = init or (self.init if preset == DEFAULT_PRESET else "scratch")  # `original` is the specification's
        if init == "scratch":
            return with_preset(self.config, preset).replace(train=changes)
        if preset != DEFAULT_PRESET:
            raise BeetNetError(f"init pretrained fine-tunes the pretrained {DEFAULT_PRESET}: leave the preset out "
                               f"(it is {preset!r})")
        return fine_tune_config(self.config).replace(train=changes)

    def train(self, preset: str | None = None, run_dir: Path | None = None, device: str | None = None,
              progress: bool = True, gpus: int | str = 1, settings: Config | None = None, init: str | None = None,
              **overrides) -> list[dict]:
        """Step 3: train `preset` (or resume it) on the cache; `overrides` change TrainConfig fields.
        `init="pretrained"`: a new run (default folder `finetuned`) that starts from the pretrained weights;
        None: the session's choice for `best` (see `settings`).

        `gpus` above 1 (or "all") trains one model on that many GPUs: torchrun starts rank.py in as many
        processes, as a subprocess whose lines stream in here as they come (a notebook never forks its
        kernel); with `device="cpu"`, that many CPU processes. `settings`: the exact Config to train.
        """
        cfg = settings or self.settings(preset, init, **overrides)
        run_dir = Path(run_dir or self.run_dir(preset, cfg.train.init))
        procs = processes(gpus, device)
        if procs == 1:
            return train(self.load_cache(), run_dir, cfg, device=device, progress=progress)
        check_shares(cfg.train.batch_size, procs)
        cache = self.load_cache()  # restored and checked here, once, before the ranks read it
        launch(procs, [f"--cache={cache.path}", f"--run={run_dir}", f"--config={cfg.to_json()}",  # one argument
                       *([f"--device={device}"] if device else [])])  # each, though a path may start with -
        return json.loads((run_dir / "history.json").read_text())

    def load_runs(self, device: str | None = None, pretrained: bool = True) -> dict[str, Run]:
        """Every run trained in step 3 for this profile, by name (a preset, or `finetuned`), and the shipped
        `pretrained` model beside them; with no trained run, the pretrained model alone, and a line that says so."""
        names = (*PRESETS, FINETUNED)
        found = {p: self.run_dir(p) for p in names if (self.run_dir(p) / "best.pt").exists()}
        if not found and not pretrained:
            raise BeetNetError(f"no trained run under {self.paths.runs}: run notebook 03 (or `train`) first")
        if not found:
            print(f"no trained run under {self.paths.runs} yet: showing the pretrained BeetNet (notebook 03 trains "
                  "your own)")
        runs = {p: load_run(d, device=device) for p, d in found.items()}
        return runs | ({PRETRAINED: load_pretrained(device)} if pretrained else {})

    def evaluate(self, runs: dict[str, Run] | None = None, clips: Path | None = None,
                 splits: tuple[str, ...] = ("val", "test"), report: Path | None = None, save: bool = True) -> dict:
        """Step 4: every run and the baselines on held-out recordings (or on every clip of `clips`),
        and how real each run's new spectrograms look (`report["realism"]`, see generate.py).

        With `save`, the report is written as JSON to `report` (default: report.json beside the runs).
        """
        runs = runs if runs is not None else self.load_runs()
        cache = self.load_cache()
        if clips is None:
            result = evaluate(runs, cache, splits, realism=True)
        else:
            result = evaluate_clips(runs, cache, clips, self.paths.cache.parent / f"eval_{Path(clips).name}")
        if save:
            save_report(result, report or self.paths.runs / "report.json")
        return result


def for_folders(profile: str | None = None, clips: Path | None = None, cache: Path | None = None,
                runs: Path | None = None) -> Session:
    """A session on folders named explicitly (the CLI's), not the environment's."""
    local = paths(Environment(in_colab=False, gpu_name=None, home_override=None))
    chosen = {k: Path(v) for k, v in {"clips": clips, "cache": cache, "runs": runs}.items() if v is not None}
    return Session(detect(), dataclasses.replace(local, **chosen), get_config(profile))


def start(profile: str | None = None, environ: Mapping[str, str] | None = None) -> Session:
    """The one set-up call: detect the environment; in Colab mount Drive and take Kaggle credentials from
    Colab's secrets; in Kaggle pick up runs of an earlier notebook version attached as input; pick the
    profile (Colab and Kaggle: full; elsewhere: demo); print where everything lives."""
    environ = os.environ if environ is None else environ
    env = detect(environ)
    mounted = mount_drive(env)
    os.environ.update(colab_secrets(env, environ))
    steer = Steering.read(environ)
    cfg = get_config(profile or environ.get(PROFILE_ENV) or ("full" if env.hosted else "demo"))
    if steer.source:
        cfg = cfg.replace(data={"source": steer.source})
    if steer.epochs:
        cfg = cfg.replace(train={"epochs": steer.epochs})
    minutes = steer.minutes
    where = paths(env, drive_mounted=mounted, source=cfg.data.source)
    check_home(env.home_override)
    for run in adopt_attached_runs(env, where.runs):
        print(f"an earlier version's run was attached as input: copied to {run} to resume it")
    session = Session(env, where, cfg, steer.preset or DEFAULT_PRESET, minutes, steer.init or DEFAULT_INIT)
    print(session.describe())
    return session
