"""Four sources, one result: a clip folder (data.py), mono 16 kHz 2.0 s 16-bit WAVs named `{recording}_{k}.wav`.

`kaggle` is the curated set the original used; `musicnet` rebuilds it from MusicNet
with consecutive, non-overlapping segments; `folder` takes a user's own recordings;
`demo` synthesises a small Beethoven set in code. A finished folder carries a
`manifest.json`, so asking again for the same inputs (by content) reuses it, and only a folder
carrying one is ever replaced.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import tarfile
import unicodedata
import zipfile
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from . import synth
from .config import Config, DataConfig, FeatureConfig, stable_hash
from .data import (
    AUDIO_EXTENSIONS,
    BAD_NAME,
    CLIP_NAME,
    MANIFEST,
    MAX_ID_BYTES,
    ClipFolder,
    describe,
    segment,
    valid_name,
    write_clips,
    write_recording,
)
from .storage import (
    BeetNetError,
    atomic_dir,
    beetnet_output,
    check_not_inside,
    claim_output,
    content_hash,
    disk_full_error,
)

SOURCES = ("kaggle", "musicnet", "folder", "demo")
KAGGLE_STALL_SECONDS = 60.0  # a Kaggle download that receives nothing for this long ends with an error


def _reuse(out: Path, key: dict) -> ClipFolder | None:
    """The folder at `out` if it was made from the same inputs; `out` is claimed (ours, or absent)."""
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads((out / MANIFEST).read_text())
        if saved.get("key") == key:
            return describe(out, key["source"], saved.get("skipped"), saved.get("fixed"))
    return None


def _finish(staging: Path, key: dict, skipped: Counter, fixed: Counter | None = None) -> None:
    manifest = {"beetnet": "clips", "key": key, "skipped": dict(skipped), "fixed": dict(fixed or {})}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))


# --- demo --------------------------------------------------------------------------------------

def make_demo(out: Path, data: DataConfig, features: FeatureConfig, progress: bool = True) -> ClipFolder:
    """Synthesise `data.demo_recordings` recordings of about `data.demo_seconds` each."""
    key = {"source": "demo", "recordings": data.demo_recordings, "seconds": data.demo_seconds,
           "features": stable_hash(features), "version": 1}
    claim_output(out, "clips")
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
    """A readable, unique id from the file's name: letters of any script, digits, '-' and '_' are kept
    (a name in Cyrillic or Japanese stays readable); a long name is cut to MAX_ID_BYTES with a short
    hash of the whole, so that two long names with one start stay apart."""
    stem = unicodedata.normalize("NFC", path.stem)
    rid = re.sub(r"[^\w-]+", "-", stem).strip("-_") or "rec"
    if len(rid.encode()) > MAX_ID_BYTES:
        digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        rid = rid.encode()[:MAX_ID_BYTES - 9].decode(errors="ignore").rstrip("-_") + "-" + digest
    base, n = rid, 2
    while rid in taken:
        rid, n = f"{base}-{n}", n + 1
    taken.add(rid)
    return rid


def _audio_files(audio_dir: Path) -> list[Path]:
    """Every entry named like audio under `audio_dir`, leaving out BeetNet's own outputs (and the
    staging folders of killed runs): their clips would come back as recordings."""
    found = []
    for root, dirs, names in os.walk(audio_dir):
        dirs[:] = [d for d in dirs if beetnet_output(Path(root, d)) is None]
        found += [Path(root, n) for n in names if Path(n).suffix.lower() in AUDIO_EXTENSIONS]
    return sorted(found)


def from_folder(audio_dir: Path, out: Path, features: FeatureConfig, source: str = "folder",
                files: list[Path] | None = None, progress: bool = True) -> ClipFolder:
    """Segment every readable recording under `audio_dir`; bad files are counted by reason, not fatal.

    A recording is skipped whole if it is not a regular file, unreadable, has NaN or inf samples, is
    clipped, or is silent or constant (the same tests as each clip gets in features.load_clip).
    """
    audio_dir, out = Path(audio_dir), Path(out)
    check_not_inside(out, audio_dir)
    claim_output(out, "clips")
    if files is None:
        if not audio_dir.is_dir():
            raise BeetNetError(f"audio folder {audio_dir} does not exist: pass --audio-dir with your recordings")
        if (kind := beetnet_output(audio_dir)) is not None:
            raise BeetNetError(f"audio folder {audio_dir} is BeetNet's own {kind} output, not recordings: "
                               "pass a folder of your recordings to --audio-dir")
        files = _audio_files(audio_dir)
    if not files:
        raise BeetNetError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {audio_dir}: "
                           "add recordings or use --source demo")
    key = {"source": source, "inputs": content_hash(files, name=str), "features": stable_hash(features),
           "version": 3}  # 3: recording ids keep letters of any script and underscores
    if (done := _reuse(out, key)) is not None:
        return done
    skipped: Counter = Counter()
    fixed: Counter = Counter()
    taken: set[str] = set()
    with atomic_dir(out) as staging:
        for path in tqdm(files, desc="recordings", disable=not progress):
            rid = _recording_id(path, taken)
            reason, fixes, _ = write_recording(path, staging, rid, features)
            if reason:
                taken.discard(rid)  # a skipped recording takes no id
                skipped[reason] += 1
                continue
            fixed.update(fixes)
        if not any(staging.iterdir()):
            raise BeetNetError(f"none of the {len(files)} audio files in {audio_dir} gave a clip "
                               f"({dict(skipped)}): check the files or use --source demo")
        _finish(staging, key, skipped, fixed)
    return describe(out, source, dict(skipped), dict(fixed))


# --- Kaggle ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _requests_timeout(seconds: float):
    """kagglesdk sends its requests with no timeout, so a server that accepts the connection and never
    answers hangs it forever. While this is active, a requests call made without a timeout gets one:
    `seconds` to connect, and `seconds` of silence between bytes (the whole download may take longer)."""
    import requests

    send = requests.Session.send

    def send_with_timeout(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = seconds
        return send(self, request, **kwargs)

    requests.Session.send = send_with_timeout
    try:
        yield
    finally:
        requests.Session.send = send


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _drop_partial_archive(handle: str) -> None:
    """kagglehub resumes a download from its partial archive: a damaged one would be resumed, and fail,
    on every run after, so "run again" could never help."""
    from kagglehub.cache import get_cached_archive_path  # beside kagglehub's own import, which is lazy here too
    from kagglehub.handle import parse_dataset_handle

    with contextlib.suppress(Exception):
        Path(get_cached_archive_path(parse_dataset_handle(handle))).unlink(missing_ok=True)


def kaggle_download(handle: str, stall_seconds: float = KAGGLE_STALL_SECONDS) -> Path:
    """kagglehub with one-line errors. Pin the handle's version: an unpinned one asks the server every time.

    A download that receives nothing for `stall_seconds` ends with an error (each request then takes at
    most about twice that to fail: connect, then silence).
    """
    import kagglehub
    import requests
    from kagglehub import exceptions as kx
    from urllib3.exceptions import ReadTimeoutError

    hint = "use --source demo, or --source folder --audio-dir DIR with your own recordings"
    creds = ("the public dataset needs no credentials: unset KAGGLE_API_TOKEN (or KAGGLE_USERNAME/KAGGLE_KEY), "
             "or set valid ones with kagglehub.login() or the Colab secrets")
    try:
        with _requests_timeout(stall_seconds):
            return Path(kagglehub.dataset_download(handle))
    except (requests.Timeout, requests.ConnectionError) as exc:
        # a stall in the middle of the body arrives as a ConnectionError that wraps urllib3's ReadTimeoutError
        if isinstance(exc, requests.Timeout) or any(isinstance(a, ReadTimeoutError) for a in exc.args):
            raise BeetNetError(f"Kaggle stopped answering (nothing for {stall_seconds:g} s) while fetching "
                               f"{handle}: try again later, or {hint}") from exc
        raise BeetNetError(f"Kaggle is unreachable (no network?) while fetching {handle}: {hint}") from exc
    except requests.exceptions.ChunkedEncodingError as exc:
        raise BeetNetError(f"the connection to Kaggle broke off while fetching {handle}: run again, or {hint}") from exc
    except (kx.UnauthenticatedError, kx.CredentialError) as exc:
        raise BeetNetError(f"Kaggle refused the credentials for {handle}: {creds}; or {hint}") from exc
    except (kx.KaggleEnvironmentError, kx.ColabEnvironmentError) as exc:
        raise BeetNetError(f"kagglehub could not use this notebook environment's Kaggle access for {handle} "
                           f"({_first_line(exc)}): {creds}; or {hint}") from exc
    except kx.BackendError as exc:
        raise BeetNetError(f"Kaggle reported an error for {handle} ({_first_line(exc)}): try again later, "
                           f"or {hint}") from exc
    except (kx.DataCorruptionError, zipfile.BadZipFile, tarfile.TarError) as exc:
        _drop_partial_archive(handle)
        raise BeetNetError(f"the download of {handle} arrived damaged ({type(exc).__name__}): run again, "
                           f"or {hint}") from exc
    except ValueError as exc:  # kagglehub's own refusals, such as "Unsupported archive type."
        _drop_partial_archive(handle)
        raise BeetNetError(f"kagglehub could not fetch {handle} ({_first_line(exc)}): run again, or {hint}") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        what = {401: f"needs Kaggle credentials ({creds})", 403: "is forbidden (accept its terms on kaggle.com?)",
                404: "was not found (check the handle and version)"}.get(status, f"failed (HTTP {status})")
        raise BeetNetError(f"Kaggle dataset {handle} {what}: {hint}") from exc
    except OSError as exc:
        where = Path(exc.filename or os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub"))
        raise (disk_full_error(exc, where) or exc) from exc


def _link_or_copy(files: list[Path], folder: Path, progress: bool) -> None:
    for p in tqdm(files, desc="linking clips", disable=not progress):
        try:
            os.symlink(p, folder / p.name)
        except OSError as exc:
            if disk_full_error(exc, folder):
                raise
            shutil.copy2(p, folder / p.name)


def from_kaggle(out: Path, handle: str, progress: bool = True,
                stall_seconds: float = KAGGLE_STALL_SECONDS) -> ClipFolder:
    """Link (or copy) the Kaggle WAVs into `out`; the kagglehub folder itself is never written."""
    out = Path(out)
    claim_output(out, "clips")
    root = kaggle_download(handle, stall_seconds)
    check_not_inside(out, root)
    found = sorted(p for p in root.rglob("*.wav") if CLIP_NAME.match(p.name))
    wavs = [p for p in found if valid_name(p.name)]
    skipped = Counter({BAD_NAME: len(found) - len(wavs)} if len(found) > len(wavs) else {})
    if not wavs:
        raise BeetNetError(f"no {{recording}}_{{k}}.wav clips found under {root}: is {handle} the right dataset?")
    key = {"source": "kaggle", "handle": handle, "root": str(root), "clips": content_hash(wavs), "version": 2}
    if (done := _reuse(out, key)) is not None:
        return done
    with atomic_dir(out) as staging:
        _link_or_copy(wavs, staging, progress)
        _finish(staging, key, skipped)
    return describe(out, "kaggle", dict(skipped))


def from_musicnet(out: Path, handle: str, features: FeatureConfig, progress: bool = True,
                  stall_seconds: float = KAGGLE_STALL_SECONDS) -> ClipFolder:
    """Beethoven solo-piano recordings of MusicNet, cut into consecutive 2 s clips."""
    claim_output(out, "clips")
    root = kaggle_download(handle, stall_seconds)
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
