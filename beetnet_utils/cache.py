"""The mel cache: three files, mels.npy (N, 96, 63) float16 clamped dB, index.csv and meta.json, and how they
are checked and read.

The cache is keyed on the clips' content, not their names and sizes (every 2 s clip has the same size), and
meta.json holds checksums of mels.npy, index.csv and itself: a damaged or hand-edited cache is refused by
load_cache (and rebuilt by cache_build.build_cache), never trusted. The split is by recording (segments of one
recording overlap in the Kaggle set, so a clip-level split would leak), and the statistics are the train
split's.

It scales past memory: a mels.npy larger than `in_memory` is memory-mapped, not read. The full checks are
made when something looks changed: `.verified.json` holds what was last checked whole (each file's size,
times and inode, as os.stat gives them, beside its hash); while they are unchanged, mels.npy is not read
again to be loaded. Editing a file in place changes its times, replacing it its inode: either brings the
full check back.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .config import FeatureConfig, stable_hash
from .storage import MARKERS, BeetNetError, atomic_write, recover

SPLITS = ("train", "val", "test")
META = MARKERS["cache"]  # meta.json: the cache's marker, settings, statistics and checksums
CACHE_VERSION = 3  # 2: content-keyed, with checksums of mels.npy and index.csv; 3: and of meta.json itself
IN_MEMORY_BYTES = 1 << 30  # a mels.npy up to this size is read whole (the full set's is 230 MB); a larger one is mapped
SAMPLE_CLIPS = 20_000  # what the baselines and priors are fitted on, at most: the full set's train split (15,000) whole
VERIFIED = ".verified.json"  # what was last checked whole, and the files' identity then
_READ = 1 << 23  # bytes per read when hashing a file
_REORDER_ROWS = 128  # rows per read when rewriting mels.npy in another order


# --- writing mels.npy ---------------------------------------------------------------------------

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


class MelWriter:
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

    def __enter__(self) -> MelWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # finished, or stopped (its staging folder is then removed)

    def stats(self) -> tuple[float, float]:
        return (self.train if self.train.count else self.every).result()


def reorder_rows(writer: MelWriter, order: list[int], train_rows: int) -> MelWriter:
    """A new file beside `writer`'s with its rows in `order` (the first `train_rows` of the train split),
    read a chunk at a time."""
    row_bytes = math.prod(writer.shape) * 2
    with MelWriter(writer.path.with_name("mels.reordered.npy"), len(order), writer.shape) as again, \
            open(writer.path, "rb") as f:
        for i in range(0, len(order), _REORDER_ROWS):
            part = order[i:i + _REORDER_ROWS]
            data = b"".join(os.pread(f.fileno(), row_bytes, len(writer.header) + r * row_bytes) for r in part)
            again.add(np.frombuffer(data, np.float16).reshape(len(part), *writer.shape),
                      max(0, min(len(part), train_rows - i)))
        again.finish()
    os.replace(again.path, writer.path)
    again.path = writer.path
    return again


# --- the cache -------------------------------------------------------------------------------

class Clips(NamedTuple):
    db: np.ndarray  # (n, n_mels, n_frames) float32 clamped dB
    recordings: np.ndarray  # (n,) the recording of each clip


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

    def _split_rows(self, split: str) -> np.ndarray:
        """A split's rows of `mels`: a view (of the mapped file, for a big cache), read only when used."""
        idx = self.indices(split)  # the cache is stored in split order, so this is a slice, not a gather
        return self.mels[idx[0]:idx[-1] + 1] if len(idx) and idx[-1] - idx[0] + 1 == len(idx) else self.mels[idx]

    def _read(self, idx: np.ndarray) -> np.ndarray:
        """Rows of `mels` by index, in that order; from a mapped mels.npy, read from the file (os.preadv, one
        read per run of consecutive rows) rather than through the mapping. A read through the mapping also
        maps the pages around it (the kernel's fault-around, 64 KB a fault), which then count as this
        process's memory (docs/RESULTS.md, streamed training)."""
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

    def db(self, rows: int | slice | np.ndarray) -> np.ndarray:
        """Clips by row of the cache (one index, a slice or an index array) in dB, as float32: what a view,
        a player or a plot shows."""
        if isinstance(rows, (int, np.integer, slice)):
            return self.mels[rows].astype(np.float32)
        return self._read(rows).astype(np.float32)

    def clips(self, splits: str | tuple[str, ...], most: int | None = None, seed: int = 0) -> Clips:
        """The clips of one split or several, in dB, beside the recording of each: all of them, or `most` drawn
        without replacement (seeded, in cache order), so that fitting a baseline or a prior on a cache larger
        than memory (with most=SAMPLE_CLIPS) never reads it whole."""
        idx = np.concatenate([self.indices(s) for s in ((splits,) if isinstance(splits, str) else splits)])
        if isinstance(splits, str) and (most is None or len(idx) <= most):
            return Clips(self._split_rows(splits).astype(np.float32), self.recordings[idx])
        if most is not None and len(idx) > most:
            idx = np.sort(np.random.default_rng(seed).choice(idx, most, replace=False))
        return Clips(self.mels[idx].astype(np.float32), self.recordings[idx])

    def standardised(self, rows: str | np.ndarray, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A split (by name) or rows (an index array) as the standardised tensor a model trains on, computed in
        place on the target device: the same operations whether they are a whole split or one batch, so the
        same bits. On the CPU, clip by clip: each operation then stays under torch's grain for going
        parallel, so the streaming thread never starts a team of OpenMP threads beside the training loop's
        (two teams on 2 cores spin against each other: docs/RESULTS.md, streamed training)."""
        mels = self._split_rows(rows) if isinstance(rows, str) else self._read(rows)
        x = torch.from_numpy(mels if mels.flags.writeable else np.array(mels))  # a mapped file is read-only
        if torch.device(device).type != "cpu":
            return x.to(device=device, dtype=torch.float32, copy=True).sub_(self.mean).div_(self.std).to(dtype)
        out = torch.empty(x.shape, dtype=torch.float32)
        for clip, row in zip(out, x):
            clip.copy_(row).sub_(self.mean).div_(self.std)
        return out.to(dtype)

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

def short_digest(data) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# --- what was checked whole, and when it must be checked again ----------------------------------

def file_identity(path: Path) -> list[int] | str:
    """What changes when a file is rewritten (its size and times: a write moves ctime, which no one can set
    back) or replaced (its inode); or why it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"unreadable {exc.errno}"
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def clips_identity(clips: list[Path]) -> str:
    h = hashlib.sha256()
    for p in clips:
        h.update(f"{p.name}\0{file_identity(p)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def last_checks(path: Path) -> dict:
    """The cache's record of its last full checks ({} when there is none, or it is unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        facts = json.loads((path / VERIFIED).read_text())
        if isinstance(facts, dict):
            return facts
    return {}


def record_checked(path: Path, **facts) -> None:
    """Add to the record of full checks; where the folder cannot be written (a read-only dataset), the full
    checks are simply made again next time."""
    with contextlib.suppress(OSError, BeetNetError):
        merged = last_checks(path) | facts
        atomic_write(path / VERIFIED, lambda p: p.write_text(json.dumps(merged)))


def _file_hash(path: Path, offset: int) -> str:
    """digest of the file's bytes after `offset`, read in pieces (never all in memory)."""
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


def open_mels(path: Path, in_memory: int) -> np.ndarray:
    """mels.npy read whole (a snapshot) when it is at most `in_memory` bytes, else memory-mapped (read as used).
    The mapping is read without readahead (MADV_RANDOM): its readers (the views, evaluation) take rows at
    random, and readahead maps pages around each row that then count as this process's memory
    (docs/RESULTS.md, "Scale")."""
    if os.stat(path).st_size <= in_memory:
        return np.load(path)
    mapped = np.load(path, mmap_mode="r")
    if hasattr(mmap, "MADV_RANDOM"):  # Linux and macOS
        mapped._mmap.madvise(mmap.MADV_RANDOM)
    return mapped


def meta_digest(meta: dict) -> str:
    """The checksum of meta.json's own content (all but this field): a hand-edited statistic or feature
    setting would otherwise be trusted."""
    return short_digest(json.dumps({k: v for k, v in meta.items() if k != "meta_hash"}, sort_keys=True).encode())


def read_meta(path: Path) -> dict | str:
    """meta.json, validated against its checksum and its own rules; or why it cannot be trusted."""
    try:
        meta = json.loads((path / META).read_text())
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


def verify(path: Path, in_memory: int = IN_MEMORY_BYTES) -> MelCache | str:
    """The cache at `path`, checked against its meta.json; or why it cannot be trusted. mels.npy is hashed
    whole only when it is not the file last hashed whole (see `file_identity`)."""
    meta = read_meta(path)
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
    if short_digest(index) != meta.get("index_hash"):
        return "index.csv changed after the cache was built (edited splits or names?)"
    try:
        rows = list(csv.DictReader(io.StringIO(index.decode())))
        f = FeatureConfig(**meta["features"])
    except (KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"meta.json or index.csv is incomplete ({type(exc).__name__})"
    expected = (len(rows), f.n_mels, f.n_frames)
    if shape != expected or dtype != np.float16:
        return f"mels.npy holds {dtype} {shape}, index.csv and meta.json say float16 {expected}"
    checked, identity = last_checks(path), file_identity(mels_path)
    if checked.get("mels") != identity or checked.get("mels_hash") != meta.get("mels_hash"):
        if _file_hash(mels_path, offset) != meta.get("mels_hash"):
            return "mels.npy changed after the cache was built"
        record_checked(path, mels=identity, mels_hash=meta["mels_hash"])
    return MelCache(path, open_mels(mels_path, in_memory), [r["name"] for r in rows],
                    np.array([r["recording"] for r in rows]), np.array([r["split"] for r in rows]), meta)


def load_cache(path: Path, in_memory: int = IN_MEMORY_BYTES) -> MelCache:
    """The cache at `path`, after checking every file against the checksums in its meta.json (mels.npy's
    only if it changed since it was last checked whole). A mels.npy over `in_memory` bytes is memory-mapped."""
    path = Path(path)
    recover(path)
    if not (path / META).exists():
        raise BeetNetError(f"no mel cache at {path}: run `python -m beetnet_utils cache --clips CLIPS --out {path}`")
    cache = verify(path, in_memory)
    if isinstance(cache, str):
        raise BeetNetError(f"mel cache at {path} cannot be used ({cache}): build it again with "
                           f"`python -m beetnet_utils cache --clips CLIPS --out {path}`")
    return cache

