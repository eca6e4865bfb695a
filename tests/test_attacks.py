"""Attacks on issue #12: never destroy a user's files, never trust stale data, never hang.

Each test makes its own files, names the attack, and checks both the outcome (a one-line error with the
words that say what to do, or a counted skip) and that no file outside BeetNet's own output folders
changed: the test's folder is hashed before and after, those outputs left out (journey.tree).
"""
from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beetnet_utils import BeetNetError, build_cache, download, load_cache, storage
from beetnet_utils.data import from_kaggle
from beetnet_utils.features import load_clip
from beetnet_utils.run import load_checkpoint
from beetnet_utils.storage import atomic_write, claim_output

from helpers import SR, kaggle_cache, tone, write_wav
from journey import tree

ROOT = Path(__file__).parents[1]
quiet = dict(progress=False, log=lambda m: None)


NEW_FOLDER = "choose a new or empty folder as the output (nothing was changed)"
FREE_SPACE = "free some space and run again (nothing was replaced"


def one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    """The error's message: one line, holding `words` (what went wrong, where, and what to do)."""
    msg = str(exc.value)
    assert msg and "\n" not in msg and all(w in msg for w in words), msg
    return msg


def recordings(folder: Path, n: int = 3, seconds: float = 4.5) -> Path:
    """A user's folder of recordings: n files of a few seconds, different content each."""
    for i in range(n):
        write_wav(folder / f"take {i}.wav", tone(seconds, freq=220 + 110 * i))
    return folder


def clip_folder(folder: Path, recs: tuple[str, ...] = ("100", "200", "300"), k: int = 2) -> Path:
    for r, rec in enumerate(recs):
        for j in range(k):
            write_wav(folder / f"{rec}_{j}.wav", tone(2.0, freq=220 + 55 * r + 20 * j))
    return folder


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def run_python(script: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120, **kw)


DISK_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from beetnet_utils import BeetNetError
try:
    {call}
except BeetNetError as e:
    print(e); sys.exit(3)
"""


# --- 1. outputs are owned ---------------------------------------------------------------------

def test_attack_download_out_equals_audio_dir_is_refused_and_nothing_deleted(tmp_path, smoke):
    mine = recordings(tmp_path / "mine")
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        download("folder", mine, smoke, audio_dir=mine, progress=False)
    one_line(e, str(mine), "is the input folder itself", "choose another output folder", "(nothing was changed)")
    assert tree(tmp_path) == before


def test_attack_download_out_inside_audio_dir_or_audio_dir_inside_out_is_refused(tmp_path, smoke):
    mine = recordings(tmp_path / "mine")
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        download("folder", mine / "clips", smoke, audio_dir=mine, progress=False)
    one_line(e, str(mine / "clips"), "inside the input folder", "choose an output outside it", "(nothing was changed)")
    with pytest.raises(BeetNetError) as e:  # replacing the output would delete the input inside it
        download("folder", tmp_path, smoke, audio_dir=mine, progress=False)
    one_line(e, str(mine), "inside the output folder", "choose another output folder", "(nothing was changed)")
    assert tree(tmp_path) == before


def test_attack_download_out_at_a_folder_of_unrelated_files_is_refused_and_nothing_deleted(tmp_path, smoke):
    mine = recordings(tmp_path / "mine")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (photos / "manifest.json").write_text('{"name": "my web app"}')  # a marker's name is not enough
    (tmp_path / "link").symlink_to(photos)
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        download("folder", photos, smoke, audio_dir=mine, progress=False)
    one_line(e, str(photos), "BeetNet did not write", "manifest.json", NEW_FOLDER)
    with pytest.raises(BeetNetError) as e:  # a link is refused as such, whatever it points to
        download("folder", tmp_path / "link", smoke, audio_dir=mine, progress=False)
    one_line(e, str(tmp_path / "link"), "symbolic link", str(photos), "(nothing was changed)")
    with pytest.raises(BeetNetError) as e:  # the demo source claims its output the same way
        download("demo", photos, smoke, progress=False)
    one_line(e, str(photos), "BeetNet did not write", NEW_FOLDER)
    assert tree(tmp_path) == before


def test_attack_cache_out_at_a_regular_file_is_refused_and_the_file_kept(tmp_path, smoke):
    clips = clip_folder(tmp_path / "clips")
    (tmp_path / "thesis.pdf").write_bytes(b"%PDF-1.4 years of work")
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        build_cache(clips, tmp_path / "thesis.pdf", smoke.features, smoke.data, **quiet)
    one_line(e, str(tmp_path / "thesis.pdf"), "is not a folder", "choose a new folder as the cache output",
             "(nothing was changed)")
    assert tree(tmp_path) == before


def test_attack_cache_out_equals_clips_or_inside_them_is_refused_and_no_clip_deleted(tmp_path, smoke):
    clips = clip_folder(tmp_path / "clips")
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        build_cache(clips, clips, smoke.features, smoke.data, **quiet)
    one_line(e, str(clips), "is the input folder itself", "choose another output folder")
    with pytest.raises(BeetNetError) as e:
        build_cache(clips, clips / "cache", smoke.features, smoke.data, **quiet)
    one_line(e, str(clips / "cache"), "inside the input folder", "choose an output outside it")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("other", ["run", "clips"])
def test_attack_cache_out_at_a_run_or_clip_folder_is_refused_and_its_files_kept(tmp_path, smoke, other):
    clips = clip_folder(tmp_path / "clips")
    target = tmp_path / "target"
    if other == "run":  # what train writes: checkpoints and a history
        target.mkdir()
        (target / "last.pt").write_bytes(b"weights of a week of training")
        (target / "history.json").write_text("[]")
    else:
        download("folder", target, smoke, audio_dir=recordings(tmp_path / "mine"), progress=False)
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        build_cache(clips, target, smoke.features, smoke.data, **quiet)
    one_line(e, str(target), "BeetNet did not write", "meta.json", NEW_FOLDER)
    assert tree(tmp_path) == before


def test_attack_audio_dir_holding_an_earlier_output_is_not_read_back(tmp_path, smoke):
    """An earlier run wrote its clips (and left a staging folder) inside the recordings folder."""
    mine = recordings(tmp_path / "mine")
    first = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    os.replace(tmp_path / "clips", mine / "clips")  # as an older BeetNet allowed: output inside input
    (mine / ".clips.staging-999999999-abc").mkdir()
    write_wav(mine / ".clips.staging-999999999-abc" / "9_0.wav", tone(2.0))
    before = tree(tmp_path)
    again = download("folder", tmp_path / "again", smoke, audio_dir=mine, progress=False)
    assert again.recordings == first.recordings  # 3 recordings, not 3 + one per old clip
    with pytest.raises(BeetNetError) as e:  # and the clip folder itself is not recordings
        download("folder", tmp_path / "third", smoke, audio_dir=mine / "clips", progress=False)
    one_line(e, str(mine / "clips"), "BeetNet's own clips output", "pass a folder of your recordings to --audio-dir")
    assert tree(tmp_path, ("again",)) == before  # the old output inside the recordings left as it was


def test_attack_kill_between_the_two_renames_leaves_the_old_folder_put_back(tmp_path, smoke, monkeypatch):
    """Where the OS cannot swap two folders in one step, a kill between the renames leaves `.old-PID`."""
    mine = recordings(tmp_path / "mine")
    clips = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    want, user = tree(clips.path), tree(mine)
    os.replace(clips.path, tmp_path / f".clips.old-{dead_pid()}")  # the state the kill leaves
    os.mkdir(tmp_path / f".clips.staging-{dead_pid()}-x1")  # the new copy, half written
    again = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)  # reused, not rebuilt
    assert tree(again.path) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips", "mine"]
    built = build_cache(again.path, tmp_path / "cache", smoke.features, smoke.data, **quiet)
    os.replace(tmp_path / "cache", tmp_path / f".cache.old-{dead_pid()}")
    assert load_cache(tmp_path / "cache").names == built.names  # a reader puts it back too
    assert tree(mine) == user  # and only BeetNet's own folders beside it (the names above)
    shutil.rmtree(tmp_path / "cache")
    # the two-rename path itself, as on a file system without RENAME_EXCHANGE
    monkeypatch.setattr(storage, "_libc", None)
    write_wav(mine / "take 9.wav", tone(4.5, freq=900))
    third = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    assert len(third.recordings) == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["clips", "mine"]


def test_attack_swap_is_one_step_where_linux_has_renameat2(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("new"), (b / "x").write_text("old")
    assert storage._exchange(a, b)  # the path used on this machine; a kill can never find `b` missing
    assert (b / "x").read_text() == "new" and (a / "x").read_text() == "old"


def test_attack_sigkill_during_a_download_leaves_staging_that_the_next_run_removes(tmp_path, smoke):
    mine = recordings(tmp_path / "mine")
    script = f"""
import os, signal
from beetnet_utils import data, get_config
real = data.write_clips
def write_then_die(*args):
    real(*args)
    os.kill(os.getpid(), signal.SIGKILL)
data.write_clips = write_then_die
data.download("folder", {str(tmp_path / 'clips')!r}, get_config("smoke"), audio_dir={str(mine)!r}, progress=False)
"""
    before = tree(mine)
    r = run_python(script)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".clips.staging-")]
    assert len(left) == 1 and list(left[0].glob("*.wav"))  # killed with a clip written
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".clips.staging-{alive.pid}-busy").mkdir()  # another run, still building: kept
        (tmp_path / ".clips.abcd1234.tmp").mkdir()  # an older version's staging, two days old: removed
        os.utime(tmp_path / ".clips.abcd1234.tmp", (time.time() - 2 * 86400,) * 2)
        other = f".cache.staging-{dead_pid()}-x"
        (tmp_path / other).mkdir()  # another target's staging, dead too: left to the run that writes that target
        download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            other, f".clips.staging-{alive.pid}-busy", "clips", "mine"]
    finally:
        alive.kill()
        alive.wait()
    assert tree(mine) == before


def test_attack_killed_checkpoint_write_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    run = tmp_path / "run"
    atomic_write(run / "last.pt", lambda p: p.write_bytes(b"epoch 1"))
    (run / f".last.pt.staging-{dead_pid()}-x").write_bytes(b"half of epoch 2")
    (run / "notes.txt").write_text("mine")
    atomic_write(run / "last.pt", lambda p: p.write_bytes(b"epoch 2"))
    assert sorted(p.name for p in run.iterdir()) == ["last.pt", "notes.txt"]
    assert (run / "last.pt").read_bytes() == b"epoch 2" and (run / "notes.txt").read_text() == "mine"


def test_attack_claim_output_for_run_folders(tmp_path):
    """What train will call: a run folder is new, empty, or carries its marker."""
    run = tmp_path / "run"
    assert claim_output(run, "run", "run.json") == run and not run.exists()
    run.mkdir()
    claim_output(run, "run", "run.json")
    (run / "run.json").write_text(json.dumps({"beetnet": "run"}))
    (run / "last.pt").write_bytes(b"w")
    claim_output(run, "run", "run.json")
    (run / "run.json").write_text(json.dumps({"beetnet": "cache"}))  # another kind's marker
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        claim_output(run, "run", "run.json")
    one_line(e, str(run), "run.json", NEW_FOLDER)
    assert tree(tmp_path) == before


# --- 2. content, not size ---------------------------------------------------------------------

def test_attack_new_audio_under_the_same_names_and_sizes_rebuilds_clips_and_cache(tmp_path, smoke):
    mine = recordings(tmp_path / "mine")
    clips = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    said = []
    first = build_cache(clips.path, tmp_path / "cache", smoke.features, smoke.data, progress=False, log=said.append)
    size = (mine / "take 0.wav").stat().st_size
    write_wav(mine / "take 0.wav", tone(4.5, freq=1500))  # new music, same name, same size
    assert (mine / "take 0.wav").stat().st_size == size
    before = tree(tmp_path, ("clips", "cache"))
    clips = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    second = build_cache(clips.path, tmp_path / "cache", smoke.features, smoke.data, progress=False, log=said.append)
    assert "clip folder changed" in said[-2]
    i = first.names.index("take-0_0.wav")
    assert not np.array_equal(first.mels[i], second.mels[second.names.index("take-0_0.wav")])
    assert tree(tmp_path, ("clips", "cache")) == before


@pytest.mark.parametrize("damage, why", [
    ("index.csv missing", "index.csv is missing"),
    ("mels.npy missing", "mels.npy is missing"),
    ("mels.npy 0 bytes", "mels.npy is unreadable or truncated"),
    ("mels.npy truncated", "mels.npy is unreadable or truncated"),
    ("mels.npy float32", "mels.npy holds float32"),
    ("mels.npy of another cache", "mels.npy changed"),
    ("index.csv row dropped", "index.csv changed"),
    ("index.csv splits relabelled", "index.csv changed"),
    ("index.csv split misspelled", "index.csv changed"),
])
def test_attack_damaged_or_edited_cache_is_rebuilt_with_a_reason_and_refused_by_load_cache(tmp_path, smoke,
                                                                                             damage, why):
    clips = clip_folder(tmp_path / "clips")
    cache = tmp_path / "cache"
    good = build_cache(clips, cache, smoke.features, smoke.data, **quiet)
    mels, index = cache / "mels.npy", cache / "index.csv"
    rows = index.read_text().splitlines(keepends=True)
    if damage.endswith("missing"):
        (cache / damage.split()[0]).unlink()
    elif damage == "mels.npy 0 bytes":
        mels.write_bytes(b"")
    elif damage == "mels.npy truncated":
        mels.write_bytes(mels.read_bytes()[:-1000])
    elif damage == "mels.npy float32":
        np.save(mels, good.mels.astype(np.float32))
    elif damage == "mels.npy of another cache":
        np.save(mels, good.mels[::-1].copy())
    elif damage == "index.csv row dropped":
        index.write_text("".join(rows[:-1]))
    elif damage == "index.csv splits relabelled":
        relabelled = [r.replace(",val", ",train").replace(",test", ",train") for r in rows[1:]]
        index.write_text("".join([rows[0], *relabelled]))
    else:
        index.write_text("".join([rows[0]] + [r.replace(",train", ",trian") for r in rows[1:]]))
    before, outside = tree(tmp_path), tree(tmp_path, ("cache",))
    with pytest.raises(BeetNetError) as e:
        load_cache(cache)
    one_line(e, str(cache), why, f"build it again with `python -m beetnet_utils cache --clips CLIPS --out {cache}`")
    assert tree(tmp_path) == before  # a reader refuses it and leaves it be
    said = []
    again = build_cache(clips, cache, smoke.features, smoke.data, progress=False, log=said.append)
    assert f"the cache is damaged: {why}" in said[0] and not any(s.startswith("reusing") for s in said)
    assert again.names == good.names and np.array_equal(again.mels, good.mels)
    assert list(again.splits) == list(good.splits) and list(load_cache(cache).splits) == list(good.splits)
    assert tree(tmp_path, ("cache",)) == outside


def test_attack_unreadable_meta_json_is_refused_not_trusted(tmp_path, smoke):
    clips = clip_folder(tmp_path / "clips")
    cache = tmp_path / "cache"
    build_cache(clips, cache, smoke.features, smoke.data, **quiet)
    (cache / "meta.json").write_text('{"feature_hash": ')  # cut short
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        load_cache(cache)
    one_line(e, str(cache), "meta.json is unreadable", "build it again")
    with pytest.raises(BeetNetError) as e:  # without a readable marker the folder is not known to be ours
        build_cache(clips, cache, smoke.features, smoke.data, **quiet)
    one_line(e, str(cache), "BeetNet did not write", NEW_FOLDER)
    assert tree(tmp_path) == before


# --- 3. samples are checked where they are read ----------------------------------------------

def bad_recordings(folder: Path) -> dict[str, np.ndarray]:
    music = tone(4.5)
    clipped = np.clip(tone(4.5, amp=1.0) * np.float32(20), -1, 1)  # hard-clipped: most samples at full scale
    nan, inf = music.copy(), music.copy()
    nan[1234], inf[5678] = np.nan, np.inf
    files = {"good": music, "nan": nan, "inf": inf, "all-nan": np.full_like(music, np.nan), "clipped": clipped,
             "dc": np.full_like(music, 0.5), "silent": np.zeros_like(music), "loud-float": music * np.float32(4)}
    for name, x in files.items():
        write_wav(folder / f"{name}.wav", x, subtype="FLOAT")
    return files


def test_attack_float_recordings_with_nan_inf_clipping_dc_or_over_range_are_counted_not_written(tmp_path, smoke):
    mine = tmp_path / "mine"
    files = bad_recordings(mine)
    before = tree(tmp_path)
    out = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    assert out.recordings == {"good": 2, "loud-float": 2}
    assert out.skipped == {"corrupt (NaN or inf samples)": 3, "clipped (over 5% of samples at full scale)": 1,
                           "constant (DC offset, no sound)": 1, "silent": 1}
    assert out.fixed == {"scaled down (float samples beyond ±1)": 1}
    assert "fixed inputs: 1 scaled down" in out.summary()
    loud, _ = sf.read(out.path / "loud-float_0.wav")  # scaled by its peak, not hard-clipped at ±1
    expected = files["loud-float"][: 2 * SR] / np.abs(files["loud-float"]).max()
    assert np.abs(loud - expected).max() < 1e-3  # hard clipping at ±1 would be off by up to 0.5 here
    assert tree(tmp_path, ("clips",)) == before


def test_attack_clips_with_nan_inf_clipping_or_dc_are_skipped_by_the_cache(tmp_path, smoke):
    clips = clip_folder(tmp_path / "clips")
    write_wav(clips / "400_0.wav", np.full(2 * SR, 0.25, np.float32))  # DC: passed the original's silence test
    write_wav(clips / "400_1.wav", np.clip(tone(2.0, amp=1.0) * np.float32(20), -1, 1))
    write_wav(clips / "400_2.wav", np.full(2 * SR, np.nan, np.float32), subtype="FLOAT")
    inf = tone(2.0)
    inf[10] = -np.inf
    write_wav(clips / "400_3.wav", inf, subtype="FLOAT")
    write_wav(clips / "400_4.wav", tone(2.0) * np.float32(8), subtype="FLOAT")  # over range: kept, scaled
    before = tree(tmp_path)
    cache = build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, **quiet)
    assert cache.meta["skipped"] == {"constant (DC offset, no sound)": 1, "corrupt (NaN or inf samples)": 2,
                                     "clipped (over 5% of samples at full scale)": 1}
    assert cache.meta["fixed"] == {"scaled down (float samples beyond ±1)": 1}
    assert "400_4.wav" in cache.names
    wav, reason, _ = load_clip(clips / "400_0.wav", smoke.features)
    assert wav is None and reason == "constant (DC offset, no sound)"
    assert tree(tmp_path, ("cache",)) == before


# --- 4. never hang: network and special files -------------------------------------------------

@pytest.fixture
def mute_kaggle(offline_kaggle):
    """A server at kagglehub's TEST address that accepts connections (the kernel completes them) and never answers."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 7777))
    s.listen(16)
    yield s
    s.close()


# kagglehub's own folder for the dataset being fetched (it makes it, and may keep a partial archive there)
KAGGLE_DOWNLOAD = ("clips", "kh/datasets/alexzyukov")


def users_kaggle_cache(offline_kaggle: Path) -> None:
    """Another dataset the user fetched earlier with kagglehub, which a failed download must leave alone."""
    files = kaggle_cache(offline_kaggle, "someone", "other", 3)
    (files / "table.csv").write_text("a,b\n1,2\n")


def failed_fetch(tmp_path: Path) -> pytest.ExceptionInfo:
    """from_kaggle into tmp_path/clips, failing; no file outside kagglehub's download and the clips changes,
    and no clips are left. Run in a thread: a fetch that blocks fails the test instead of hanging it."""
    before = tree(tmp_path, KAGGLE_DOWNLOAD)

    def fetch():
        with pytest.raises(BeetNetError) as e:
            from_kaggle(tmp_path / "clips", "alexzyukov/beethoven/versions/1", progress=False, stall_seconds=1)
        return e

    e = in_thread(fetch)
    assert tree(tmp_path, KAGGLE_DOWNLOAD) == before and not (tmp_path / "clips").exists()
    return e


def test_attack_kaggle_server_that_accepts_and_never_answers_ends_within_the_bound(mute_kaggle, offline_kaggle,
                                                                                   tmp_path):
    users_kaggle_cache(offline_kaggle)
    one_line(failed_fetch(tmp_path), "stopped answering", "nothing for 1 s", "try again later", "--source demo")


class BadKaggle(http.server.BaseHTTPRequestHandler):
    """kagglehub's DownloadDataset answered badly: `mode` says how."""

    mode = "stall"
    body = b""
    release = threading.Event()

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = self.body
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        if self.mode == "md5":
            self.send_header("x-goog-hash", "md5=" + "A" * 22 + "==")
        self.end_headers()
        if self.mode in ("stall", "cut"):
            self.wfile.write(body[:100])
            self.wfile.flush()
            if self.mode == "stall":
                self.release.wait(30)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def small_zip(n: int = 4) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k in range(n):
            wav = io.BytesIO()
            sf.write(wav, tone(2.0, freq=300 + 50 * k), SR, format="WAV", subtype="PCM_16")
            z.writestr(f"audio/1759_{k}.wav", wav.getvalue())
    return buf.getvalue()


@pytest.fixture
def bad_kaggle(offline_kaggle):
    BadKaggle.body, BadKaggle.release = small_zip(), threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 7777), BadKaggle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield BadKaggle
    BadKaggle.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode, words", [
    ("stall", "stopped answering"),  # headers, 100 bytes, then silence
    ("cut", "broke off"),  # fewer bytes than Content-Length, then the connection closes
    ("md5", "arrived damaged (DataCorruptionError)"),
    ("notzip", "Unsupported archive type"),  # a captive portal's login page instead of the archive
])
def test_attack_kaggle_download_that_stalls_breaks_or_arrives_damaged_is_one_line(bad_kaggle, offline_kaggle,
                                                                                  tmp_path, mode, words):
    bad_kaggle.mode = mode
    if mode == "notzip":
        bad_kaggle.body = b"<html>a captive portal login page</html>" * 100
    users_kaggle_cache(offline_kaggle)
    again = "try again later" if mode == "stall" else "run again"
    one_line(failed_fetch(tmp_path), words, "alexzyukov/beethoven", again, "or use --source demo")


@contextlib.contextmanager
def json_server(port: int, status: int, payload: dict):
    """A loopback server answering every POST with `status` and `payload`; yields its port."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_attack_kaggle_credentials_refused_says_none_are_needed(offline_kaggle, tmp_path):
    users_kaggle_cache(offline_kaggle)
    with json_server(7777, 401, {"code": 401, "message": "bad token"}):
        e = failed_fetch(tmp_path)
    one_line(e, "needs no credentials: unset KAGGLE_API_TOKEN", "kagglehub.login()", "use --source demo")


def test_attack_kaggle_notebook_data_proxy_reporting_a_failure_is_one_line(offline_kaggle, tmp_path,
                                                                             monkeypatch):
    """Inside a Kaggle notebook kagglehub asks the notebook's data proxy; a BackendError comes back."""
    with json_server(0, 200, {"wasSuccessful": False, "error": "quota"}) as port:
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
        monkeypatch.setenv("KAGGLE_DATA_PROXY_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("KAGGLE_USER_SECRETS_TOKEN", "jwt")
        monkeypatch.setenv("KAGGLE_DATA_PROXY_TOKEN", "proxy")
        users_kaggle_cache(offline_kaggle)
        e = failed_fetch(tmp_path)
    one_line(e, "Kaggle reported an error", "quota", "try again later", "or use --source demo")


def test_attack_out_inside_the_kagglehub_cache_is_refused_and_it_is_untouched(offline_kaggle, tmp_path):
    files = kaggle_cache(offline_kaggle, "alexzyukov", "beethoven", 1)
    clip_folder(files / "beethoven", recs=("2614",))
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        from_kaggle(files / "clips", "alexzyukov/beethoven/versions/1", progress=False)
    one_line(e, str(files / "clips"), "inside the input folder", "choose an output outside it")
    assert tree(tmp_path) == before


def special_files(folder: Path) -> None:
    """Names like a clip that are no file to read: a FIFO (reading it blocks until a writer comes),
    a dangling symlink, a symlink loop, and a folder."""
    os.mkfifo(folder / "500_0.wav")
    (folder / "500_1.wav").symlink_to(folder / "gone.wav")
    (folder / "500_2.wav").symlink_to(folder / "500_3.wav")
    (folder / "500_3.wav").symlink_to(folder / "500_2.wav")
    (folder / "500_4.wav").mkdir()


def in_thread(fn, timeout: float = 60):
    """Run fn (its error raised here); a call still blocked after `timeout` fails the test instead of hanging it."""
    result = {}

    def call():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (raised again below, in the test's thread)
            result["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_attack_fifo_and_broken_symlinks_named_like_clips_are_counted_and_never_block_the_cache(tmp_path, smoke):
    clips = clip_folder(tmp_path / "clips")
    special_files(clips)
    before = tree(tmp_path)
    cache = in_thread(lambda: build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, **quiet))
    assert cache.meta["skipped"] == {"not a regular file (FIFO, device or folder)": 2,
                                     "missing (broken or looping symlink)": 3}
    assert len(cache.names) == 6
    assert tree(tmp_path, ("cache",)) == before


def test_attack_fifo_and_broken_symlinks_among_recordings_are_counted_and_never_block(tmp_path, smoke):
    mine = recordings(tmp_path / "mine")
    os.mkfifo(mine / "live.wav")
    (mine / "moved.flac").symlink_to(tmp_path / "elsewhere.flac")
    (mine / "a.mp3").symlink_to(mine / "b.mp3")
    (mine / "b.mp3").symlink_to(mine / "a.mp3")
    before = tree(tmp_path)
    out = in_thread(lambda: download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False))
    assert out.skipped == {"not a regular file (FIFO, device or folder)": 1, "missing (broken or looping symlink)": 3}
    assert len(out.recordings) == 3
    assert tree(tmp_path, ("clips",)) == before


# --- 5. disk full -----------------------------------------------------------------------------

def test_attack_disk_full_while_writing_clips_says_so_and_the_old_folder_stays(tmp_path, smoke):
    """A real EFBIG from the OS (RLIMIT_FSIZE below one clip's 64 KB) while the folder source writes clips."""
    mine = recordings(tmp_path / "mine")
    download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    old = tree(tmp_path / "clips")
    write_wav(mine / "take 9.wav", tone(4.5, freq=900))  # forces a rebuild
    before = tree(tmp_path)
    call = (f"from beetnet_utils import download, get_config; download('folder', {str(tmp_path / 'clips')!r}, "
            f"get_config('smoke'), audio_dir={str(mine)!r}, progress=False)")
    r = run_python(DISK_FULL.format(limit=30_000, call=call))
    assert r.returncode == 3, r.stderr[-2000:]
    assert r.stdout.startswith(f"disk full while writing {tmp_path / 'clips'}: {FREE_SPACE}"), r.stdout
    assert r.stdout.count("\n") == 1 and "System error" not in r.stdout
    assert tree(tmp_path) == before  # the old clips too, and no staging left
    assert tree(tmp_path / "clips") == old


def test_attack_disk_full_while_downloading_from_kaggle_says_so(bad_kaggle, offline_kaggle, tmp_path):
    bad_kaggle.mode = "ok"
    users_kaggle_cache(offline_kaggle)
    before = tree(tmp_path, KAGGLE_DOWNLOAD)
    call = ("from beetnet_utils.data import from_kaggle; "
            f"from_kaggle({str(tmp_path / 'clips')!r}, 'alexzyukov/beethoven/versions/1', progress=False)")
    r = run_python(DISK_FULL.format(limit=50_000, call=call), env=os.environ.copy())
    assert tree(tmp_path, KAGGLE_DOWNLOAD) == before
    assert r.returncode == 3, r.stderr[-2000:]
    said = r.stdout.splitlines()[-1]  # above it, kagglesdk's TEST environment prints its requests
    assert said.startswith(f"disk full while writing {offline_kaggle}") and FREE_SPACE in said
    assert "System error" not in r.stdout + r.stderr and not (tmp_path / "clips").exists()


# --- 6. the CLI: ordinary mistakes end in one line and exit code 2; Ctrl-C in 130 --------------

def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beetnet_utils", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, **kw)


def assert_one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr[-3000:]
    assert all(w in r.stderr for w in words), r.stderr


def trees(*folders: Path) -> list[dict[str, str]]:
    return [tree(f) for f in folders]


@pytest.mark.parametrize("where, words", [
    ("is a file", ["is not a folder: choose a new folder as the run output", "(nothing was changed)"]),
    ("under a file", ["Not a directory", "(nothing was replaced)"]),
])
def test_attack_run_folder_that_is_a_file_or_under_one_is_one_line(tmp_path, smoke_cache, where, words):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    run = blocker if where == "is a file" else blocker / "run"
    before = trees(tmp_path, smoke_cache.path)
    r = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--epochs", "1")
    assert_one_line_error(r, str(blocker), *words)
    assert trees(tmp_path, smoke_cache.path) == before


def test_attack_run_folder_inside_the_cache_or_holding_it_is_refused(tmp_path, smoke_cache):
    before = tree(smoke_cache.path.parent)
    r = cli("train", "--cache", smoke_cache.path, "--run", smoke_cache.path / "run", "--profile", "smoke")
    assert_one_line_error(r, str(smoke_cache.path / "run"), "inside the input folder", "choose an output outside it")
    r = cli("train", "--cache", smoke_cache.path, "--run", smoke_cache.path.parent, "--profile", "smoke")
    assert_one_line_error(r, str(smoke_cache.path.parent), "BeetNet did not write", NEW_FOLDER)
    assert tree(smoke_cache.path.parent) == before


def test_attack_run_folder_of_unrelated_files_is_refused_and_kept(tmp_path, smoke_cache):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    before = trees(tmp_path, smoke_cache.path)
    r = cli("train", "--cache", smoke_cache.path, "--run", mine, "--profile", "smoke", "--epochs", "1")
    assert_one_line_error(r, str(mine), "BeetNet did not write", NEW_FOLDER)
    assert trees(tmp_path, smoke_cache.path) == before


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_attack_json_report_that_cannot_be_written_keeps_the_table(tmp_path, smoke, smoke_cache, where):
    from beetnet_utils.train import train

    train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 1}), **quiet)
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    target = tmp_path / "file" / "r.json" if where == "under a file" else tmp_path / "folder"
    before = [tree(tmp_path, ("run",)), tree(smoke_cache.path)]
    r = cli("evaluate", "--run", tmp_path / "run", "--cache", smoke_cache.path, "--profile", "smoke", "--json", target)
    if where == "under a file":  # the OS's words
        assert_one_line_error(r, f"File exists: {tmp_path / 'file'}", "(nothing was replaced)")
    else:
        assert_one_line_error(r, f"{target} exists and is not a BeetNet report", "name a new file for the report")
    assert "| beetnet |" in r.stdout
    assert [tree(tmp_path, ("run",)), tree(smoke_cache.path)] == before


def test_attack_demo_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "out").write_text("mine")
    before = tree(tmp_path)
    r = cli("demo", "--out", tmp_path / "out", "--profile", "smoke")
    assert_one_line_error(r, f"{tmp_path / 'out'} exists and is not a folder: choose a new folder as the demo output",
                          "(nothing was changed)")
    assert tree(tmp_path) == before


def test_attack_an_evaluation_folder_never_seen_does_not_wipe_a_neighbour(tmp_path, smoke, smoke_cache, smoke_clips):
    """`evaluate --clips DIR/mine` caches DIR/mine's clips beside the run's cache as eval_mine: an unrelated
    folder of that name is refused, not replaced."""
    from beetnet_utils.train import train

    cache = tmp_path / "cache"
    shutil.copytree(smoke_cache.path, cache)
    train(load_cache(cache), tmp_path / "run", smoke.replace(train={"epochs": 1}), **quiet)
    neighbour = tmp_path / "eval_mine"
    neighbour.mkdir()
    (neighbour / "thesis.tex").write_text("years of work")
    shutil.copytree(smoke_clips.path, tmp_path / "mine")
    before = tree(tmp_path, ("cache", "run"))
    r = cli("evaluate", "--run", tmp_path / "run", "--cache", cache, "--clips", tmp_path / "mine", "--profile", "smoke")
    assert_one_line_error(r, str(neighbour), "BeetNet did not write", NEW_FOLDER)
    assert tree(tmp_path, ("cache", "run")) == before


def not_the_best(run: Path) -> bool:
    """The run's last finished epoch did not improve on an earlier one: last.pt is a later epoch than best.pt."""
    try:
        history = json.loads((run / "history.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return len(history) > 1 and history[-1]["val_l1"] > min(h["val_l1"] for h in history)


def test_attack_ctrl_c_during_training_is_one_line_exit_130_and_resumes_from_last_pt(tmp_path, smoke_cache):
    run, cache = tmp_path / "run", tree(smoke_cache.path)
    train = ["train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--epochs", "200"]
    # SIGINT as a terminal's Ctrl-C finds it: a shell's background job (pytest started with `&`) ignores it,
    # and a Python started ignoring it keeps ignoring it
    proc = subprocess.Popen([sys.executable, "-m", "beetnet_utils", *map(str, train)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not not_the_best(run) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # in the middle of the next epoch
    _, err = proc.communicate(timeout=60)
    last = err.rstrip().rsplit("\n", 1)[-1]  # above it, the progress bar of the interrupted epoch
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert last == "interrupted: every file BeetNet had finished writing is intact; run the same command to continue"
    stopped, best = (load_checkpoint(run, name) for name in ("last", "best"))
    assert stopped["epoch"] > best["epoch"], "the two checkpoints were to differ"
    r = cli(*train, "--minutes", "0.0001")  # the same command, with a budget: one more epoch
    assert r.returncode == 0 and f"resuming {run} after epoch {stopped['epoch']} " in r.stdout, r.stderr[-2000:]
    history = json.loads((run / "history.json").read_text())
    assert history[:-1] == stopped["history"] and history[-1]["epoch"] == stopped["epoch"] + 1
    assert tree(smoke_cache.path) == cache


def test_attack_disk_full_while_writing_a_checkpoint_says_so_and_keeps_the_last_one(tmp_path, smoke_cache):
    """RLIMIT_FSIZE between the first checkpoint's size and twice it: epoch 1 fits, later ones do not."""
    from beetnet_utils import get_config
    from beetnet_utils.train import train

    run = tmp_path / "run"
    train(smoke_cache, run, get_config("smoke").replace(train={"epochs": 1}), **quiet)
    size = (run / "last.pt").stat().st_size
    before, cache = tree(run), tree(smoke_cache.path)
    call = (f"from beetnet_utils import get_config, load_cache; from beetnet_utils.train import train; "
            f"train(load_cache({str(smoke_cache.path)!r}), {str(run)!r}, "
            f"get_config('smoke').replace(train={{'epochs': 3}}), progress=False, log=lambda m: None)")
    r = run_python(DISK_FULL.format(limit=size // 2, call=call))
    assert r.returncode == 3, r.stderr[-2000:]
    assert r.stdout.startswith(f"disk full while writing {run}") and r.stdout.count("\n") == 1, r.stdout
    assert FREE_SPACE in r.stdout and "enforce fail" not in r.stdout + r.stderr
    assert tree(run) == before and tree(smoke_cache.path) == cache  # epoch 1's checkpoints and history, as they were
