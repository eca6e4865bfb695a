"""Attacks of issue #22: reports that replace only reports, output folders of other files, checkpoints of
another version, two writers on one folder, SIGTERM, NaN and wrong shapes, a bad environment, odd names.

As in test_attacks.py: each attack checks its one-line message and hashes every file outside BeetNet's
own outputs before and after.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from beetnet_utils import BeetNetError, build_cache, download, load_cache
from beetnet_utils import session as sessions
from beetnet_utils.audio import mel_to_audio, save_wav
from beetnet_utils.run import load_run
from beetnet_utils.storage import writer_lock
from beetnet_utils.train import train

from helpers import tone, write_wav
from test_attacks import ROOT, assert_one_line_error, cli, tree

quiet = dict(progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke, smoke_cache):
    """A run of two epochs of the original model on the smoke cache (copied by each test that changes it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(smoke_cache, run, smoke.replace(train={"epochs": 2}), **quiet)
    return run


def copy_run(trained: Path, dest: Path) -> Path:
    shutil.copytree(trained, dest)
    return dest


def one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


# --- 1-3: data loss ---------------------------------------------------------------------------

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


def test_attack_checkpoints_of_another_version_are_never_trained_over(tmp_path, trained, smoke, smoke_cache):
    run = copy_run(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=False)
        torch.save(ckpt | {"format": 1}, run / name)
    before = tree(tmp_path)
    r = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--preset", "original",
            "--epochs", "4")
    assert_one_line_error(r, str(run / "last.pt"), "format 1", "new --run")
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, "format 1")
    torch.save({"weights": torch.zeros(3)}, run / "last.pt")  # not BeetNet's at all
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as exc:
        train(smoke_cache, run, smoke.replace(train={"epochs": 4}), **quiet)
    one_line(exc, "not a BeetNet checkpoint")
    assert tree(tmp_path) == before


# --- 4-5: two writers, a changed schedule -----------------------------------------------------

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


def test_attack_resuming_with_more_epochs_says_the_schedule_changes(tmp_path, smoke, smoke_cache):
    from beetnet_utils import with_preset

    cfg = with_preset(smoke, "best").replace(train={"epochs": 2}, model={"refine_steps": 0})
    train(smoke_cache, tmp_path / "run", cfg, **quiet)
    said = []
    train(smoke_cache, tmp_path / "run", cfg.replace(train={"epochs": 3}), progress=False, log=said.append)
    notes = [s for s in said if s.startswith("note:")]
    assert len(notes) == 1 and "training to 2 epochs and now to 3" in notes[0] and "\n" not in notes[0]


# --- 6: NaN and shapes in the Python API ------------------------------------------------------

def test_attack_nan_and_wrong_shapes_are_one_line_errors_not_nan_results(tmp_path, trained, smoke_cache):
    f = smoke_cache.features
    with pytest.raises(BeetNetError) as exc:
        save_wav(np.full(16000, np.nan, np.float32), tmp_path / "x.wav", 16000)
    one_line(exc, "save_wav", "16000 NaN")
    assert not (tmp_path / "x.wav").exists()
    mel = smoke_cache.db("test")[0].copy()
    mel[3, 4] = np.nan
    with pytest.raises(BeetNetError) as exc:
        mel_to_audio(mel, f)
    one_line(exc, "mel_to_audio", "1 NaN")
    run = load_run(trained)
    with pytest.raises(BeetNetError) as exc:
        run.reconstruct(mel)
    one_line(exc, "Run.encode", "1 NaN")
    with pytest.raises(BeetNetError) as exc:
        run.encode(np.zeros((96, 50), np.float32))
    one_line(exc, "Run.encode", "(…, 96, 63)", "(96, 50)")
    with pytest.raises(BeetNetError) as exc:
        run.decode(np.zeros(7, np.float32))
    one_line(exc, "Run.decode", f"(…, {run.config.model.latent_dim})")
    assert run.reconstruct(smoke_cache.db("test")[0]).shape == (96, 63)  # a good clip still works


# --- 7: SIGTERM -------------------------------------------------------------------------------

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


# --- 8-9: checkpoints evaluate cannot read, or only one of -------------------------------------

@pytest.mark.parametrize("damage", ["unknown setting", "no stats"])
def test_attack_evaluate_on_a_checkpoint_of_a_newer_version_is_one_line(tmp_path, trained, smoke_cache, damage):
    run = copy_run(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=False)
        if damage == "unknown setting":
            ckpt["config"]["model"]["attention_heads"] = 4
        else:
            del ckpt["stats"]
        torch.save(ckpt, run / name)
    before = tree(tmp_path)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, "attention_heads" if damage == "unknown setting" else "without stats",
                          "another version of BeetNet")
    r = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--preset", "original",
            "--epochs", "3")
    assert_one_line_error(r)
    assert tree(tmp_path) == before


def test_attack_evaluate_without_best_pt_uses_last_pt_and_says_so(tmp_path, trained, smoke_cache):
    run = copy_run(trained, tmp_path / "run")
    (run / "best.pt").unlink()
    before = tree(tmp_path)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert r.returncode == 0 and "| beetnet |" in r.stdout, r.stderr[-2000:]
    assert "warning: using last.pt (epoch 2) because best.pt is missing" in r.stdout + r.stderr
    assert tree(tmp_path) == before


# --- 10: odd names ----------------------------------------------------------------------------

def test_attack_a_clip_name_that_is_not_utf8_is_a_counted_skip(tmp_path, smoke, smoke_clips):
    clips = tmp_path / "clips"
    shutil.copytree(smoke_clips.path, clips)
    odd = os.fsdecode(b"9001x\xff\xfe_0.wav")
    shutil.copy(next(clips.glob("9001_*.wav")), clips / odd)
    before = tree(clips)
    cache = build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, progress=False, log=lambda m: None)
    assert cache.meta["skipped"] == {"file name is not valid UTF-8": 1}
    assert len(cache.names) == len(list(smoke_clips.path.glob("*.wav")))
    assert tree(clips) == before


def test_attack_long_and_non_latin_recording_names_stay_readable_unique_and_fit(tmp_path, smoke):
    mine = tmp_path / "mine"
    names = ["a" * 251 + ".wav", "a" * 250 + "b.wav", "Лунная соната.wav", "月光の曲.wav", "月光の曲.flac"]
    for i, name in enumerate(names):
        write_wav(mine / name, tone(4.5, freq=220 + 55 * i))
    before = tree(mine)
    folder = download("folder", tmp_path / "clips", smoke, audio_dir=mine, progress=False)
    ids = sorted(folder.recordings)
    assert len(ids) == 5 and "Лунная-соната" in ids and "月光の曲" in ids and "月光の曲-2" in ids
    assert all(len(f"{i}_99.wav".encode()) < 200 for i in ids)
    assert sum(i.startswith("aaaa") for i in ids) == 2  # cut, and still two
    assert tree(mine) == before


# --- 11: the environment ----------------------------------------------------------------------

@pytest.mark.parametrize("name,value,words", [
    ("BEETNET_EPOCHS", "abc", "a whole number of epochs"),
    ("BEETNET_MINUTES", "-5", "a positive number of minutes"),
    ("BEETNET_MINUTES", "soon", "a positive number of minutes"),
    ("BEETNET_PRESET", "bogus", "a preset (original"),
    ("BEETNET_SOURCE", "youtube", "a clip source"),
])
def test_attack_bad_steering_variables_are_one_line_naming_the_variable(tmp_path, name, value, words):
    env = {"BEETNET_HOME": str(tmp_path / "home"), name: value}
    with pytest.raises(BeetNetError) as exc:
        sessions.start("smoke", env)
    one_line(exc, f"{name}={value!r}", words)


@pytest.mark.parametrize("where", ["a file", "under a file", "unwritable"])
def test_attack_beetnet_home_that_cannot_be_a_folder_is_one_line(tmp_path, where):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    home = {"a file": blocker, "under a file": blocker / "home", "unwritable": locked / "home"}[where]
    if where == "unwritable" and os.access(locked, os.W_OK):  # root writes anywhere: make it a read-only place
        home = Path("/proc/beetnet-home")
    before = tree(tmp_path)
    with pytest.raises(BeetNetError) as exc:
        sessions.start("smoke", {"BEETNET_HOME": str(home)})
    one_line(exc, "BEETNET_HOME", str(home), "folder you can write")
    assert tree(tmp_path) == before


# --- 12: empty inputs -------------------------------------------------------------------------

def test_attack_evaluate_of_no_runs_is_one_line(smoke_cache):
    from beetnet_utils import evaluate

    with pytest.raises(BeetNetError) as exc:
        evaluate({}, smoke_cache)
    one_line(exc, "at least one trained run")


# --- 13: permissions --------------------------------------------------------------------------

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


# --- 14: what generate.py draws from (helper A's block) ----------------------------------------

@pytest.fixture(scope="module")
def drawing(trained, smoke_cache):
    """The trained run and the smoke train clips, to sample and interpolate from."""
    return load_run(trained), smoke_cache.db("train")


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -float("inf"), -0.5, "hot"])
def test_attack_a_temperature_that_is_not_a_finite_number_at_least_0_is_one_line(drawing, temperature):
    from beetnet_utils.generate import PRIORS, encode_all, fit_prior, samples

    run, train_db = drawing
    with pytest.raises(BeetNetError) as exc:
        samples({"r": run}, train_db, n=2, temperature=temperature)
    one_line(exc, "temperature", "finite number >= 0", repr(temperature))
    codes = encode_all(run, train_db)
    for name in PRIORS:  # every prior's own sample, which generation_report and the benchmarks call
        with pytest.raises(BeetNetError) as exc:
            fit_prior(name, codes).sample(2, temperature=temperature)
        one_line(exc, "temperature", repr(temperature))


def test_temperature_0_is_the_gaussian_priors_centre_decoded(drawing):
    from beetnet_utils.generate import samples

    run, train_db = drawing
    drawn = samples({"r": run}, train_db, n=3, temperature=0.0)["r"]
    assert drawn.shape == (3, *train_db.shape[1:]) and np.isfinite(drawn).all()
    assert np.allclose(drawn, drawn[0])  # no spread: every sample is the mean code, decoded


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_attack_samples_of_no_negative_or_fractional_count_is_one_line(drawing, n):
    """n=0 is refused, not answered with an empty array: every caller of samples shows or plays what it draws,
    and an empty grid is a matplotlib error two cells later, far from the 0 that caused it."""
    from beetnet_utils.generate import LatentGaussian, samples

    run, train_db = drawing
    with pytest.raises(BeetNetError) as exc:
        samples({"r": run}, train_db, n=n)
    one_line(exc, "n must be a whole number of samples", "at least 1", repr(n))
    with pytest.raises(BeetNetError) as exc:
        LatentGaussian(run, train_db).sample(n)
    one_line(exc, "n must be a whole number of samples", repr(n))


@pytest.mark.parametrize("alphas", [[], [0.0, float("nan")], [float("inf")], "half", 0.5, [[0.0, 1.0]]])
def test_attack_interpolate_without_finite_alphas_is_one_line(drawing, alphas):
    """No alphas is refused too: an interpolation of no points has nothing to show."""
    from beetnet_utils import interpolate
    from beetnet_utils.generate import mix_codes

    run, train_db = drawing
    with pytest.raises(BeetNetError) as exc:
        interpolate(run, train_db[0], train_db[1], alphas)
    one_line(exc, "alphas", "a non-empty list of finite mixing weights")
    with pytest.raises(BeetNetError) as exc:
        mix_codes(run.encode(train_db[0]), run.encode(train_db[1]), alphas, "spherical")
    one_line(exc, "alphas")
    with pytest.raises(BeetNetError) as exc:  # the weights are checked before the clips are encoded
        interpolate(run, np.zeros(3), train_db[1], alphas)
    one_line(exc, "alphas")
    beyond = interpolate(run, train_db[0], train_db[1], np.array([-0.5, 1.5]))  # extrapolation is a finite weight
    assert beyond.shape == (2, *train_db.shape[1:]) and torch.isfinite(beyond).all()


@pytest.mark.parametrize("clips", [0, 1])
def test_attack_a_prior_fitted_to_no_code_or_one_is_one_line(drawing, clips):
    from beetnet_utils.generate import PRIORS, encode_all, fit_prior, samples

    run, train_db = drawing
    codes = encode_all(run, train_db[:clips])
    for name in PRIORS:
        with pytest.raises(BeetNetError) as exc:
            fit_prior(name, codes)
        one_line(exc, f"the {name} prior", "at least 2 train clips", f"not {clips}")
    with pytest.raises(BeetNetError) as exc:
        samples({"r": run}, train_db[:clips], n=2, prior="mixture")
    one_line(exc, "the mixture prior", "at least 2 train clips")
    two = samples({"r": run}, train_db[:2], n=2, prior="mixture")["r"]  # two clips: a distribution, if a thin one
    assert two.shape == (2, *train_db.shape[1:]) and np.isfinite(two).all()


# --- 15: one word, one meaning; the prior notebook 04 shows (helper A's block) -----------------

def test_the_real_clip_is_labelled_real_clip_beside_the_original_preset(drawing, smoke_cache):
    """Issue 24.5: a figure that holds the `original` preset never calls the clip itself "original"."""
    import matplotlib.pyplot as plt

    from beetnet_utils import plots

    run, _ = drawing
    index = int(smoke_cache.indices("test")[0])
    real = smoke_cache.mels[index].astype(np.float32)
    side = plots.presets_side_by_side({"original": run}, smoke_cache, index)
    titles = [ax.get_title() for ax in side.axes]
    l1 = np.abs(run.reconstruct(real).numpy() - real).mean() / run.stats["std"]
    assert titles == [f"real clip {smoke_cache.names[index]}", f"original: L1 {l1:.3f}"]
    trip = plots.triptych(real, run.reconstruct(real).numpy(), "original preset")
    assert [ax.get_title() for ax in trip.axes[:3]] == ["real clip", "reconstruction", "|error|"]
    plt.close("all")


def test_best_prior_is_the_prior_row_of_lowest_accuracy_then_of_lowest_frechet():
    from beetnet_utils.generate import best_prior

    def report(**rows):
        cells = {name.replace("_", " "): {"accuracy": a, "frechet": f} for name, (a, f) in rows.items()}
        return {"realism": {"best": {"rows": cells}}}

    rows = dict(real_halves=(0.1, 0.5), decoder=(0.2, 0.1), floor=(0.3, 0.1), midpoint=(0.4, 0.1))  # not priors
    assert best_prior(report(**rows, prior_gaussian=(0.8, 5.0), prior_mixture=(0.6, 9.0), prior_kde=(0.7, 1.0)),
                      "best") == "mixture"
    assert best_prior(report(prior_gaussian=(None, 5.0), prior_mixture=(None, 9.0), prior_kde=(None, 1.0)),
                      "best") == "kde"  # no accuracy measurable: the Fréchet distance decides
    assert best_prior(report(prior_gaussian=(0.9, 5.0), prior_mixture=(None, 0.1)), "best") == "gaussian"
    assert best_prior(report(prior_kde=(0.5, 1.0)), "original") == "gaussian"  # no rows for this run: the default
    assert best_prior({}, "best", default="mixture") == "mixture"  # a report without realism (too few clips)
