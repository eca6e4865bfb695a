"""Clips -> clamped mel dB, cached as three files: mels.npy (N, 96, 63), index.csv, meta.json.

Exactly the original's features: peak-normalise, MelSpectrogram(power=1) ->
AmplitudeToDB('amplitude') -> clamp to [-40, 60] dB, silent clips dropped. Unlike the
original, bad files are skipped and counted instead of crashing the loop, statistics
come from the train split only, and the split is by recording (segments of one
recording overlap in the Kaggle set, so a clip-level split would leak).

The cache is keyed on the clips' content, not their names and sizes (every 2 s clip has the
same size), and meta.json holds checksums of mels.npy and index.csv: a damaged or hand-edited
cache is rebuilt by build_cache and refused by load_cache, never trusted.
"""
from __future__ import annotations

import csv
import ctypes
import dataclasses
import functools
import hashlib
import io
import json
import platform
import multiprocessing as mp
import os
import signal
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from tqdm.auto import tqdm

from .config import DataConfig, FeatureConfig, stable_hash
from .data import (BAD_NAME, MANIFEST, check_samples, list_clips, parse_clip_name, read_audio, silence_reason,
                   valid_name)
from .storage import BeetNetError, atomic_dir, check_not_inside, claim_output, content_hash, recover, writer_lock

SPLITS = ("train", "val", "test")
CACHE_VERSION = 2  # 2: content-keyed, with checksums of mels.npy and index.csv
_CHUNK = 128  # clips per task


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
    wav = wav / peak
    if reason := silence_reason(wav.numpy(), features.silence_threshold):
        return None, reason, fixes
    return wav, None, fixes


def _featurise(paths: list[Path], features: FeatureConfig) -> tuple[np.ndarray, list, list, Counter]:
    """Read and featurise a chunk one clip at a time (in a worker: on one thread)."""
    out = np.empty((len(paths), features.n_mels, features.n_frames), np.float16)
    kept, skips, fixes = [], [], Counter()
    for i, path in enumerate(paths):
        wav, reason, fixed = load_clip(path, features)
        fixes.update(fixed)
        if reason:
            skips.append((path.name, reason))
        else:
            out[len(kept)] = mel_db(wav, features).numpy()
            kept.append(i)
    return out[: len(kept)], kept, skips, fixes


def _featurise_all(clips: list[Path], features: FeatureConfig, workers: int):
    """Yield (start, chunk result) in order: forked worker processes for big sets, else in-process."""
    chunks = [clips[i:i + _CHUNK] for i in range(0, len(clips), _CHUNK)]
    if workers <= 1 or len(chunks) < 4:
        for i, chunk in enumerate(chunks):
            yield i * _CHUNK, _featurise(chunk, features)
        return
    # fork starts workers in milliseconds (spawn would re-import torch in each), as DataLoader does on Linux
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker)
    try:
        for i, result in enumerate(pool.map(_featurise, chunks, [features] * len(chunks))):
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


def preview(clips_dir: Path, features: FeatureConfig, n: int = 4) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
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

def split_recordings(recordings: list[str], data: DataConfig) -> dict[str, str]:
    """Deterministic recording -> split; at least one recording each in val and test."""
    recs = sorted(set(recordings))
    if len(recs) < 3:
        raise BeetNetError(f"only {len(recs)} recording(s): a split by recording needs at least 3; add recordings")
    order = [recs[i] for i in np.random.default_rng(data.split_seed).permutation(len(recs))]
    n_test = max(1, round(data.test_fraction * len(recs)))
    n_val = max(1, round(data.val_fraction * len(recs)))
    return {r: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, r in enumerate(order)}


def db_stats(mels: np.ndarray, chunk: int = 1024) -> tuple[float, float]:
    """Mean and std of dB values in float64, in chunks so float16 input never overflows memory."""
    s = s2 = 0.0
    n = 0
    for i in range(0, len(mels), chunk):
        x = mels[i:i + chunk].astype(np.float32)
        s += float(x.sum(dtype=np.float64))
        s2 += float(np.square(x).sum(dtype=np.float64))
        n += x.size
    mean = s / n
    return float(mean), float(np.sqrt(max(s2 / n - mean * mean, 1e-12)))


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

    def _rows(self, split: str) -> np.ndarray:
        idx = self.indices(split)  # the cache is stored in split order, so this is a slice, not a gather
        return self.mels[idx[0]:idx[-1] + 1] if len(idx) and idx[-1] - idx[0] + 1 == len(idx) else self.mels[idx]

    def db(self, split: str) -> np.ndarray:
        return self._rows(split).astype(np.float32)

    def standardised(self, split: str, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One tensor for a whole split, standardised in place on the target device."""
        x = torch.from_numpy(self._rows(split)).to(device=device, dtype=torch.float32)
        return x.sub_(self.mean).div_(self.std).to(dtype)

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
                "skipped": self.meta["skipped"], "fixed": self.meta["fixed"]}


def _digest(data) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _verified(path: Path) -> MelCache | str:
    """The cache at `path`, checked against its meta.json; or why it cannot be trusted."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        return f"meta.json is unreadable ({type(exc).__name__})"
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        return "made by an older BeetNet, without checksums"
    try:
        index = (path / "index.csv").read_bytes()
    except FileNotFoundError:
        return "index.csv is missing"
    except OSError as exc:
        return f"index.csv is unreadable ({exc.strerror})"
    try:
        mels = np.load(path / "mels.npy")
    except FileNotFoundError:
        return "mels.npy is missing"
    except (OSError, ValueError, EOFError) as exc:  # numpy says EOFError for 0 bytes, ValueError when truncated
        return f"mels.npy is unreadable or truncated ({type(exc).__name__})"
    if _digest(index) != meta.get("index_hash"):
        return "index.csv changed after the cache was built (edited splits or names?)"
    try:
        rows = list(csv.DictReader(io.StringIO(index.decode())))
        f = FeatureConfig(**meta["features"])
    except (KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"meta.json or index.csv is incomplete ({type(exc).__name__})"
    expected = (len(rows), f.n_mels, f.n_frames)
    if mels.shape != expected or mels.dtype != np.float16:
        return f"mels.npy holds {mels.dtype} {mels.shape}, index.csv and meta.json say float16 {expected}"
    if _digest(np.ascontiguousarray(mels)) != meta.get("mels_hash"):
        return "mels.npy changed after the cache was built"
    return MelCache(path, mels, [r["name"] for r in rows], np.array([r["recording"] for r in rows]),
                    np.array([r["split"] for r in rows]), meta)


def load_cache(path: Path) -> MelCache:
    """The cache at `path`, after checking every file against the checksums in its meta.json."""
    path = Path(path)
    recover(path)
    if not (path / "meta.json").exists():
        raise BeetNetError(f"no mel cache at {path}: run `python -m beetnet_utils cache --clips CLIPS --out {path}`")
    cache = _verified(path)
    if isinstance(cache, str):
        raise BeetNetError(f"mel cache at {path} cannot be used ({cache}): build it again with "
                           f"`python -m beetnet_utils cache --clips CLIPS --out {path}`")
    return cache


def _stale_reason(path: Path, features: FeatureConfig, clips_hash: str, split_config: dict) -> str | None:
    """Why an existing cache cannot be reused (by its settings), or None if it may be."""
    if not (path / "meta.json").exists():
        return "no cache yet"
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        return f"meta.json is unreadable ({type(exc).__name__})"
    if meta.get("feature_hash") != stable_hash(features):
        old, new = meta.get("features", {}), dataclasses.asdict(features)
        diff = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in new.items() if old.get(k) != v)
        return f"feature settings changed ({diff or 'hash differs'})"
    if meta.get("version") != CACHE_VERSION:
        return "made by an older BeetNet, without checksums"
    if meta.get("clips_hash") != clips_hash:
        return "the clip folder changed (files added, removed or rewritten)"
    if meta.get("split_config") != split_config:
        return f"split settings changed ({meta.get('split_config')} -> {split_config})"
    return None


def build_cache(clips_dir: Path, out: Path, features: FeatureConfig, data: DataConfig,
                progress: bool = True, log=print, workers: int | None = None, split: bool = True) -> MelCache:
    """Reuse the cache at `out` if it matches these clips and settings; otherwise build it atomically.

    `split=False` is for clips a trained run is only evaluated on: every clip is `test`.
    """
    clips_dir, out = Path(clips_dir), Path(out)
    clips = list_clips(clips_dir)
    check_not_inside(out, clips_dir)
    claim_output(out, "cache")
    with writer_lock(out):  # held from here: a second build into `out` is refused before it starts work
        clip_names = {p.name for p in clips}
        others = [p.name for p in clips_dir.iterdir()
                  if p.name != MANIFEST and not p.name.startswith(".") and p.name not in clip_names]
        badly_named = [p for p in clips if not valid_name(p.name)]  # index.csv and JSON cannot hold them
        clips = [p for p in clips if valid_name(p.name)]
        if not clips:
            raise BeetNetError(f"no {{recording}}_{{k}}.wav clips in {clips_dir}: run the download step first")
        feature_hash, clips_hash = stable_hash(features), content_hash(clips)
        split_config = ({"val_fraction": data.val_fraction, "test_fraction": data.test_fraction, "seed": data.split_seed}
                        if split else {"all": "test"})
        split_recs = (lambda recs: split_recordings(recs, data)) if split else (lambda recs: dict.fromkeys(recs, "test"))
        reason = _stale_reason(out, features, clips_hash, split_config)
        if reason is None:
            cache = _verified(out)
            if isinstance(cache, MelCache):
                log(f"reusing mel cache {out} (same clips, same feature settings {feature_hash})")
                return cache
            reason = f"the cache is damaged: {cache}"
        log(f"building mel cache {out}: {reason}")

        # Split first (recordings are known from the names), so the cache is written in split order.
        split_of = split_recs([parse_clip_name(p.name)[0] for p in clips])
        clips = sorted(clips, key=lambda p: SPLITS.index(split_of[parse_clip_name(p.name)[0]]))
        mels = np.empty((len(clips), features.n_mels, features.n_frames), np.float16)
        keep: list[int] = []
        skipped: Counter = Counter({"not named {recording}_{k}.wav": len(others)} if others else {})
        skipped[BAD_NAME] += len(badly_named)
        skipped = +skipped  # no zero counts
        fixed: Counter = Counter()
        skipped_files: list[tuple[str, str]] = [(ascii(p.name), BAD_NAME) for p in badly_named]
        workers = os.cpu_count() or 1 if workers is None else workers
        with tqdm(total=len(clips), desc="mel spectrograms", unit="clip", disable=not progress) as bar:
            for start, (chunk_mels, kept, skips, fixes) in _featurise_all(clips, features, workers):
                mels[len(keep):len(keep) + len(kept)] = chunk_mels
                keep.extend(start + k for k in kept)
                for name, why in skips:
                    skipped[why] += 1
                    skipped_files.append((name, why))
                fixed.update(fixes)
                bar.update(min(_CHUNK, len(clips) - start))
        if not keep:
            raise BeetNetError(f"every clip in {clips_dir} was skipped ({dict(skipped)}): nothing to cache")
        mels = mels[: len(keep)]
        names = [clips[i].name for i in keep]
        recordings = [parse_clip_name(n)[0] for n in names]
        if set(recordings) != set(split_of):  # a whole recording was skipped: split what is left again
            split_of = split_recs(recordings)
            order = sorted(range(len(names)), key=lambda i: SPLITS.index(split_of[recordings[i]]))
            mels, names, recordings = mels[order], [names[i] for i in order], [recordings[i] for i in order]
        splits = np.array([split_of[r] for r in recordings])
        n_train = int((splits == "train").sum())
        mean, std = db_stats(mels[:n_train] if n_train else mels)
        mels = np.ascontiguousarray(mels)
        index = io.StringIO(newline="")
        w = csv.writer(index)
        w.writerow(["name", "recording", "split"])
        w.writerows(zip(names, recordings, splits))
        index_bytes = index.getvalue().encode()
        meta = {
            "beetnet": "cache", "version": CACHE_VERSION, "index_hash": _digest(index_bytes), "mels_hash": _digest(mels),
            "features": dataclasses.asdict(features), "feature_hash": feature_hash, "clips_hash": clips_hash,
            "clips_dir": str(clips_dir), "split_config": split_config,
            "stats": {"mean": mean, "std": std, "fitted_on": "train" if n_train else "all (evaluation only)"},
            "skipped": dict(skipped), "skipped_files": skipped_files[:1000], "fixed": dict(fixed),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torchaudio": torchaudio.__version__, "numpy": np.__version__, "soundfile": sf.__version__},
        }
        with atomic_dir(out) as staging:
            np.save(staging / "mels.npy", mels)
            (staging / "index.csv").write_bytes(index_bytes)
            (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        total_skips = sum(skipped.values())
        log(f"cached {len(names)} clips; skipped {total_skips}" + (f" ({dict(skipped)})" if total_skips else "")
            + (f"; fixed {dict(fixed)}" if fixed else ""))
        return MelCache(out, mels, names, np.array(recordings), splits, meta)


