"""BeetNet never loses or overwrites a file that is not its own.

Its outputs are owned: it writes only into a folder that is new, empty or carries its own marker, never
into an input or over one, never through a symbolic link it did not make. Folders and files are written
whole (one-step swaps, temporary names renamed), and what a killed run left behind is put back or
cleared. One writer per folder, and readers hold what they read (OS locks). A full disk, Ctrl-C and
SIGTERM end in one line with every finished file intact.

Each attack makes its own files and checks both the outcome (a one-line error with the words that say
what to do) and that no file outside BeetNet's own output folders changed: the test's folder is hashed
before and after, those outputs left out (journey.tree).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from beetnet_utils import BeetNetError, build_cache, download, load_cache, storage
from beetnet_utils.run import load_checkpoint
from beetnet_utils.sources import from_kaggle
from beetnet_utils.storage import atomic_write, claim_output, writer_lock
from beetnet_utils.train import train

from helpers import (
    DISK_FULL,
    FREE_SPACE,
    NEW_FOLDER,
    ROOT,
    assert_one_line_error,
    cli,
    clip_folder,
    copy_run,
    kaggle_cache,
    lock_held_elsewhere,
    one_line,
    quiet,
    recordings,
    run_python,
    tone,
    write_wav,
)
from journey import tree


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def trees(*folders: Path) -> list[dict[str, str]]:
    return [tree(f) for f in folders]


def build_cache_quiet(clips, out, cfg):
    from beetnet_utils import build_cache

    return build_cache(clips, out, cfg.features, cfg.data, **quiet)


# --- outputs are owned: new, empty, or carrying BeetNet's marker; never an input ------------------

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


def test_attack_out_inside_the_kagglehub_cache_is_refused_and_it_is_untouched(offline_kaggle, tmp_path):
    files = kaggle_cache(offline_kaggle, "alexzyukov", "beethoven", 1)
    clip_folder(files / "beethoven", recs=("2614",))
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as e:
        from_kaggle(files / "clips", "alexzyukov/beethoven/versions/1", progress=False)
    one_line(e, str(files / "clips"), "inside the input folder", "choose an output outside it")
    assert tree(tmp_path) == before


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


def test_attack_demo_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "out").write_text("mine")
    before = tree(tmp_path)
    r = cli("demo", "--out", tmp_path / "out", "--profile", "smoke")
    assert_one_line_error(r, f"{tmp_path / 'out'} exists and is not a folder: choose a new folder as the demo output",
                          "(nothing was changed)")
    assert tree(tmp_path) == before


def test_attack_demo_out_at_a_folder_of_other_files_is_refused_before_any_notebook_runs(tmp_path):
    """`demo --out .` in the repository's root would put executed copies over the committed notebooks."""
    mine = tmp_path / "checkout"
    (mine / "notebooks").mkdir(parents=True)
    (mine / "notebooks" / "01_download.ipynb").write_text('{"cells": []}')
    (mine / "README.md").write_text("# mine")
    before = tree(mine)
    r = cli("demo", "--out", mine, "--profile", "smoke")
    assert_one_line_error(r, str(mine), "did not write")
    assert tree(mine) == before


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


def test_attack_json_report_over_a_checkpoint_or_a_thesis_is_refused_and_both_kept(tmp_path, trained, smoke_cache):
    run = copy_run(trained, tmp_path / "run")
    (tmp_path / "thesis.txt").write_text("years of work")
    before = tree(tmp_path)
    for target in (run / "best.pt", tmp_path / "thesis.txt"):
        r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke", "--json", target)
        assert_one_line_error(r, str(target), "not a BeetNet report")
        assert "| beetnet |" in r.stdout  # the table is printed before the report is written
    assert tree(tmp_path) == before
    report = tmp_path / "report.json"  # a report replaces a report
    for _ in range(2):
        r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke", "--json", report)
        assert r.returncode == 0, r.stderr[-2000:]
    assert {k: v for k, v in tree(tmp_path).items() if k != "report.json"} == before


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


def test_evaluate_clips_whose_derived_cache_is_the_training_cache_is_refused(tmp_path, trained, smoke, smoke_clips):
    """--clips X caches X's clips at <cache parent>/eval_<X's name>: never over --cache itself."""
    cache = build_cache_quiet(smoke_clips.path, tmp_path / "eval_new", smoke)
    other = shutil.copytree(smoke_clips.path, tmp_path / "elsewhere" / "new")
    before = tree(tmp_path)
    r = cli("evaluate", "--run", trained, "--cache", cache.path, "--clips", other, "--profile", "smoke")
    assert_one_line_error(r, "is the input folder itself")
    assert tree(tmp_path) == before


def test_restoring_the_cache_never_replaces_a_folder_of_the_users_files(tmp_path, smoke_cache):
    from beetnet_utils import runtime

    archive = runtime.backup_cache(smoke_cache.path, tmp_path / "drive" / "cache.tar")
    local = tmp_path / "local" / "cache"
    local.mkdir(parents=True)
    (local / "my_song.wav").write_bytes(b"RIFF mine")
    before = tree(tmp_path / "local")
    with pytest.raises(BeetNetError) as exc:
        runtime.restore_cache(archive, local)
    assert "did not write" in str(exc.value)
    assert tree(tmp_path / "local") == before


# --- nothing is half-written: one-step swaps, temporary names, what a kill left cleared -----------

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
from beetnet_utils import data, get_config, sources
real = data.write_clips
def write_then_die(*args):
    real(*args)
    os.kill(os.getpid(), signal.SIGKILL)
data.write_clips = write_then_die
sources.download("folder", {str(tmp_path / 'clips')!r}, get_config("smoke"), audio_dir={str(mine)!r}, progress=False)
"""
    before = tree(mine)
    r = run_python(script)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".clips.staging-")]
    assert len(left) == 1 and list(left[0].glob("*.wav"))  # killed with a clip written
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".clips.staging-{alive.pid}-busy").mkdir()  # another run, still building: kept
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


def test_attack_folders_and_files_beetnet_writes_keep_the_users_mode(tmp_path, smoke, smoke_cache):
    umask = os.umask(0o022)
    try:
        clips = download("demo", tmp_path / "clips", smoke, progress=False).path
        assert stat.S_IMODE(clips.stat().st_mode) == 0o755  # as mkdir would make it, not 0700
        train(smoke_cache, tmp_path / "run", smoke.replace(train={"epochs": 1}), **quiet)
        assert stat.S_IMODE((tmp_path / "run" / "last.pt").stat().st_mode) == 0o644
        cache = tmp_path / "cache"
        build_cache(clips, cache, smoke.features, smoke.data, progress=False, log=lambda m: None)
        cache.chmod(0o750)  # the user's choice: kept when the cache is rebuilt
        (cache / "index.csv").write_text("name,recording,split\n")  # damaged: it is rebuilt
        build_cache(clips, cache, smoke.features, smoke.data, progress=False, log=lambda m: None)
        assert stat.S_IMODE(cache.stat().st_mode) == 0o750
        assert load_cache(cache).meta["beetnet"] == "cache"
    finally:
        os.umask(umask)


# --- disk full: one line, nothing replaced --------------------------------------------------------

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


# --- one writer per folder; readers hold what they read -------------------------------------------

def test_attack_two_trainings_on_one_run_folder_the_second_is_refused_naming_the_first(tmp_path, smoke_cache):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "beetnet_utils", "train", "--cache", str(smoke_cache.path),
                              "--run", str(run), "--profile", "smoke", "--epochs", "500", "--preset", "original"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # see the Ctrl-C test
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        r = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--epochs", "500",
                "--preset", "original")
        assert_one_line_error(r, str(run), f"process {first.pid}", "beetnet_utils train")
        assert first.poll() is None  # the first one trains on
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    said = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--epochs", "500",
               "--preset", "original", "--minutes", "0.0001")
    assert said.returncode == 0 and "resuming" in said.stdout  # released when the first one ended


def test_attack_a_cache_build_into_a_folder_being_written_is_refused(tmp_path, smoke, smoke_clips):
    out = tmp_path / "cache"
    before = tree(smoke_clips.path)
    with writer_lock(out):  # this process writes the cache (the lock every cache and clip build takes)
        r = cli("cache", "--clips", smoke_clips.path, "--out", out, "--profile", "smoke")
        assert_one_line_error(r, str(out), f"process {os.getpid()}")
    assert not out.exists() and tree(smoke_clips.path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no lock file left behind
    assert build_cache(smoke_clips.path, out, smoke.features, smoke.data, progress=False, log=lambda m: None)


def test_a_cache_cannot_be_rebuilt_while_a_training_reads_it(tmp_path, smoke_clips, smoke):
    import signal
    import subprocess
    import sys
    import time

    cache = build_cache_quiet(smoke_clips.path, tmp_path / "cache", smoke)
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "beetnet_utils", "train", "--cache", str(cache.path), "--run",
                              str(run), "--profile", "smoke", "--epochs", "500", "--preset", "original"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        before = tree(cache.path)
        r = cli("cache", "--clips", smoke_clips.path, "--out", cache.path, "--profile", "smoke")
        assert_one_line_error(r, str(cache.path), "being read by another process")
        assert tree(cache.path) == before and first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    r = cli("cache", "--clips", smoke_clips.path, "--out", cache.path, "--profile", "smoke")
    assert r.returncode == 0, r.stderr  # released when the training ended
    assert not (tmp_path / ".cache.lock").exists()


def test_a_cache_build_refuses_a_clip_folder_being_written(tmp_path, smoke_clips, smoke):
    clips = shutil.copytree(smoke_clips.path, tmp_path / "clips")
    with lock_held_elsewhere("writer_lock", clips) as pid, pytest.raises(BeetNetError) as exc:
        build_cache_quiet(clips, tmp_path / "cache", smoke)
    assert f"being written by process {pid}" in str(exc.value)
    assert not (tmp_path / "cache").exists()


def test_a_download_refuses_a_clip_folder_a_cache_build_reads(tmp_path, smoke_clips, smoke):
    """The other order: a cache build holds its clip folder (a reader's lock) and a download into it is refused,
    the clips left as they were."""
    clips = shutil.copytree(smoke_clips.path, tmp_path / "clips")
    before = tree(clips)
    with lock_held_elsewhere("reader_lock", clips), pytest.raises(BeetNetError) as exc:
        download("folder", clips, smoke, audio_dir=recordings(tmp_path / "mine"), progress=False)
    one_line(exc, "is being read by another process")
    assert tree(clips) == before


def test_a_valid_cache_in_a_read_only_folder_is_reused_and_a_stale_one_is_one_line(tmp_path, smoke_cache, smoke_clips):
    """As a user who cannot write there: root without the capability to override file modes (root writes
    everywhere otherwise). No lock can be made, and nothing needs writing, so the cache is used as it is."""
    import subprocess
    import sys

    clips = shutil.copytree(smoke_clips.path, tmp_path / "input" / "clips")
    cache = shutil.copytree(smoke_cache.path, tmp_path / "data" / "cache")
    read_only = [tmp_path / "input", clips, tmp_path / "data", cache]
    before = tree(tmp_path)

    def cache_step() -> subprocess.CompletedProcess:
        for d in read_only:
            d.chmod(0o555)
        try:
            return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", sys.executable,
                                   "-m", "beetnet_utils", "cache", "--clips", str(clips), "--out", str(cache),
                                   "--profile", "smoke"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        finally:
            for d in read_only:
                d.chmod(0o755)

    r = cache_step()
    assert r.returncode == 0 and '"clips"' in r.stdout, r.stderr[-2000:]
    assert tree(tmp_path) == before
    sorted(clips.glob("*.wav"))[0].unlink()  # now the cache is stale
    r = cache_step()
    assert_one_line_error(r, "must be built again", "cannot be written")


# --- no link is followed --------------------------------------------------------------------------

def test_a_symlink_where_the_run_lock_goes_is_refused_and_its_target_kept(tmp_path, smoke, smoke_cache):
    mine = tmp_path / "thesis.txt"
    mine.write_text("years of work")
    (tmp_path / ".run.lock").symlink_to(mine)
    with pytest.raises(BeetNetError) as exc:
        train(smoke_cache, tmp_path / "run", smoke, **quiet)
    assert "symbolic link" in str(exc.value) and "\n" not in str(exc.value)
    assert mine.read_text() == "years of work"


def test_a_symlink_where_a_cache_builds_locks_go_is_refused_at_once_never_spun_on(tmp_path, smoke_clips):
    """A link planted at the writer's lock (beside --out) or the reader's (beside --clips) is refused in
    one line within seconds: opened through the link, the lock's inode check would retry forever."""
    import subprocess
    import sys

    mine = tmp_path / "thesis.txt"
    mine.write_text("years of work")
    clips = shutil.copytree(smoke_clips.path, tmp_path / "clips")
    for lock in (".cache.lock", ".clips.lock"):
        link = tmp_path / lock
        link.symlink_to(mine)
        r = subprocess.run([sys.executable, "-m", "beetnet_utils", "cache", "--clips", str(clips), "--out",
                            str(tmp_path / "cache"), "--profile", "smoke"], capture_output=True, text=True, cwd=ROOT,
                           timeout=90)
        assert_one_line_error(r, "symbolic link", str(link))
        link.unlink()
    assert mine.read_text() == "years of work" and not (tmp_path / "cache").exists()


def test_outputs_that_are_symlinks_are_refused_and_never_replaced(tmp_path, smoke):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("mine")
    link = tmp_path / "clips"
    link.symlink_to(elsewhere)
    before = tree(tmp_path)
    r = cli("download", "--source", "demo", "--out", link, "--profile", "smoke")
    assert_one_line_error(r, "symbolic link", str(elsewhere))
    assert link.is_symlink() and tree(tmp_path) == before


def test_links_inside_an_attached_kaggle_run_are_not_followed_when_it_is_copied(tmp_path, trained, capsys):
    from beetnet_utils import runtime

    kaggle = tmp_path / "kaggle"
    secret = tmp_path / "kaggle.json"
    secret.write_text('{"key": "secret"}')
    attached = shutil.copytree(trained, kaggle / "input" / "model" / "runs" / "smoke-original")
    (attached / "credentials.json").symlink_to(secret)
    (attached / "home").symlink_to(tmp_path, target_is_directory=True)
    env = runtime.Environment(in_colab=False, gpu_name=None, in_kaggle=True, kaggle_root=kaggle)
    [copy] = runtime.adopt_attached_runs(env, kaggle / "working" / "runs")
    assert (copy / "last.pt").is_file() and not (copy / "credentials.json").exists() and not (copy / "home").exists()
    assert "2 symbolic link(s)" in capsys.readouterr().out


# --- stops are clean: Ctrl-C and SIGTERM end in one line, every finished checkpoint intact --------

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


def children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_attack_sigterm_during_a_cache_build_stops_its_workers_and_says_so(tmp_path, smoke_clips):
    clips = tmp_path / "clips"  # enough clips for the forked workers (4 chunks of 128 at least)
    shutil.copytree(smoke_clips.path, clips)
    for copy in range(8):
        for p in smoke_clips.path.glob("*.wav"):
            shutil.copy(p, clips / f"c{copy}x{p.name}")
    before = tree(clips)
    proc = subprocess.Popen([sys.executable, "-m", "beetnet_utils", "cache", "--clips", str(clips), "--out",
                             str(tmp_path / "cache"), "--profile", "smoke"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    deadline = time.time() + 120
    while len(workers) < 2 and proc.poll() is None and time.time() < deadline:
        workers |= children(proc.pid)
        time.sleep(0.02)
    assert len(workers) >= 2, "the build should have forked its workers"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.rstrip().rsplit("\n", 1)[-1].startswith("terminated (SIGTERM)"), err[-2000:]
    assert "Traceback" not in err
    deadline = time.time() + 10
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers), "a worker outlived its parent"
    assert tree(clips) == before and not (tmp_path / "cache").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging, no lock left


def test_attack_sigterm_during_training_is_one_line_and_the_checkpoints_are_intact(tmp_path, smoke_cache):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "beetnet_utils", "train", "--cache", str(smoke_cache.path), "--run", str(run),
            "--profile", "smoke", "--epochs", "500", "--preset", "original"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.rstrip().rsplit("\n", 1)[-1].startswith("terminated (SIGTERM)"), err[-2000:]
    epoch = torch.load(run / "last.pt", weights_only=False)["epoch"]
    r = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--epochs", "500",
            "--preset", "original", "--minutes", "0.0001")
    assert r.returncode == 0 and f"resuming {run} after epoch {epoch}" in r.stdout, r.stderr[-2000:]
