"""The mel cache: bad input counted, built alike in one process or many, reused only when it is valid."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from beetnet_utils import BeetNetError, build_cache, load_cache, mel_db
from beetnet_utils.features import load_clip

from helpers import SR, tone, write_wav

quiet = dict(progress=False, log=lambda m: None)


def test_cache_holds_clamped_db_of_every_clip(smoke_cache, smoke_clips):
    c = smoke_cache
    assert c.mels.shape == (smoke_clips.clips, 96, 63) and c.mels.dtype == np.float16
    assert c.mels.min() >= -40 and c.mels.max() <= 60
    assert set(c.names) == {p.name for p in smoke_clips.path.glob("*.wav")}


def test_no_recording_is_in_two_splits_and_every_split_has_one(smoke_cache):
    c = smoke_cache
    owners = {}
    for rec, split in zip(c.recordings, c.splits):
        assert owners.setdefault(rec, split) == split
    assert all(len(c.indices(s)) for s in ("train", "val", "test"))


def test_statistics_come_from_the_train_split_only(smoke_cache):
    train = smoke_cache.clips("train").db.astype(np.float64)
    assert smoke_cache.mean == pytest.approx(train.mean(), abs=1e-6)
    assert smoke_cache.std == pytest.approx(train.std(), abs=1e-6)
    assert smoke_cache.mean != pytest.approx(smoke_cache.mels.astype(np.float64).mean(), abs=1e-3)
    z = smoke_cache.standardised("train")
    assert abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1) < 1e-3


def test_bad_inputs_are_skipped_or_fixed_and_counted(tmp_path, smoke):
    d = tmp_path / "clips"
    for rec in ("100", "200", "300"):
        for k in range(2):
            write_wav(d / f"{rec}_{k}.wav", tone(2.0, freq=220 * (k + 1) + int(rec) / 10))  # no two alike
    write_wav(d / "400_0.wav", tone(2.0, 44100, channels=2), 44100)  # stereo 44.1 kHz: fixed
    write_wav(d / "400_1.wav", tone(1.5))  # short but more than half: padded
    write_wav(d / "400_2.wav", tone(0.5))  # too short: skipped
    write_wav(d / "400_3.wav", np.zeros(2 * SR, np.float32))  # silent
    write_wav(d / "400_4.wav", tone(2.0, amp=1e-6) + np.r_[1.0, np.zeros(2 * SR - 1)].astype(np.float32),
              subtype="FLOAT")  # one click in near silence: mean |wav| < 1e-3 after peak normalisation
    nan = tone(2.0)
    nan[100] = np.nan
    write_wav(d / "400_5.wav", nan, subtype="FLOAT")
    (d / "400_6.wav").write_text("a text file named .wav")
    (d / "400_7.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)  # truncated header
    (d / "readme.txt").write_text("hello")
    cache = build_cache(d, tmp_path / "cache", smoke.features, smoke.data, **quiet)
    meta = cache.meta
    assert meta["skipped"] == {"too short (< 1 s)": 1, "silent": 2, "corrupt (NaN or inf samples)": 1,
                               "unreadable (corrupt or not audio)": 2, "not named {recording}_{k}.wav": 1}
    assert meta["fixed"] == {"down-mixed to mono": 1, "resampled from 44100 Hz": 1, "zero-padded to 2 s": 1}
    assert sorted(cache.names) == sorted([f"{r}_{k}.wav" for r in ("100", "200", "300") for k in range(2)]
                                         + ["400_0.wav", "400_1.wav"])
    assert ("400_6.wav", "unreadable (corrupt or not audio)") in [tuple(x) for x in meta["skipped_files"]]


def test_cache_is_reused_and_rebuilt_with_a_reason(tmp_path, smoke, smoke_clips):
    clips = tmp_path / "clips"
    shutil.copytree(smoke_clips.path, clips)
    said = []
    build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, progress=False, log=said.append)
    mtime = (tmp_path / "cache" / "mels.npy").stat().st_mtime_ns
    build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, progress=False, log=said.append)
    assert said[-1].startswith("reusing") and (tmp_path / "cache" / "mels.npy").stat().st_mtime_ns == mtime

    other = smoke.replace(features={"n_mels": 64}).features
    c64 = build_cache(clips, tmp_path / "cache", other, smoke.data, progress=False, log=said.append)
    assert "feature settings changed (n_mels 96 -> 64)" in said[-2] and c64.mels.shape[1] == 64

    write_wav(clips / "999_0.wav", tone(2.0))
    build_cache(clips, tmp_path / "cache", other, smoke.data, progress=False, log=said.append)
    assert "clip folder changed" in said[-2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_batched_build_equals_one_clip_at_a_time(smoke_cache, smoke_clips):
    c = smoke_cache
    for i, name in enumerate(c.names):
        wav, _, _ = load_clip(smoke_clips.path / name, c.features)
        np.testing.assert_allclose(c.mels[i], mel_db(wav, c.features).numpy().astype(np.float16), atol=0.07)
    assert list(c.splits) == sorted(c.splits, key=["train", "val", "test"].index)  # stored in split order


def test_missing_or_empty_inputs_are_one_line_errors(tmp_path, smoke):
    with pytest.raises(BeetNetError, match="does not exist"):
        build_cache(tmp_path / "nowhere", tmp_path / "cache", smoke.features, smoke.data, **quiet)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BeetNetError, match="no \\{recording\\}_\\{k\\}.wav clips"):
        build_cache(tmp_path / "empty", tmp_path / "cache", smoke.features, smoke.data, **quiet)
    with pytest.raises(BeetNetError, match="no mel cache"):
        load_cache(tmp_path / "cache")


def test_a_full_disk_leaves_the_old_cache_intact(tmp_path, smoke, smoke_clips):
    """A real write failure from the OS (RLIMIT_FSIZE -> EFBIG) during the build of a new cache."""
    clips = tmp_path / "clips"
    shutil.copytree(smoke_clips.path, clips)
    old = build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, **quiet)
    write_wav(clips / "999_0.wav", tone(2.0))  # forces a rebuild
    script = f"""
import resource, signal, sys
from beetnet_utils import build_cache, get_config, BeetNetError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
c = get_config('smoke')
try:
    build_cache({str(clips)!r}, {str(tmp_path / 'cache')!r}, c.features, c.data, progress=False)
except BeetNetError as e:
    print(e); sys.exit(3)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 3, r.stderr
    assert "disk full while writing" in r.stdout and r.stdout.count("\n") <= 2
    again = load_cache(tmp_path / "cache")
    assert again.names == old.names and np.array_equal(again.mels, old.mels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_forked_workers_give_the_same_cache_as_one_process(tmp_path, smoke, smoke_clips, monkeypatch):
    from beetnet_utils import cache_build

    threads = torch.get_num_threads()
    monkeypatch.setattr(cache_build, "_CHUNK", 8)  # enough chunks for the worker pool on a small set
    a = build_cache(smoke_clips.path, tmp_path / "a", smoke.features, smoke.data, workers=1, **quiet)
    b = build_cache(smoke_clips.path, tmp_path / "b", smoke.features, smoke.data, workers=2, **quiet)
    assert a.names == b.names and np.array_equal(a.mels, b.mels) and a.meta["stats"] == b.meta["stats"]
    assert a.meta["clips_hash"] == b.meta["clips_hash"] and a.meta["mels_hash"] == b.meta["mels_hash"]
    assert torch.get_num_threads() == threads  # the one-thread setting stays inside the workers


MEMORY = """
import re, shutil, sys
from pathlib import Path
from beetnet_utils import build_cache, get_config
smoke, n, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
clips = work / "clips"
clips.mkdir(parents=True)
originals = sorted(smoke.glob("*_*.wav"))
for i in range(n):  # copies of the smoke clips, each copy its own recording
    rec, k = originals[i % len(originals)].stem.rsplit("_", 1)
    shutil.copyfile(originals[i % len(originals)], clips / f"{rec}c{i // len(originals)}_{k}.wav")
c = get_config("smoke")
kib = lambda key: int(re.search(rf"^{key}:\\s+(\\d+) kB", Path("/proc/self/status").read_text(), re.M)[1])
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
before = kib("VmRSS")
cache = build_cache(clips, work / "cache", c.features, c.data, progress=False, log=lambda m: None, workers=1,
                    in_memory=0)
print(len(cache.names), kib("VmHWM") - before)
"""


def test_the_cache_builds_peak_memory_stays_flat_as_the_clips_grow(tmp_path, smoke_clips):
    """One process reads, featurises, hashes and writes every clip (workers=1): the peak of its resident memory
    during the build grows by under 4 MB from 300 clips to 1200. Holding the mels would add 11 MB; the build
    before this one grew by 47 MB (the mels, then float32 copies of them for the statistics). The peak is the
    kernel's VmHWM, reset before the build: getrusage's ru_maxrss would carry pytest's own peak, which Linux
    keeps across the fork and exec that start the subprocess."""
    grown = {}
    for n in (300, 1200):
        r = subprocess.run([sys.executable, "-c", MEMORY, str(smoke_clips.path), str(n), str(tmp_path / str(n))],
                           capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=600)
        assert r.returncode == 0, r.stderr
        cached, kib = map(int, r.stdout.split())
        assert cached == n and kib > 0
        grown[n] = kib
    assert grown[1200] - grown[300] < 4 * 1024, grown


def count_calls(monkeypatch, module, name: str) -> list:
    """Calls of the real `module.name`, counted."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_a_cache_unchanged_since_its_last_full_check_is_neither_rehashed_nor_its_clips_reread(tmp_path, smoke,
                                                                                            smoke_clips, monkeypatch):
    from beetnet_utils import cache, cache_build, list_clips
    from beetnet_utils.storage import content_hash

    clips, out = tmp_path / "clips", tmp_path / "cache"
    shutil.copytree(smoke_clips.path, clips)
    built = build_cache(clips, out, smoke.features, smoke.data, **quiet)
    assert built.meta["clips_hash"] == content_hash(list_clips(clips))  # the workers' digests add up to it
    hashed, read = count_calls(monkeypatch, cache, "_file_hash"), count_calls(monkeypatch, cache_build, "content_hash")
    said = []
    assert np.array_equal(load_cache(out).mels, built.mels) and not hashed
    build_cache(clips, out, smoke.features, smoke.data, progress=False, log=said.append)
    assert said[-1].startswith("reusing") and not hashed and not read

    mels = out / "mels.npy"
    mels.write_bytes(mels.read_bytes())  # the same bytes, written again: looks changed, checked whole, and fine
    assert np.array_equal(load_cache(out).mels, built.mels) and len(hashed) == 1
    assert np.array_equal(load_cache(out).mels, built.mels) and len(hashed) == 1  # recorded: not again
    shutil.copytree(out, tmp_path / "copy")  # another inode: checked whole once
    assert np.array_equal(load_cache(tmp_path / "copy").mels, built.mels) and len(hashed) == 2

    stat = mels.stat()
    flipped = bytearray(mels.read_bytes())
    flipped[-1] ^= 1  # one bit of the last clip, its size and mtime put back: the write moved ctime
    mels.write_bytes(bytes(flipped))
    os.utime(mels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(BeetNetError, match=r"mels.npy changed after the cache was built"):
        load_cache(out)

    size = (clips / built.names[0]).stat().st_size
    write_wav(clips / built.names[0], tone(2.0, freq=1500))  # new audio, under the same name and size
    assert (clips / built.names[0]).stat().st_size == size
    build_cache(clips, out, smoke.features, smoke.data, progress=False, log=said.append)
    assert len(read) == 1 and "clip folder changed" in said[-2]


def test_a_cache_over_its_memory_budget_is_mapped_not_read_and_a_skipped_recording_is_split_again(tmp_path, smoke,
                                                                                                 smoke_clips):
    """A recording whose every clip is silent is dropped after the rows were written: they are rewritten in the
    new split order, and meta.json's hash and statistics are of the file as it ends up."""
    clips = tmp_path / "clips"
    shutil.copytree(smoke_clips.path, clips)
    for k in range(3):
        write_wav(clips / f"0000silent_{k}.wav", np.zeros(2 * SR, np.float32))
    whole = build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, **quiet)
    assert whole.meta["skipped"] == {"silent": 3} and not isinstance(whole.mels, np.memmap)
    assert list(whole.splits) == sorted(whole.splits, key=["train", "val", "test"].index)
    (tmp_path / "cache" / ".verified.json").unlink()  # no record: checked whole against meta.json
    mapped = load_cache(tmp_path / "cache", in_memory=0)
    assert isinstance(mapped.mels, np.memmap) and np.array_equal(mapped.mels, whole.mels)
    train = mapped.clips("train").db.astype(np.float64)
    assert whole.mean == pytest.approx(train.mean(), abs=1e-6) and whole.std == pytest.approx(train.std(), abs=1e-6)
    for i in (0, len(whole.names) - 1):
        wav, _, _ = load_clip(clips / whole.names[i], whole.features)
        np.testing.assert_allclose(whole.mels[i], mel_db(wav, whole.features).numpy().astype(np.float16), atol=0.07)


def test_a_sample_of_a_split_is_seeded_rows_of_it_in_cache_order_with_their_recordings(smoke_cache):
    idx = smoke_cache.indices("train")
    whole, whole_recs = smoke_cache.clips("train", most=len(idx))  # as many as there are: all of them
    assert np.array_equal(whole, smoke_cache.clips("train").db)
    assert np.array_equal(whole_recs, smoke_cache.recordings[idx])
    assert np.array_equal(whole, smoke_cache.mels[idx].astype(np.float32))
    x, recs = smoke_cache.clips("train", most=5, seed=1)
    assert x.shape == (5, *smoke_cache.mels.shape[1:]) and x.dtype == np.float32
    # each sampled clip is a distinct train clip, in cache order, beside its own recording
    rows = [int(np.flatnonzero((smoke_cache.mels == clip.astype(smoke_cache.mels.dtype)).all(axis=(1, 2)))[0])
            for clip in x]
    assert rows == sorted(set(rows)) and set(rows) <= set(idx.tolist())
    assert np.array_equal(recs, smoke_cache.recordings[rows])
    again, _ = smoke_cache.clips("train", most=5, seed=1)
    other, _ = smoke_cache.clips("train", most=5, seed=2)
    assert np.array_equal(x, again) and not np.array_equal(x, other)


def test_rows_read_from_a_mapped_cache_are_its_rows_in_the_order_asked(smoke_cache):
    mapped = load_cache(smoke_cache.path, in_memory=0)
    assert isinstance(mapped.mels, np.memmap)
    n = len(mapped.names)
    order = np.random.default_rng(0).permutation(n)[:20]
    for idx in (order, np.arange(3, n - 2), np.r_[7, 8, 9, 2, 3, n - 1, 0], np.array([], dtype=np.int64)):
        got = mapped._read(idx)
        assert np.array_equal(mapped.db(idx), got.astype(np.float32))
        assert got.dtype == np.float16 and got.shape == (len(idx), *smoke_cache.mels.shape[1:])
        assert np.array_equal(got, smoke_cache.mels[idx])


def test_split_recordings_takes_its_fractions_of_recordings_and_keeps_shared_ones_together():
    from beetnet_utils import DataConfig
    from beetnet_utils.cache_build import split_recordings

    recs = [f"r{i:02d}" for i in range(20)]
    split = split_recordings(recs + recs[:5], DataConfig(val_fraction=0.1, test_fraction=0.2))
    assert sorted(split) == recs and Counter(split.values()) == {"train": 14, "test": 4, "val": 2}
    assert split == split_recordings(recs, DataConfig(val_fraction=0.1, test_fraction=0.2))  # seeded
    other = split_recordings(recs, DataConfig(val_fraction=0.1, test_fraction=0.2, split_seed=1))
    assert other != split and Counter(other.values()) == Counter(split.values())
    three = split_recordings(recs[:3], DataConfig(val_fraction=0.0, test_fraction=0.0))  # one each, at least
    assert sorted(three.values()) == ["test", "train", "val"]
    same = {f"r{i:02d}": "r00" for i in range(10)}  # ten recordings that share clips, split as one
    joined = split_recordings(recs, DataConfig(val_fraction=0.1, test_fraction=0.1), same)
    assert len({joined[r] for r in recs[:10]}) == 1 and sorted(joined) == recs
    assert Counter(joined[r] for r in ["r00", *recs[10:]]) == {"train": 9, "test": 1, "val": 1}  # of 11 groups
    with pytest.raises(BeetNetError, match="only 2 recording"):
        split_recordings(recs[:3], DataConfig(), {"r01": "r00"})
