"""Four sources, one result: a folder of mono 16 kHz 2.0 s 16-bit WAVs named `{recording}_{k}.wav`.

`kaggle` is the curated set the original used; `musicnet` rebuilds it from MusicNet
with consecutive, non-overlapping segments; `folder` takes a user's own recordings;
`demo` synthesises a small Beethoven set in code. A finished folder carries a
`manifest.json`, so asking again for the same inputs (by content) reuses it, and only a folder
carrying one is ever replaced.

Every read of audio goes through `read_audio` and `check_samples`, here and in features.py: only
regular files are opened, and bad samples are counted under a reason instead of written as clips.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from tqdm.auto import tqdm

from . import synth
from .config import Config, DataConfig, FeatureConfig, stable_hash
from .storage import (
    MARKERS,
    BeetNetError,
    NotRegularFileError,
    atomic_dir,
    beetnet_output,
    check_not_inside,
    claim_output,
    content_hash,
    disk_full_error,
    open_regular,
    recover,
)

SOURCES = ("kaggle", "musicnet", "folder", "demo")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MANIFEST = MARKERS["clips"]
KAGGLE_STALL_SECONDS = 60.0  # a Kaggle download that receives nothing for this long ends with an error
CLIPPED_LEVEL = 0.999  # full scale, as |sample|
CLIPPED_FRACTION = 0.05  # more samples than this at full scale: clipped (a full-scale sine has 2.8%, music far less)
UNREADABLE = "unreadable (corrupt or not audio)"
_CLIP_NAME = re.compile(r"^(?P<rec>.+)_(?P<k>\d+)\.wav$")


@dataclass
class ClipFolder:
    path: Path
    source: str
    clips: int
    recordings: dict[str, int]  # recording id -> clip count
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> input files passed over
    fixed: dict[str, int] = field(default_factory=dict)  # repair -> input files repaired
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
        fixes = "".join(f"; fixed inputs: {n} {r}" for r, n in self.fixed.items())
        return (f"{self.clips} clips from {len(self.recordings)} recordings ({self.hours:.2f} h) "
                f"in {self.path} [source: {self.source}; skipped inputs: {skips}{fixes}]")


BAD_NAME = "file name is not valid UTF-8"
MAX_ID_BYTES = 120  # a recording id, so that `{id}_{k}.wav` and BeetNet's staging names fit the 255-byte limit


def valid_name(name: str) -> bool:
    """Can the name be written to index.csv and JSON? A name that is not UTF-8 comes in with surrogates."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse_clip_name(name: str) -> tuple[str, int]:
    """'2614_127.wav' -> ('2614', 127). Recording ids may themselves contain underscores."""
    m = _CLIP_NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not named {{recording}}_{{k}}.wav")
    return m["rec"], int(m["k"])


def list_clips(folder: Path) -> list[Path]:
    """Every clip in the folder, in a stable order (recording, then k). A folder that a run killed while
    replacing it left aside is put back first (storage.recover)."""
    folder = Path(folder)
    recover(folder)
    if not folder.is_dir():
        raise BeetNetError(f"clip folder {folder} does not exist: run `python -m beetnet_utils download` first")
    clips = [p for p in folder.iterdir() if _CLIP_NAME.match(p.name)]
    return sorted(clips, key=lambda p: (parse_clip_name(p.name)[0], parse_clip_name(p.name)[1]))


def describe(folder: Path, source: str = "?", skipped: dict[str, int] | None = None,
             fixed: dict[str, int] | None = None) -> ClipFolder:
    counts = Counter(parse_clip_name(p.name)[0] for p in list_clips(folder))
    return ClipFolder(Path(folder), source, sum(counts.values()), dict(sorted(counts.items())), skipped or {},
                      fixed or {})


# --- reading audio, and what is wrong with it ----------------------------------------------------

def read_audio(path: Path) -> tuple[np.ndarray | None, int, str | None]:
    """(frames, channels) float32 samples and the rate, or a skip reason. Only regular files are
    opened: a FIFO named like audio would block the read forever."""
    try:
        with open_regular(path) as f:
            audio, sr = sf.read(f, dtype="float32", always_2d=True)
    except NotRegularFileError:
        return None, 0, "not a regular file (FIFO, device or folder)"
    except OSError as exc:
        gone = exc.errno in (errno.ENOENT, errno.ELOOP)
        return None, 0, "missing (broken or looping symlink)" if gone else f"unreadable ({exc.strerror})"
    except Exception:  # libsndfile's errors carry no type worth telling apart
        return None, 0, UNREADABLE
    return audio, sr, None


def check_samples(audio: np.ndarray) -> tuple[np.ndarray | None, str | None, list[str]]:
    """Returns (audio, skip reason, fixes). NaN or inf anywhere is corruption (written as 16-bit it
    became full-scale noise). Float samples beyond ±1 are scaled down by the peak, a fix: clipping them
    would distort. Then a file with more than CLIPPED_FRACTION of its samples at full scale is clipped."""
    if not np.isfinite(audio).all():
        return None, "corrupt (NaN or inf samples)", []
    fixes = []
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak
        fixes.append("scaled down (float samples beyond ±1)")
    if audio.size and np.count_nonzero(np.abs(audio) >= CLIPPED_LEVEL) > CLIPPED_FRACTION * audio.size:
        return None, f"clipped (over {CLIPPED_FRACTION:.0%} of samples at full scale)", fixes
    return audio, None, fixes


def silence_reason(x: np.ndarray, threshold: float) -> str | None:
    """'silent' if all zero or mean |x| is below `threshold` of the peak (the original's test);
    'constant' if only a DC offset passes that test, which is no sound either."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0 or np.abs(x).mean() / peak < threshold:
        return "silent"
    if np.abs(x - x.mean()).mean() / peak < threshold:
        return "constant (DC offset, no sound)"
    return None


def segment(audio: np.ndarray, sr: int, features: FeatureConfig) -> list[np.ndarray]:
    """Mono, resampled, consecutive non-overlapping clips; a tail shorter than one clip is dropped."""
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sr != features.sample_rate:
        audio = AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), sr,
                            features.sample_rate).numpy()
    n = features.clip_samples
    return [audio[i * n:(i + 1) * n] for i in range(len(audio) // n)]


def write_clips(out: Path, recording: str, clips: Iterable[np.ndarray], sr: int) -> int:
    """Encode in memory, then write with Python's own I/O: a full disk is then an OSError that says so,
    where libsndfile says only "System error."."""
    written = 0
    for k, clip in enumerate(clips):
        buf = io.BytesIO()
        sf.write(buf, np.clip(clip, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
        (out / f"{recording}_{k}.wav").write_bytes(buf.getvalue())
        written += 1
    return written


# --- a long recording, a block at a time ---------------------------------------------------------

BLOCK_SECONDS = 30.0  # what a long recording is read in: memory stays flat in its length


def _blocks(snd: sf.SoundFile, scale: float = 1.0) -> Iterator[np.ndarray]:
    """The file from its start, BLOCK_SECONDS of (frames, channels) float32 at a time, divided by `scale`."""
    snd.seek(0)
    frames = max(1, int(BLOCK_SECONDS * snd.samplerate))
    while len(block := snd.read(frames, dtype="float32", always_2d=True)):
        yield block / scale if scale != 1.0 else block


def _resampled(blocks: Iterable[np.ndarray], sr: int, target: int) -> Iterator[np.ndarray]:
    """Mono blocks at `sr` -> the same signal at `target`, as resampling it whole would give: each stretch is
    resampled with enough of its neighbours on both sides that the filter never sees an edge that the whole
    signal would not, and stretches start on whole periods of the two rates."""
    if sr == target:
        yield from blocks
        return
    g = math.gcd(sr, target)
    o, n = sr // g, target // g
    reach = math.ceil(6 * o / (min(o, n) * 0.99)) + 1  # torchaudio's sinc filter: 6 zero crossings, rolloff 0.99
    ctx = o * math.ceil(reach / o)
    buf, start, done = np.zeros(0, np.float32), 0, 0  # buf holds source samples from `start`; out emitted to `done`

    def emit(upto: int | None) -> np.ndarray:
        out = AF.resample(torch.from_numpy(np.ascontiguousarray(buf)), sr, target).numpy()
        first = (done - start) * n // o
        return out[first:] if upto is None else out[first:first + (upto - done) * n // o]

    for block in blocks:
        buf = np.concatenate([buf, block])
        ready = (start + len(buf) - ctx) // o * o
        if ready > done:
            yield emit(ready)
            done = ready
            keep = max(start, done - ctx)
            buf, start = buf[keep - start:], keep
    if len(buf) and start + len(buf) > done:
        yield emit(None)


def _clips(pieces: Iterable[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """Consecutive non-overlapping clips of n samples; a tail shorter than one clip is dropped."""
    carry = np.zeros(0, np.float32)
    for piece in pieces:
        carry = np.concatenate([carry, piece])
        k = len(carry) // n
        yield from (carry[i * n:(i + 1) * n] for i in range(k))
        carry = carry[k * n:]


@dataclass
class _Scan:
    """What the whole-recording tests need, summed a block at a time."""

    peak: float = 0.0
    mono_sum: float = 0.0
    frames: int = 0


def _scan(snd: sf.SoundFile) -> _Scan | str:
    """First pass: NaN or inf anywhere, the peak (for the scale-down) and the mono mean (for the DC test)."""
    scan = _Scan()
    for block in _blocks(snd):
        if not np.isfinite(block).all():
            return "corrupt (NaN or inf samples)"
        scan.peak = max(scan.peak, float(np.abs(block).max()))
        scan.mono_sum += float(block.mean(axis=1).sum(dtype=np.float64))
        scan.frames += len(block)
    return scan


def _write_recording(path: Path, staging: Path, rid: str, features: FeatureConfig) -> tuple[str | None, list[str], int]:
    """Cut the recording at `path` into clips in `staging` as `rid`_k.wav, reading it a block at a time (a
    3-hour file is 1.9 GB as float32 samples); returns (skip reason, fixes, clips). A recording that fails a
    whole-file test (the same tests as check_samples and silence_reason) leaves no clip behind."""
    written = 0
    try:
        with open_regular(path) as f, sf.SoundFile(f) as snd:
            scan = _scan(snd)
            if isinstance(scan, str):
                return scan, [], 0
            if not scan.frames:
                return "silent", [], 0
            scale = scan.peak if scan.peak > 1.0 else 1.0
            fixes = ["scaled down (float samples beyond ±1)"] if scale != 1.0 else []
            mean = scan.mono_sum / scan.frames / scale
            clipped = mono_peak = mono_abs = dc = 0.0

            def monos() -> Iterator[np.ndarray]:
                nonlocal clipped, mono_peak, mono_abs, dc
                for block in _blocks(snd, scale):
                    clipped += np.count_nonzero(np.abs(block) >= CLIPPED_LEVEL)
                    m = block.mean(axis=1)
                    mono_peak = max(mono_peak, float(np.abs(m).max()))
                    mono_abs += float(np.abs(m).sum(dtype=np.float64))
                    dc += float(np.abs(m - mean).sum(dtype=np.float64))
                    yield m

            clips = _clips(_resampled(monos(), snd.samplerate, features.sample_rate), features.clip_samples)
            written = write_clips(staging, rid, clips, features.sample_rate)
            channels = snd.channels
    except NotRegularFileError:
        return "not a regular file (FIFO, device or folder)", [], 0
    except OSError as exc:
        if written or exc.errno not in (errno.ENOENT, errno.ELOOP, errno.EACCES, errno.EISDIR):
            raise  # a full disk while writing, say: not the recording's fault
        return "missing (broken or looping symlink)" if exc.errno in (errno.ENOENT, errno.ELOOP) else \
            f"unreadable ({exc.strerror})", [], 0
    except (RuntimeError, ValueError, TypeError, EOFError):  # libsndfile's errors carry no type worth telling apart
        reason = UNREADABLE
    else:
        reason = None
        if clipped > CLIPPED_FRACTION * scan.frames * channels:
            reason = f"clipped (over {CLIPPED_FRACTION:.0%} of samples at full scale)"
        elif mono_peak == 0 or mono_abs / scan.frames / mono_peak < features.silence_threshold:
            reason = "silent"
        elif dc / scan.frames / mono_peak < features.silence_threshold:
            reason = "constant (DC offset, no sound)"
        elif not written:
            reason = "shorter than one clip"
    if reason:  # its clips go, however many were written before the file failed
        k = 0
        while (clip := staging / f"{rid}_{k}.wav").exists():
            clip.unlink()
            k += 1
        return reason, [], 0
    return None, fixes, written


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
            reason, fixes, _ = _write_recording(path, staging, rid, features)
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
    found = sorted(p for p in root.rglob("*.wav") if _CLIP_NAME.match(p.name))
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
