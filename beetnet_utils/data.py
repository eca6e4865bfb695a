"""The clip folder: mono 16 kHz 2.0 s 16-bit WAVs named `{recording}_{k}.wav`, and how audio is read into
one (sources.py has the four sources that make it).

Every read of audio goes through `read_audio` and `check_samples`, here and in features.py: only
regular files are opened, and bad samples are counted under a reason instead of written as clips.
"""
from __future__ import annotations

import errno
import io
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .config import FeatureConfig
from .storage import (
    MARKERS,
    BeetNetError,
    NotRegularFileError,
    open_regular,
    recover,
)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MANIFEST = MARKERS["clips"]
CLIPPED_LEVEL = 0.999  # full scale, as |sample|
CLIPPED_FRACTION = 0.05  # more samples than this at full scale: clipped (a full-scale sine has 2.8%, music far less)
UNREADABLE = "unreadable (corrupt or not audio)"
CLIP_NAME = re.compile(r"^(?P<rec>.+)_(?P<k>\d+)\.wav$")


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
    m = CLIP_NAME.match(name)
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
    clips = [p for p in folder.iterdir() if CLIP_NAME.match(p.name)]
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


def write_recording(path: Path, staging: Path, rid: str, features: FeatureConfig) -> tuple[str | None, list[str], int]:
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
