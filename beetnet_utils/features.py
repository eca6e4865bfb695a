"""Clips -> clamped mel dB, cached as three files: mels.npy (N, 96, 63), index.csv, meta.json.

Exactly the original's features: peak-normalise, MelSpectrogram(power=1) ->
AmplitudeToDB('amplitude') -> clamp to [-40, 60] dB, silent clips dropped. Unlike the
original, bad files are skipped and counted instead of crashing the loop, statistics
come from the train split only, and the split is by recording (segments of one
recording overlap in the Kaggle set, so a clip-level split would leak).

The cache is keyed on the clips' content, not their names and sizes (every 2 s clip has the
same size), and meta.json holds checksums of mels.npy and index.csv: a damaged or hand-edited
cache is rebuilt by build_cache and refused by load_cache, never trusted.

It scales past memory. The build writes mels.npy row by row as the workers finish (memory does not
grow with the clips), hashing what it writes, and the workers hash each clip they read. A mels.npy
larger than `in_memory` is memory-mapped, not read. The full checks are made when something looks
changed: `.verified.json` holds what was last checked whole (each file's size, times and inode, as
os.stat gives them, beside its hash); while they are unchanged the clips are not read again to be
reused, nor mels.npy to be loaded. Editing a file in place changes its times, replacing it its inode:
either brings the full check back.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import errno
import functools
import hashlib
import io
import itertools
import json
import math
import mmap
import multiprocessing as mp
import os
import platform
import signal
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from tqdm.auto import tqdm

from .config import DataConfig, FeatureConfig, stable_hash
from .data import BAD_NAME, MANIFEST, check_samples, list_clips, parse_clip_name, read_audio, silence_reason, valid_name
from .storage import (
    BeetNetError,
    atomic_dir,
    atomic_write,
    check_not_inside,
    claim_output,
    content_hash,
    file_digest,
    reader_lock,
    recover,
    writer_lock,
)

SPLITS = ("train", "val", "test")
CACHE_VERSION = 3  # 2: content-keyed, with checksums of mels.npy and index.csv; 3: and of meta.json itself
_CHUNK = 128  # clips per task
IN_MEMORY_BYTES = 1 << 30  # a mels.npy up to this size is read whole (the full set's is 230 MB); a larger one is mapped
SAMPLE_CLIPS = 20_000  # what the baselines and priors are fitted on, at most: the full set's train split (15,000) whole
VERIFIED = ".verified.json"  # what was last checked whole, and the files' identity then
_READ = 1 << 23  # bytes per read when hashing a file


@functools.lru_cache(maxsize=4)
def _transforms(features: FeatureConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=features.sample_rate, n_fft=features.n_fft, hop_length=features.hop_length,
        n_mels=features.n_mels, power=features.power)
    return mel, torchaudio.transforms.AmplitudeToDB(stype="amplitude")


def mel_db(wav: torch.Tensor, features: FeatureConfig) -> torch.Tensor:
    """(..., samples) peak-normalised waveform -> (..., n_mels, n_frames) clamped dB."""
    mel, to_db = _transforms(features)
    with torch.no_grad():
        return to_db(mel(wav)).clamp_(features.db_min, features.db_max)


def load_clip(path: Path, features: FeatureConfig) -> tuple[torch.Tensor | None, str | None, list[str]]:
    """Read one clip and make it conform. Returns (waveform, skip reason, fixes applied).

    Rules: only regular files are read; NaN or inf, or a clipped file, is skipped (data.check_samples);
    stereo is averaged to mono; another sample rate is resampled; a clip shorter than
    `min_clip_fraction` of 2 s is skipped, a shorter-but-long-enough one is zero-padded, a
    longer one is trimmed to its first 2 s; silence (all zero, or mean |wav| below the
    threshold after peak normalisation, as the original) and a constant (DC) signal are skipped.
    """
    audio, sr, reason = read_audio(path)
    if reason:
        return None, reason, []
    if audio.size == 0:
        return None, "empty", []
    audio, reason, fixes = check_samples(audio)
    if reason:
        return None, reason, fixes
    wav = torch.from_numpy(audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0])
    if audio.shape[1] > 1:
        fixes.append("down-mixed to mono")
    if sr != features.sample_rate:
        wav = torchaudio.functional.resample(wav, sr, features.sample_rate)
        fixes.append(f"resampled from {sr} Hz")
    n = features.clip_samples
    if wav.numel() < features.min_clip_fraction * n:
        return None, f"too short (< {features.min_clip_fraction * features.clip_seconds:g} s)", fixes
    if wav.numel() < n:
        wav = torch.nn.functional.pad(wav, (0, n - wav.numel()))
        fixes.append("zero-padded to 2 s")
    elif wav.numel() > n:
        wav = wav[:n]
        fixes.append("trimmed to 2 s")
    peak = wav.abs().max()
    if peak == 0:
        return None, "silent", fixes
    if peak < features.min_peak:  # peak normalisation would blow dither up into full-scale noise
        return None, f"near-silent (peak below {20 * math.log10(features.min_peak):.0f} dBFS)", fixes
    wav = wav / peak
    if reason := silence_reason(wav.numpy(), features.silence_threshold):
        return None, reason, fixes
    return wav, None, fixes


def _featurise(paths: list[Path], features: FeatureConfig) -> tuple[np.ndarray, list, list, Counter, list[bytes]]:
    """Read and featurise a chunk one clip at a time (in a worker: on one thread); and each file's digest
    (storage.content_hash's, taken while the file is in the page cache from its read)."""
    out = np.empty((len(paths), features.n_mels, features.n_frames), np.float16)
    kept, skips, fixes, digests = [], [], Counter(), []
    for i, path in enumerate(paths):
        wav, reason, fixed = load_clip(path, features)
        digests.append(file_digest(path))
        fixes.update(fixed)
        if reason:
            skips.append((path.name, reason))
        else:
            out[len(kept)] = mel_db(wav, features).numpy()
            kept.append(i)
    return out[: len(kept)], kept, skips, fixes, digests


def _in_order(pool: ProcessPoolExecutor, fn, items: Iterable, ahead: int) -> Iterator:
    """fn(item) for each item, computed on the pool and yielded in order, with at most `ahead` pending: the
    results wait in memory for a slow reader, so their number must not grow with the items."""
    items, pending = iter(items), deque()
    for item in itertools.islice(items, ahead):
        pending.append(pool.submit(fn, item))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(items, 1):
            pending.append(pool.submit(fn, item))
        yield result


def _featurise_all(clips: list[Path], features: FeatureConfig, workers: int):
    """Yield (start, chunk result) in order: forked worker processes for big sets, else in-process."""
    chunks = (clips[i:i + _CHUNK] for i in range(0, len(clips), _CHUNK))
    if workers <= 1 or math.ceil(len(clips) / _CHUNK) < 4:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as a worker computes: a mel's bits depend on the threads that compute it
        try:
            for i, chunk in enumerate(chunks):
                yield i * _CHUNK, _featurise(chunk, features)
        finally:
            torch.set_num_threads(threads)
        return
    # fork starts workers in milliseconds (spawn would re-import torch in each), as DataLoader does on Linux
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker)
    try:
        for i, result in enumerate(_in_order(pool, functools.partial(_featurise, features=features), chunks,
                                             2 * workers)):
            yield i * _CHUNK, result
    finally:  # stopped (Ctrl-C, SIGTERM) or done: no chunk starts after this, and the workers end
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker() -> None:
    """A worker computes on one thread, and dies with its parent: a parent killed by SIGKILL, which no
    handler sees, leaves no worker running on (Linux's PR_SET_PDEATHSIG)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (the CLI's turns it into Ctrl-C)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def preview(clips_dir: Path, features: FeatureConfig,
            n: int = 4) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The first clip of `n` different recordings: names, mel dB and waveforms."""
    first: dict[str, Path] = {}
    for p in list_clips(clips_dir):
        first.setdefault(parse_clip_name(p.name)[0], p)
    names, mels, wavs = [], [], []
    for rec in list(first)[:: max(1, len(first) // n)][:n]:
        wav, reason, _ = load_clip(first[rec], features)
        if wav is not None:
            names.append(first[rec].name)
            mels.append(mel_db(wav, features).numpy())
            wavs.append(wav.numpy())
    return names, mels, wavs


# --- split and statistics --------------------------------------------------------------------

def split_recordings(recordings: list[str], data: DataConfig, same: dict[str, str] | None = None) -> dict[str, str]:
    """Deterministic recording -> split; at least one recording each in val and test. Recordings that `same`
    maps to one name (they share clips) are split as one, so no clip is both trained and tested on."""
    same = same or {}
    groups = sorted({same.get(r, r) for r in recordings})
    if len(groups) < 3:
        raise BeetNetError(f"only {len(groups)} recording(s) of distinct clips: a split by recording needs at least "
                           "3; add recordings")
    order = [groups[i] for i in np.random.default_rng(data.split_seed).permutation(len(groups))]
    n_test = max(1, round(data.test_fraction * len(groups)))
    n_val = max(1, round(data.val_fraction * len(groups)))
    of_group = {g: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, g in enumerate(order)}
    return {r: of_group[same.get(r, r)] for r in set(recordings)}


def shared_clips(recordings: list[str], digests: list[bytes]) -> tuple[dict[str, str], int]:
    """Recordings joined by byte-identical clips (one recording under two names): each recording -> the first
    name of its group, for those in a group of several; and how many clips are copies of a clip of another."""
    parent: dict[str, str] = {}

    def root(r: str) -> str:
        while parent.get(r, r) != r:
            r = parent[r]
        return r

    first: dict[bytes, str] = {}
    copies = 0
    for rec, digest in zip(recordings, digests):
        other = first.setdefault(digest, rec)
        if other != rec:
            copies += 1
            a, b = sorted((root(rec), root(other)))
            parent[b] = a
    return {r: root(r) for r in set(recordings) if root(r) != r or r in parent.values()}, copies


@dataclass
class Moments:
    """Mean and std of dB values, summed in float64 a chunk at a time, as the rows are written."""

    total: float = 0.0
    squares: float = 0.0
    count: int = 0

    def add(self, mels: np.ndarray) -> None:
        x = mels.astype(np.float32)
        self.total += float(x.sum(dtype=np.float64))
        self.squares += float(np.square(x).sum(dtype=np.float64))
        self.count += x.size

    def result(self) -> tuple[float, float]:
        mean = self.total / self.count
        return float(mean), float(np.sqrt(max(self.squares / self.count - mean * mean, 1e-12)))


# --- the cache -------------------------------------------------------------------------------

@dataclass
class MelCache:
    path: Path
    mels: np.ndarray  # (N, n_mels, n_frames) float16 clamped dB
    names: list[str]
    recordings: np.ndarray  # (N,) recording id per clip
    splits: np.ndarray  # (N,) 'train' | 'val' | 'test'
    meta: dict

    @property
    def mean(self) -> float:
        return self.meta["stats"]["mean"]

    @property
    def std(self) -> float:
        return self.meta["stats"]["std"]

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(**self.meta["features"])

    @property
    def key(self) -> str:
        """Identifies this cache's content: which clips, which features, which split."""
        return stable_hash([self.meta["feature_hash"], self.meta["clips_hash"], self.meta["split_config"]])

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.splits == split)

    def rows(self, split: str) -> np.ndarray:
        """A split's rows of `mels`: a view (of the mapped file, for a big cache), read only when used."""
        idx = self.indices(split)  # the cache is stored in split order, so this is a slice, not a gather
        return self.mels[idx[0]:idx[-1] + 1] if len(idx) and idx[-1] - idx[0] + 1 == len(idx) else self.mels[idx]

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Rows of `mels` by index, in that order; from a mapped mels.npy, read from the file (os.preadv, one
        read per run of consecutive rows) rather than through the mapping. A read through the mapping also
        maps the pages around it (the kernel's fault-around, 64 KB a fault), which then count as this
        process's memory: streaming an epoch of 200,000 clips through the mapping held 1.8 GB of them."""
        idx = np.asarray(idx)
        if not isinstance(self.mels, np.memmap) or not hasattr(os, "preadv"):
            return self.mels[idx]
        out = np.empty((len(idx), *self.mels.shape[1:]), self.mels.dtype)
        row = math.prod(self.mels.shape[1:]) * self.mels.itemsize
        starts = np.flatnonzero(np.diff(idx) != 1) + 1  # where each run of consecutive rows starts
        with open(self.mels.filename, "rb", buffering=0) as f:
            for first, run in zip([0, *starts.tolist()], np.split(idx, starts)):
                if not len(run):
                    continue
                want = len(run) * row
                if os.preadv(f.fileno(), [out[first:first + len(run)]], self.mels.offset + int(run[0]) * row) != want:
                    raise BeetNetError(f"{self.mels.filename} is shorter than its header says: rebuild the cache")
        return out

    def db(self, split: str) -> np.ndarray:
        return self.rows(split).astype(np.float32)

    def sample(self, split: str, most: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A split's clips (dB) and their recordings: all of them, or `most` (default SAMPLE_CLIPS) drawn without
        replacement (seeded, in cache order), so that fitting a baseline or a prior never reads a cache larger
        than memory whole."""
        idx, most = self.indices(split), SAMPLE_CLIPS if most is None else most
        if len(idx) > most:
            idx = np.sort(np.random.default_rng(seed).choice(idx, most, replace=False))
            return self.mels[idx].astype(np.float32), self.recordings[idx]
        return self.db(split), self.recordings[idx]

    def standardise(self, mels: np.ndarray, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rows of `mels` as a standardised tensor, computed in place on the target device: the same operations
        whether they are a whole split or one batch, so the same bits. On the CPU, clip by clip: each operation
        then stays under torch's grain for going parallel, so the streaming thread never starts a team of
        OpenMP threads beside the training loop's (two teams on 2 cores spin against each other: streamed
        training ran at 0.7x the speed of resident training)."""
        x = torch.from_numpy(mels if mels.flags.writeable else np.array(mels))  # a mapped file is read-only
        if torch.device(device).type != "cpu":
            return x.to(device=device, dtype=torch.float32, copy=True).sub_(self.mean).div_(self.std).to(dtype)
        out = torch.empty(x.shape, dtype=torch.float32)
        for clip, row in zip(out, x):
            clip.copy_(row).sub_(self.mean).div_(self.std)
        return out.to(dtype)

    def standardised(self, split: str, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One tensor for a whole split, standardised in place on the target device."""
        return self.standardise(self.rows(split), device, dtype)

    def markdown(self) -> str:
        """Split sizes, skips by reason, repairs and statistics, for a notebook."""
        s = self.summary()
        lines = ["| split | recordings | clips |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['recordings']} | {v['clips']} |" for k, v in s["splits"].items()]
        lines += ["", "| skipped because | clips |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in s["skipped"].items()] or ["| (nothing skipped) | 0 |"]
        if s["fixed"]:
            lines += ["", "| repaired | clips |", "|---|---:|", *[f"| {k} | {v} |" for k, v in s["fixed"].items()]]
        lines += ["", f"Standardisation (train split only): mean **{self.mean:.2f} dB**, std **{self.std:.2f} dB** "
                      f"(the original, over all 18,825 clips: 8.37 and 16.94)."]
        return "\n".join(lines)

    def summary(self) -> dict:
        split_sizes = {s: {"clips": int((self.splits == s).sum()),
                           "recordings": len(set(self.recordings[self.splits == s]))} for s in SPLITS}
        return {"clips": len(self.names), "splits": split_sizes, "stats": self.meta["stats"],
                "skipped": self.meta["skipped"], "fixed": self.meta["fixed"],
                "shared_clips": self.meta["shared_clips"]["copies"]}


def _digest(data) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# --- what was checked whole, and when it must be checked again ----------------------------------

def _identity(path: Path) -> list[int] | str:
    """What changes when a file is rewritten (its size and times: a write moves ctime, which no one can set
    back) or replaced (its inode); or why it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"unreadable {exc.errno}"
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _clips_identity(clips: list[Path]) -> str:
    h = hashlib.sha256()
    for p in clips:
        h.update(f"{p.name}\0{_identity(p)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def _checked(path: Path) -> dict:
    """The cache's record of its last full checks ({} when there is none, or it is unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        facts = json.loads((path / VERIFIED).read_text())
        if isinstance(facts, dict):
            return facts
    return {}


def _record(path: Path, **facts) -> None:
    """Add to the record of full checks; where the folder cannot be written (a read-only dataset), the full
    checks are simply made again next time."""
    with contextlib.suppress(OSError, BeetNetError):
        merged = _checked(path) | facts
        atomic_write(path / VERIFIED, lambda p: p.write_text(json.dumps(merged)))


def _file_hash(path: Path, offset: int) -> str:
    """_digest of the file's bytes after `offset`, read in pieces (never all in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        while piece := f.read(_READ):
            h.update(piece)
    return h.hexdigest()[:32]


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and data offset a .npy file's header declares; ValueError if its size disagrees."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        offset = f.tell()
    if fortran or os.stat(path).st_size != offset + math.prod(shape) * dtype.itemsize:
        raise ValueError("its size is not what its header declares")
    return shape, dtype, offset


def _open_mels(path: Path, in_memory: int) -> np.ndarray:
    """mels.npy read whole (a snapshot) when it is at most `in_memory` bytes, else memory-mapped (read as used).
    The mapping is read without readahead (MADV_RANDOM): its readers (the views, evaluation) take rows at
    random, and readahead maps pages around each row that then count as this process's memory (16,384
    random rows of 200,000 mapped 2.0 GB with it, 1.0 GB without; training reads rows with MelCache.read)."""
    if os.stat(path).st_size <= in_memory:
        return np.load(path)
    mapped = np.load(path, mmap_mode="r")
    if hasattr(mmap, "MADV_RANDOM"):  # Linux and macOS
        mapped._mmap.madvise(mmap.MADV_RANDOM)
    return mapped


def meta_digest(meta: dict) -> str:
    """The checksum of meta.json's own content (all but this field): a hand-edited statistic or feature
    setting would otherwise be trusted."""
    return _digest(json.dumps({k: v for k, v in meta.items() if k != "meta_hash"}, sort_keys=True).encode())


def _read_meta(path: Path) -> dict | str:
    """meta.json, validated against its checksum and its own rules; or why it cannot be trusted."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        return f"meta.json is unreadable ({type(exc).__name__})"
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        return "made by another version of BeetNet"
    if meta.get("meta_hash") != meta_digest(meta):
        return "meta.json changed after the cache was built (edited statistics or settings?)"
    try:
        features = FeatureConfig(**meta["features"])
        mean, std = meta["stats"]["mean"], meta["stats"]["std"]
    except (KeyError, TypeError, ValueError) as exc:
        return f"meta.json is incomplete or invalid ({str(exc)[:100] or type(exc).__name__})"
    if meta.get("feature_hash") != stable_hash(features):
        return "meta.json's feature settings do not match their hash"
    if not all(isinstance(v, float) and math.isfinite(v) for v in (mean, std)) or not std > 0:
        return f"meta.json's statistics are not a finite mean and a positive std (mean {mean!r}, std {std!r})"
    return meta


def _verified(path: Path, in_memory: int = IN_MEMORY_BYTES) -> MelCache | str:
    """The cache at `path`, checked against its meta.json; or why it cannot be trusted. mels.npy is hashed
    whole only when it is not the file last hashed whole (see `_identity`)."""
    meta = _read_meta(path)
    if isinstance(meta, str):
        return meta
    try:
        index = (path / "index.csv").read_bytes()
    except FileNotFoundError:
        return "index.csv is missing"
    except OSError as exc:
        return f"index.csv is unreadable ({exc.strerror})"
    mels_path = path / "mels.npy"
    try:
        shape, dtype, offset = _npy_layout(mels_path)
    except FileNotFoundError:
        return "mels.npy is missing"
    except (OSError, ValueError, EOFError) as exc:
        return f"mels.npy is unreadable or truncated ({type(exc).__name__})"
    if _digest(index) != meta.get("index_hash"):
        return "index.csv changed after the cache was built (edited splits or names?)"
    try:
        rows = list(csv.DictReader(io.StringIO(index.decode())))
        f = FeatureConfig(**meta["features"])
    except (KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"meta.json or index.csv is incomplete ({type(exc).__name__})"
    expected = (len(rows), f.n_mels, f.n_frames)
    if shape != expected or dtype != np.float16:
        return f"mels.npy holds {dtype} {shape}, index.csv and meta.json say float16 {expected}"
    checked, identity = _checked(path), _identity(mels_path)
    if checked.get("mels") != identity or checked.get("mels_hash") != meta.get("mels_hash"):
        if _file_hash(mels_path, offset) != meta.get("mels_hash"):
            return "mels.npy changed after the cache was built"
        _record(path, mels=identity, mels_hash=meta["mels_hash"])
    return MelCache(path, _open_mels(mels_path, in_memory), [r["name"] for r in rows],
                    np.array([r["recording"] for r in rows]), np.array([r["split"] for r in rows]), meta)


def load_cache(path: Path, in_memory: int = IN_MEMORY_BYTES) -> MelCache:
    """The cache at `path`, after checking every file against the checksums in its meta.json (mels.npy's
    only if it changed since it was last checked whole). A mels.npy over `in_memory` bytes is memory-mapped."""
    path = Path(path)
    recover(path)
    if not (path / "meta.json").exists():
        raise BeetNetError(f"no mel cache at {path}: run `python -m beetnet_utils cache --clips CLIPS --out {path}`")
    cache = _verified(path, in_memory)
    if isinstance(cache, str):
        raise BeetNetError(f"mel cache at {path} cannot be used ({cache}): build it again with "
                           f"`python -m beetnet_utils cache --clips CLIPS --out {path}`")
    return cache


def _same_clips(path: Path, meta: dict, clips: list[Path], identity: str) -> bool:
    """Are these the clips the cache was built from? Trusted without reading them while every file is the one
    last hashed whole; otherwise hashed again (and recorded, when they are the same)."""
    checked = _checked(path)
    if checked.get("clips") == identity and checked.get("clips_hash") == meta.get("clips_hash"):
        return True
    if content_hash(clips) != meta.get("clips_hash"):
        return False
    _record(path, clips=identity, clips_hash=meta["clips_hash"])
    return True


def _stale_reason(path: Path, features: FeatureConfig, clips: list[Path], identity: str,
                  split_config: dict) -> str | None:
    """Why an existing cache cannot be reused (by its settings or its clips), or None if it may be."""
    if not (path / "meta.json").exists():
        return "no cache yet"
    meta = _read_meta(path)
    if isinstance(meta, str):
        return meta
    if meta.get("feature_hash") != stable_hash(features):
        old, new = meta.get("features", {}), dataclasses.asdict(features)
        diff = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in new.items() if old.get(k) != v)
        return f"feature settings changed ({diff or 'hash differs'})"
    if not _same_clips(path, meta, clips, identity):
        return "the clip folder changed (files added, removed or rewritten)"
    if meta.get("split_config") != split_config:
        return f"split settings changed ({meta.get('split_config')} -> {split_config})"
    return None


# --- building ---------------------------------------------------------------------------------

class _MelWriter:
    """Rows appended to a .npy file in order, hashed and summed (the train split's, for the statistics) as they
    go. Written through the file, not a mapping: its pages stay the kernel's cache, not this process's memory."""

    def __init__(self, path: Path, rows: int, shape: tuple[int, int]):
        self.path, self.shape, self.rows = path, shape, 0
        self.file = open(path, "wb")
        self.header = self._header(rows)
        self.file.write(self.header)
        self.hash, self.train, self.every = hashlib.sha256(), Moments(), Moments()

    def _header(self, rows: int) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                   "fortran_order": False, "shape": (rows, *self.shape)})
        return buf.getvalue()

    def add(self, mels: np.ndarray, train_rows: int) -> None:
        """Append `mels`, whose first `train_rows` rows are of the train split."""
        data = np.ascontiguousarray(mels, dtype=np.float16)
        self.file.write(data.data)
        self.hash.update(data.data)
        self.train.add(data[:train_rows])
        self.every.add(data)
        self.rows += len(data)

    def finish(self) -> None:
        """Say in the header how many rows were written (numpy pads headers so that this fits in place)."""
        header = self._header(self.rows)
        if len(header) != len(self.header):
            raise RuntimeError(f"the .npy header of {self.path} would change size")
        self.file.seek(0)
        self.file.write(header)
        self.file.close()

    def __enter__(self) -> _MelWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # finished, or stopped (its staging folder is then removed)

    def stats(self) -> tuple[float, float]:
        return (self.train if self.train.count else self.every).result()


def _reorder(writer: _MelWriter, order: list[int], train_rows: int) -> _MelWriter:
    """A new file beside `writer`'s with its rows in `order` (the first `train_rows` of the train split),
    read a chunk at a time."""
    row_bytes = math.prod(writer.shape) * 2
    with _MelWriter(writer.path.with_name("mels.reordered.npy"), len(order), writer.shape) as again, \
            open(writer.path, "rb") as f:
        for i in range(0, len(order), _CHUNK):
            part = order[i:i + _CHUNK]
            data = b"".join(os.pread(f.fileno(), row_bytes, len(writer.header) + r * row_bytes) for r in part)
            again.add(np.frombuffer(data, np.float16).reshape(len(part), *writer.shape),
                      max(0, min(len(part), train_rows - i)))
        again.finish()
    os.replace(again.path, writer.path)
    again.path = writer.path
    return again


@contextlib.contextmanager
def _build_locks(out: Path, clips_dir: Path) -> Iterator[bool]:
    """The writer's lock on `out` and a reader's on `clips_dir`; yields whether `out` can be written. Where no lock
    can be made beside `out` (a read-only dataset), the cache can still be reused as it is: nothing is written."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(writer_lock(out))
            writable = True
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise
            writable = False
        stack.enter_context(reader_lock(clips_dir))
        yield writable


def build_cache(clips_dir: Path, out: Path, features: FeatureConfig, data: DataConfig, progress: bool = True,
                log=print, workers: int | None = None, split: bool = True,
                in_memory: int = IN_MEMORY_BYTES) -> MelCache:
    """Reuse the cache at `out` if it matches these clips and settings; otherwise build it atomically.

    `split=False` is for clips a trained run is only evaluated on: every clip is `test`. The cache returned
    holds mels.npy whole, or memory-mapped if it is over `in_memory` bytes.
    """
    clips_dir, out = Path(clips_dir), Path(out)
    clips = list_clips(clips_dir)
    check_not_inside(out, clips_dir)
    claim_output(out, "cache")
    with _build_locks(out, clips_dir) as writable:  # held from here: a second build into `out`, or a download
        # into `clips_dir`, is refused before it starts work
        clip_names = {p.name for p in clips}
        others = [p.name for p in clips_dir.iterdir()
                  if p.name != MANIFEST and not p.name.startswith(".") and p.name not in clip_names]
        badly_named = [p for p in clips if not valid_name(p.name)]  # index.csv and JSON cannot hold them
        clips = [p for p in clips if valid_name(p.name)]
        if not clips:
            raise BeetNetError(f"no {{recording}}_{{k}}.wav clips in {clips_dir}: run the download step first")
        feature_hash, identity = stable_hash(features), _clips_identity(clips)  # as the clips are before the read
        split_config = ({"val_fraction": data.val_fraction, "test_fraction": data.test_fraction,
                         "seed": data.split_seed} if split else {"all": "test"})
        split_recs = ((lambda recs, same=None: split_recordings(recs, data, same)) if split
                      else (lambda recs, same=None: dict.fromkeys(recs, "test")))
        reason = _stale_reason(out, features, clips, identity, split_config)
        if reason is None:
            cache = _verified(out, in_memory)
            if isinstance(cache, MelCache):
                log(f"reusing mel cache {out} (same clips, same feature settings {feature_hash})")
                return cache
            reason = f"the cache is damaged: {cache}"
        if not writable:
            raise BeetNetError(f"the mel cache {out} must be built again ({reason}), but its folder cannot be "
                               "written: give a writable --out")
        log(f"building mel cache {out}: {reason}")

        # Split first (recordings are known from the names), so the cache is written in split order.
        split_of = split_recs([parse_clip_name(p.name)[0] for p in clips])
        order = sorted(range(len(clips)), key=lambda i: SPLITS.index(split_of[parse_clip_name(clips[i].name)[0]]))
        in_split_order = [clips[i] for i in order]
        digests: list[bytes] = [b""] * len(clips)  # each clip's, where it stands in `clips`
        keep: list[int] = []
        skipped: Counter = Counter({"not named {recording}_{k}.wav": len(others)} if others else {})
        skipped[BAD_NAME] += len(badly_named)
        skipped = +skipped  # no zero counts
        fixed: Counter = Counter()
        skipped_files: list[tuple[str, str]] = [(ascii(p.name), BAD_NAME) for p in badly_named]
        workers = os.cpu_count() or 1 if workers is None else workers
        is_train = lambda p: split_of[parse_clip_name(p.name)[0]] == "train"  # noqa: E731
        with atomic_dir(out) as staging:
            with _MelWriter(staging / "mels.npy", len(clips), features.shape) as writer, \
                    tqdm(total=len(clips), desc="mel spectrograms", unit="clip", disable=not progress) as bar:
                for start, (chunk_mels, kept, skips, fixes, chunk_digests) in _featurise_all(in_split_order, features,
                                                                                              workers):
                    writer.add(chunk_mels, sum(is_train(in_split_order[start + k]) for k in kept))
                    keep.extend(start + k for k in kept)
                    for j, digest in enumerate(chunk_digests):
                        digests[order[start + j]] = digest
                    for name, why in skips:
                        skipped[why] += 1
                        skipped_files.append((name, why))
                    fixed.update(fixes)
                    bar.update(len(chunk_digests))
                writer.finish()
            if not keep:
                raise BeetNetError(f"every clip in {clips_dir} was skipped ({dict(skipped)}): nothing to cache")
            names = [in_split_order[i].name for i in keep]
            recordings = [parse_clip_name(n)[0] for n in names]
            same, copies = shared_clips(recordings, [digests[order[i]] for i in keep])
            if copies:
                log(f"warning: {copies} clip(s) are byte-identical to clips of other recordings; those recordings are "
                    f"kept in one split: {', '.join(sorted(same))[:200]}")
            new_split = split_recs(recordings, same)
            if new_split != split_of:  # a whole recording was skipped, or two share clips: split again
                split_of = new_split
                again = sorted(range(len(names)), key=lambda i: SPLITS.index(split_of[recordings[i]]))
                names, recordings = [names[i] for i in again], [recordings[i] for i in again]
                writer = _reorder(writer, again, sum(split_of[r] == "train" for r in recordings))
            splits = np.array([split_of[r] for r in recordings])
            mean, std = writer.stats()
            clips_hash = hashlib.sha256()  # storage.content_hash, from the digests the workers took
            for p, digest in zip(clips, digests):
                clips_hash.update(p.name.encode("utf-8", "surrogateescape") + b"\0" + digest)
            index = io.StringIO(newline="")
            w = csv.writer(index)
            w.writerow(["name", "recording", "split"])
            w.writerows(zip(names, recordings, splits))
            index_bytes = index.getvalue().encode()
            meta = {
                "beetnet": "cache", "version": CACHE_VERSION, "index_hash": _digest(index_bytes),
                "mels_hash": writer.hash.hexdigest()[:32], "features": dataclasses.asdict(features),
                "feature_hash": feature_hash, "clips_hash": clips_hash.hexdigest()[:32],
                "clips_dir": str(clips_dir), "split_config": split_config,
                "stats": {"mean": mean, "std": std,
                          "fitted_on": "train" if writer.train.count else "all (evaluation only)"},
                "skipped": dict(skipped), "skipped_files": skipped_files[:1000], "fixed": dict(fixed),
                "shared_clips": {"copies": copies, "recordings": sorted(same)[:1000]},
                "versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "torchaudio": torchaudio.__version__, "numpy": np.__version__,
                             "soundfile": sf.__version__},
            }
            meta["meta_hash"] = meta_digest(meta)
            (staging / "index.csv").write_bytes(index_bytes)
            (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        _record(out, clips=identity, clips_hash=meta["clips_hash"], mels=_identity(out / "mels.npy"),
                mels_hash=meta["mels_hash"])
        total_skips = sum(skipped.values())
        log(f"cached {len(names)} clips; skipped {total_skips}" + (f" ({dict(skipped)})" if total_skips else "")
            + (f"; fixed {dict(fixed)}" if fixed else ""))
        return MelCache(out, _open_mels(out / "mels.npy", in_memory), names, np.array(recordings), splits, meta)
