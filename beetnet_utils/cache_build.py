"""Building the mel cache (cache.py) from a clip folder: featurised by worker processes, written row by row in
split order, atomically, under a writer's lock on the cache and a reader's on the clips.

Memory does not grow with the clips: mels.npy is written as the workers finish, hashed as it is written, and
the workers hash each clip they read. An existing cache is reused when its settings and clips are the same;
the clips are not read again for that while they are the files last hashed whole (cache.VERIFIED).
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

from .cache import (
    CACHE_VERSION,
    IN_MEMORY_BYTES,
    META,
    SPLITS,
    MelCache,
    MelWriter,
    clips_identity,
    file_identity,
    last_checks,
    meta_digest,
    open_mels,
    read_meta,
    record_checked,
    reorder_rows,
    short_digest,
    verify,
)
from .config import DataConfig, FeatureConfig, stable_hash
from .data import BAD_NAME, MANIFEST, list_clips, parse_clip_name, valid_name
from .features import load_clip, mel_db
from .storage import (
    BeetNetError,
    atomic_dir,
    check_not_inside,
    claim_output,
    content_hash,
    file_digest,
    reader_lock,
    writer_lock,
)

_CHUNK = 128  # clips per task

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



def _same_clips(path: Path, meta: dict, clips: list[Path], identity: str) -> bool:
    """Are these the clips the cache was built from? Trusted without reading them while every file is the one
    last hashed whole; otherwise hashed again (and recorded, when they are the same)."""
    checked = last_checks(path)
    if checked.get("clips") == identity and checked.get("clips_hash") == meta.get("clips_hash"):
        return True
    if content_hash(clips) != meta.get("clips_hash"):
        return False
    record_checked(path, clips=identity, clips_hash=meta["clips_hash"])
    return True


def _stale_reason(path: Path, features: FeatureConfig, clips: list[Path], identity: str,
                  split_config: dict) -> str | None:
    """Why an existing cache cannot be reused (by its settings or its clips), or None if it may be."""
    if not (path / META).exists():
        return "no cache yet"
    meta = read_meta(path)
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


@dataclass
class _Tally:
    """What a build skipped (by reason, and which files) and repaired."""
    skipped: Counter = dataclasses.field(default_factory=Counter)
    fixed: Counter = dataclasses.field(default_factory=Counter)
    files: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def skip(self, name: str, why: str) -> None:
        self.skipped[why] += 1
        self.files.append((name, why))


@dataclass
class _Rows:
    """The clips written to mels.npy, in its order (the split's), and what the build learned while writing them."""
    names: list[str]
    recordings: list[str]
    split_of: dict[str, str]
    writer: MelWriter
    digests: list[bytes]  # each clip's content digest, in the order of the clip folder's listing
    shared: dict[str, str]
    copies: int


def _usable(clips_dir: Path, clips: list[Path]) -> tuple[list[Path], _Tally]:
    """The clips whose names index.csv and JSON can hold; the rest, and the folder's other files, counted."""
    clip_names = {p.name for p in clips}
    others = [p.name for p in clips_dir.iterdir()
              if p.name != MANIFEST and not p.name.startswith(".") and p.name not in clip_names]
    tally = _Tally(skipped=Counter({"not named {recording}_{k}.wav": len(others)} if others else {}))
    for p in clips:
        if not valid_name(p.name):
            tally.skip(ascii(p.name), BAD_NAME)
    return [p for p in clips if valid_name(p.name)], tally


def _write_rows(path: Path, clips: list[Path], features: FeatureConfig, assign, workers: int, progress: bool,
                tally: _Tally, log) -> _Rows:
    """Featurise `clips` into mels.npy at `path`, in split order; split again (rewriting the rows in the new
    order) when a whole recording was skipped or two recordings share clips. `assign(recordings, shared)`
    gives each recording its split."""
    split_of = assign([parse_clip_name(p.name)[0] for p in clips])  # the recordings are known from the names
    order = sorted(range(len(clips)), key=lambda i: SPLITS.index(split_of[parse_clip_name(clips[i].name)[0]]))
    ordered = [clips[i] for i in order]
    digests, keep = [b""] * len(clips), []
    with MelWriter(path, len(clips), features.shape) as writer, \
            tqdm(total=len(clips), desc="mel spectrograms", unit="clip", disable=not progress) as bar:
        for start, (mels, kept, skips, fixes, chunk_digests) in _featurise_all(ordered, features, workers):
            train_rows = sum(split_of[parse_clip_name(ordered[start + k].name)[0]] == "train" for k in kept)
            writer.add(mels, train_rows)
            keep.extend(start + k for k in kept)
            for j, digest in enumerate(chunk_digests):
                digests[order[start + j]] = digest
            for name, why in skips:
                tally.skip(name, why)
            tally.fixed.update(fixes)
            bar.update(len(chunk_digests))
        writer.finish()
    names = [ordered[i].name for i in keep]
    recordings = [parse_clip_name(n)[0] for n in names]
    if not names:
        return _Rows([], [], split_of, writer, digests, {}, 0)
    shared, copies = shared_clips(recordings, [digests[order[i]] for i in keep])
    if copies:
        log(f"warning: {copies} clip(s) are byte-identical to clips of other recordings; those recordings are "
            f"kept in one split: {', '.join(sorted(shared))[:200]}")
    if (again := assign(recordings, shared)) != split_of:
        split_of = again
        new_order = sorted(range(len(names)), key=lambda i: SPLITS.index(split_of[recordings[i]]))
        names, recordings = [names[i] for i in new_order], [recordings[i] for i in new_order]
        writer = reorder_rows(writer, new_order, sum(split_of[r] == "train" for r in recordings))
    return _Rows(names, recordings, split_of, writer, digests, shared, copies)


def _meta(rows: _Rows, clips: list[Path], index_bytes: bytes, features: FeatureConfig, clips_dir: Path,
          split_config: dict, tally: _Tally) -> dict:
    """meta.json's content, its own checksum last."""
    clips_hash = hashlib.sha256()  # storage.content_hash, from the digests the workers took
    for p, digest in zip(clips, rows.digests):
        clips_hash.update(p.name.encode("utf-8", "surrogateescape") + b"\0" + digest)
    mean, std = rows.writer.stats()
    meta = {
        "beetnet": "cache", "version": CACHE_VERSION, "index_hash": short_digest(index_bytes),
        "mels_hash": rows.writer.hash.hexdigest()[:32], "features": dataclasses.asdict(features),
        "feature_hash": stable_hash(features), "clips_hash": clips_hash.hexdigest()[:32],
        "clips_dir": str(clips_dir), "split_config": split_config,
        "stats": {"mean": mean, "std": std,
                  "fitted_on": "train" if rows.writer.train.count else "all (evaluation only)"},
        "skipped": dict(+tally.skipped), "skipped_files": tally.files[:1000], "fixed": dict(tally.fixed),
        "shared_clips": {"copies": rows.copies, "recordings": sorted(rows.shared)[:1000]},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchaudio": torchaudio.__version__, "numpy": np.__version__, "soundfile": sf.__version__},
    }
    meta["meta_hash"] = meta_digest(meta)
    return meta


def _index_csv(rows: _Rows) -> bytes:
    index = io.StringIO(newline="")
    w = csv.writer(index)
    w.writerow(["name", "recording", "split"])
    w.writerows((n, r, rows.split_of[r]) for n, r in zip(rows.names, rows.recordings))
    return index.getvalue().encode()


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
        clips, tally = _usable(clips_dir, clips)
        if not clips:
            raise BeetNetError(f"no {{recording}}_{{k}}.wav clips in {clips_dir}: run the download step first")
        identity = clips_identity(clips)  # as the clips are before the read
        split_config = ({"val_fraction": data.val_fraction, "test_fraction": data.test_fraction,
                         "seed": data.split_seed} if split else {"all": "test"})
        reason = _stale_reason(out, features, clips, identity, split_config)
        if reason is None:
            cache = verify(out, in_memory)
            if isinstance(cache, MelCache):
                log(f"reusing mel cache {out} (same clips, same feature settings {stable_hash(features)})")
                return cache
            reason = f"the cache is damaged: {cache}"
        if not writable:
            raise BeetNetError(f"the mel cache {out} must be built again ({reason}), but its folder cannot be "
                               "written: give a writable --out")
        log(f"building mel cache {out}: {reason}")

        def assign(recordings: list[str], shared: dict[str, str] | None = None) -> dict[str, str]:
            return split_recordings(recordings, data, shared) if split else dict.fromkeys(recordings, "test")

        workers = os.cpu_count() or 1 if workers is None else workers
        with atomic_dir(out) as staging:
            rows = _write_rows(staging / "mels.npy", clips, features, assign, workers, progress, tally, log)
            if not rows.names:
                raise BeetNetError(f"every clip in {clips_dir} was skipped ({dict(tally.skipped)}): nothing to cache")
            index_bytes = _index_csv(rows)
            meta = _meta(rows, clips, index_bytes, features, clips_dir, split_config, tally)
            (staging / "index.csv").write_bytes(index_bytes)
            (staging / META).write_text(json.dumps(meta, indent=2))
        record_checked(out, clips=identity, clips_hash=meta["clips_hash"], mels=file_identity(out / "mels.npy"),
                       mels_hash=meta["mels_hash"])
        total = sum(tally.skipped.values())
        log(f"cached {len(rows.names)} clips; skipped {total}" + (f" ({dict(+tally.skipped)})" if total else "")
            + (f"; fixed {dict(tally.fixed)}" if tally.fixed else ""))
        splits = np.array([rows.split_of[r] for r in rows.recordings])
        return MelCache(out, open_mels(out / "mels.npy", in_memory), rows.names, np.array(rows.recordings), splits,
                        meta)
