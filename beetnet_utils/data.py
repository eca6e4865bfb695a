"""Four sources, one result: a folder of mono 16 kHz 2.0 s 16-bit WAVs named `{recording}_{k}.wav`.

`kaggle` is the curated set the original used; `musicnet` rebuilds it from MusicNet
with consecutive, non-overlapping segments; `folder` takes a user's own recordings;
`demo` synthesises a small Beethoven set in code. A finished folder carries a
`manifest.json`, so asking again for the same thing reuses it.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from tqdm.auto import tqdm

from . import synth
from .config import Config, DataConfig, FeatureConfig, stable_hash
from .storage import BeetNetError, atomic_dir

SOURCES = ("kaggle", "musicnet", "folder", "demo")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MANIFEST = "manifest.json"
_CLIP_NAME = re.compile(r"^(?P<rec>.+)_(?P<k>\d+)\.wav$")


@dataclass
class ClipFolder:
    path: Path
    source: str
    clips: int
    recordings: dict[str, int]  # recording id -> clip count
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> input files passed over
    clip_seconds: float = FeatureConfig.clip_seconds

    @property
    def hours(self) -> float:
        return self.clips * self.clip_seconds / 3600

    def markdown(self) -> str:
        minutes = lambda n: f"{n * self.clip_seconds / 60:.1f}"  # noqa: E731
        rows = [f"| {rec} | {n} | {minutes(n)} |" for rec, n in self.recordings.items()]
        return "\n".join(["| recording | clips | minutes |", "|---|---:|---:|", *rows,
                          f"| **all {len(self.recordings)}** | **{self.clips}** | **{minutes(self.clips)}** |"])

    def summary(self) -> str:
        skips = ", ".join(f"{n} {r}" for r, n in self.skipped.items()) or "none"
        return (f"{self.clips} clips from {len(self.recordings)} recordings ({self.hours:.2f} h) "
                f"in {self.path} [source: {self.source}; skipped inputs: {skips}]")


def parse_clip_name(name: str) -> tuple[str, int]:
    """'2614_127.wav' -> ('2614', 127). Recording ids may themselves contain underscores."""
    m = _CLIP_NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not named {{recording}}_{{k}}.wav")
    return m["rec"], int(m["k"])


def list_clips(folder: Path) -> list[Path]:
    """Every clip in the folder, in a stable order (recording, then k)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BeetNetError(f"clip folder {folder} does not exist: run `python -m beetnet_utils download` first")
    clips = [p for p in folder.iterdir() if _CLIP_NAME.match(p.name)]
    return sorted(clips, key=lambda p: (parse_clip_name(p.name)[0], parse_clip_name(p.name)[1]))


def describe(folder: Path, source: str = "?", skipped: dict[str, int] | None = None) -> ClipFolder:
    counts = Counter(parse_clip_name(p.name)[0] for p in list_clips(folder))
    return ClipFolder(Path(folder), source, sum(counts.values()), dict(sorted(counts.items())), skipped or {})


def segment(audio: np.ndarray, sr: int, features: FeatureConfig) -> list[np.ndarray]:
    """Mono, resampled, consecutive non-overlapping clips; a tail shorter than one clip is dropped."""
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sr != features.sample_rate:
        audio = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), sr,
                            features.sample_rate).numpy()
    n = features.clip_samples
    return [audio[i * n:(i + 1) * n] for i in range(len(audio) // n)]


def write_clips(out: Path, recording: str, clips: list[np.ndarray], sr: int) -> int:
    for k, clip in enumerate(clips):
        sf.write(out / f"{recording}_{k}.wav", np.clip(clip, -1.0, 1.0), sr, subtype="PCM_16")
    return len(clips)


def _reuse(out: Path, key: dict) -> ClipFolder | None:
    manifest = out / MANIFEST
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("key") == key:
            return describe(out, key["source"], saved.get("skipped"))
    return None


def _finish(staging: Path, key: dict, skipped: Counter) -> None:
    (staging / MANIFEST).write_text(json.dumps({"key": key, "skipped": dict(skipped)}, indent=2))


# --- demo --------------------------------------------------------------------------------------

def make_demo(out: Path, data: DataConfig, features: FeatureConfig, progress: bool = True) -> ClipFolder:
    """Synthesise `data.demo_recordings` recordings of about `data.demo_seconds` each."""
    key = {"source": "demo", "recordings": data.demo_recordings, "seconds": data.demo_seconds,
           "features": stable_hash(features), "version": 1}
    if (done := _reuse(out, key)) is not None:
        return done
    with atomic_dir(out) as staging:
        for i in tqdm(range(data.demo_recordings), desc="demo recordings", disable=not progress):
            jitter = 0.85 + 0.3 * ((i * 7919) % 100) / 100  # recordings of unequal length, deterministically
            _, audio = synth.recording(i, data.demo_seconds * jitter, features.sample_rate)
            write_clips(staging, str(9001 + i), segment(audio, features.sample_rate, features), features.sample_rate)
        _finish(staging, key, Counter())
    return describe(out, "demo")


# --- folder ------------------------------------------------------------------------------------

def _recording_id(path: Path, taken: set[str]) -> str:
    rid = re.sub(r"[^A-Za-z0-9-]+", "-", path.stem).strip("-") or "rec"
    base, n = rid, 2
    while rid in taken:
        rid, n = f"{base}-{n}", n + 1
    taken.add(rid)
    return rid


def from_folder(audio_dir: Path, out: Path, features: FeatureConfig, source: str = "folder",
                files: list[Path] | None = None, progress: bool = True) -> ClipFolder:
    """Segment every readable recording under `audio_dir`; unreadable files are counted, not fatal."""
    audio_dir = Path(audio_dir)
    if files is None:
        if not audio_dir.is_dir():
            raise BeetNetError(f"audio folder {audio_dir} does not exist: pass --audio-dir with your recordings")
        files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not files:
        raise BeetNetError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {audio_dir}: "
                           "add recordings or use --source demo")
    key = {"source": source, "inputs": stable_hash([(str(p), p.stat().st_size) for p in files]),
           "features": stable_hash(features), "version": 1}
    if (done := _reuse(out, key)) is not None:
        return done
    skipped: Counter = Counter()
    taken: set[str] = set()
    with atomic_dir(out) as staging:
        for path in tqdm(files, desc="recordings", disable=not progress):
            try:
                audio, sr = sf.read(path, dtype="float32", always_2d=True)
            except Exception:
                skipped["unreadable"] += 1
                continue
            clips = segment(audio, sr, features)
            if not clips:
                skipped["shorter than one clip"] += 1
                continue
            write_clips(staging, _recording_id(path, taken), clips, features.sample_rate)
        if not any(staging.iterdir()):
            raise BeetNetError(f"none of the {len(files)} audio files in {audio_dir} gave a clip "
                               f"({dict(skipped)}): check the files or use --source demo")
        _finish(staging, key, skipped)
    return describe(out, source, dict(skipped))


# --- Kaggle ------------------------------------------------------------------------------------

def kaggle_download(handle: str) -> Path:
    """kagglehub with one-line errors. Pin the handle's version: an unpinned one asks the server every time."""
    import kagglehub
    import requests
    from kagglehub import exceptions as kx

    hint = "use --source demo, or --source folder --audio-dir DIR with your own recordings"
    try:
        return Path(kagglehub.dataset_download(handle))
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise BeetNetError(f"Kaggle is unreachable (no network?) while fetching {handle}: {hint}") from exc
    except (kx.UnauthenticatedError, kx.CredentialError) as exc:
        raise BeetNetError(f"Kaggle refused the credentials for {handle}: set KAGGLE_USERNAME/KAGGLE_KEY "
                           f"or add the Colab secrets, or {hint}") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        what = {401: "needs Kaggle credentials", 403: "is forbidden (accept its terms on kaggle.com?)",
                404: "was not found (check the handle and version)"}.get(status, f"failed (HTTP {status})")
        raise BeetNetError(f"Kaggle dataset {handle} {what}: {hint}") from exc


def from_kaggle(out: Path, handle: str, progress: bool = True) -> ClipFolder:
    """Link (or copy) the Kaggle WAVs into `out`; the kagglehub folder itself is never written."""
    root = kaggle_download(handle)
    wavs = sorted(p for p in root.rglob("*.wav") if _CLIP_NAME.match(p.name))
    if not wavs:
        raise BeetNetError(f"no {{recording}}_{{k}}.wav clips found under {root}: is {handle} the right dataset?")
    key = {"source": "kaggle", "handle": handle, "root": str(root), "clips": len(wavs), "version": 1}
    if (done := _reuse(out, key)) is not None:
        return done
    with atomic_dir(out) as staging:
        for p in tqdm(wavs, desc="linking clips", disable=not progress):
            try:
                os.symlink(p, staging / p.name)
            except OSError:
                shutil.copy2(p, staging / p.name)
        _finish(staging, key, Counter())
    return describe(out, "kaggle")


def from_musicnet(out: Path, handle: str, features: FeatureConfig, progress: bool = True) -> ClipFolder:
    """Beethoven solo-piano recordings of MusicNet, cut into consecutive 2 s clips."""
    root = kaggle_download(handle)
    meta = next(root.rglob("musicnet_metadata.csv"), None)
    if meta is None:
        raise BeetNetError(f"musicnet_metadata.csv not found under {root}: is {handle} the MusicNet dataset?")
    with open(meta, newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f)
               if r.get("composer") == "Beethoven" and r.get("ensemble") == "Solo Piano"]
    audio = {p.stem: p for p in root.rglob("*.wav") if p.parent.name == "train_data"}
    files = [audio[i] for i in ids if i in audio]
    if not files:
        raise BeetNetError(f"no Beethoven solo-piano WAVs in train_data under {root}")
    return from_folder(root, out, features, source="musicnet", files=files, progress=progress)


# --- one entry point ---------------------------------------------------------------------------

def download(source: str, out: Path, cfg: Config, audio_dir: Path | None = None, progress: bool = True) -> ClipFolder:
    """Fetch or build the clip folder for `source` (one of SOURCES)."""
    out = Path(out)
    if source == "demo":
        return make_demo(out, cfg.data, cfg.features, progress)
    if source == "kaggle":
        return from_kaggle(out, cfg.data.kaggle_handle, progress)
    if source == "musicnet":
        return from_musicnet(out, cfg.data.musicnet_handle, cfg.features, progress)
    if source == "folder":
        if audio_dir is None:
            raise BeetNetError("--source folder needs --audio-dir DIR (a folder of wav/flac/ogg/mp3 files)")
        return from_folder(Path(audio_dir), out, cfg.features, progress=progress)
    raise BeetNetError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
