"""A file from elsewhere is data, never code: hostile checkpoints through every path that loads one.

Each hostile checkpoint is a real BeetNet checkpoint with one extra pickled object whose unpickling would
run a command (the classic `__reduce__` -> `os.system`). The command would create a marker file: every
test asserts the one-line refusal and that the marker never appeared.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from beetnet_utils import BeetNetError, build_cache, load_run, run_summary
from beetnet_utils import session as sessions
from beetnet_utils.run import CHECKPOINT_FORMAT, ForeignCheckpoint, load_checkpoint
from beetnet_utils.train import train

from journey import tree
from test_attacks import assert_one_line_error, cli

quiet = dict(progress=False, log=lambda m: None)
REFUSAL = "objects other than tensors, numbers, strings, lists and dicts"


class Payload:
    """Unpickled, this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke, smoke_cache):
    run = tmp_path_factory.mktemp("safe") / "run"
    train(smoke_cache, run, smoke.replace(train={"epochs": 2}), **quiet)
    return run


def poison(run: Path, marker: Path, names: tuple[str, ...] = ("last.pt", "best.pt")) -> Path:
    """Add a pickled command to each checkpoint of `run`, which otherwise stays a valid one."""
    for name in names:
        ckpt = torch.load(run / name, weights_only=True)
        torch.save(ckpt | {"note": Payload(marker)}, run / name)
    return run


def hostile(trained: Path, tmp_path: Path, names: tuple[str, ...] = ("last.pt", "best.pt")) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    return poison(shutil.copytree(trained, tmp_path / "run"), marker, names), marker


def test_the_payload_does_run_when_unpickled_unsafely(tmp_path, trained):
    """The attack is real: loading the same file the old way runs the command."""
    run, marker = hostile(trained, tmp_path)
    torch.load(run / "last.pt", weights_only=False)
    assert marker.exists()


def test_checkpoints_hold_plain_data_only_and_load_with_the_safe_unpickler(trained):
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(trained / name, weights_only=True)
        assert ckpt["format"] == CHECKPOINT_FORMAT and isinstance(ckpt["config"], dict)
        assert all(torch.is_tensor(v) for v in ckpt["rng"]["augment"].values())
        assert torch.is_tensor(ckpt["rng"]["torch"])


@pytest.mark.parametrize("names", [("last.pt", "best.pt"), ("best.pt",), ("last.pt",)])
def test_hostile_checkpoint_through_the_api_is_refused_in_one_line_and_never_runs(tmp_path, trained, names):
    run, marker = hostile(trained, tmp_path, names)
    before = tree(tmp_path)
    poisoned = [n.removesuffix(".pt") for n in names]
    loads = [*(lambda w=w: load_run(run, w) for w in poisoned),
             *(lambda w=w: load_checkpoint(run, w) for w in poisoned),
             *([lambda: run_summary(run)] if "last" in poisoned else [])]
    for load in loads:  # never skipped for the other checkpoint: a hostile file is refused, not worked around
        with pytest.raises(ForeignCheckpoint) as exc:
            load()
        msg = str(exc.value)
        assert "\n" not in msg and REFUSAL in msg and "delete it" in msg, msg
    assert not marker.exists()
    assert tree(tmp_path) == before


def test_hostile_checkpoint_through_the_cli_evaluate_and_resume_is_refused_and_never_runs(tmp_path, trained,
                                                                                           smoke_cache):
    run, marker = hostile(trained, tmp_path)
    before = tree(tmp_path)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, REFUSAL)
    r = cli("train", "--cache", smoke_cache.path, "--run", run, "--profile", "smoke", "--preset", "original",
            "--epochs", "4")
    assert_one_line_error(r, REFUSAL, str(run / "last.pt"))
    assert not marker.exists()
    assert tree(tmp_path) == before


def test_hostile_run_attached_in_kaggle_is_refused_when_loaded_and_never_runs(tmp_path, trained, smoke_cache,
                                                                             monkeypatch):
    """Kaggle: start() copies an attached earlier version's run into working/; the next load refuses it."""
    kaggle = tmp_path / "kaggle"
    for d in ("working", "temp", "input"):
        (kaggle / d).mkdir(parents=True)
    marker = tmp_path / "PWNED"
    poison(shutil.copytree(trained, kaggle / "input" / "shared-model" / "runs" / "smoke-original"), marker)
    shutil.copytree(smoke_cache.path, kaggle / "temp" / "beetnet" / "cache")
    environ = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "BEETNET_KAGGLE_ROOT": str(kaggle),
               "BEETNET_PROFILE": "smoke"}
    monkeypatch.chdir(tmp_path)
    session = sessions.start(environ=environ)
    adopted = session.paths.runs / "smoke-original"
    assert (adopted / "last.pt").is_file()  # copied as data: copying runs nothing
    with pytest.raises(BeetNetError) as exc:
        session.load_runs()
    assert REFUSAL in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(BeetNetError):
        session.train("original")  # resuming it
    assert not marker.exists()


def test_a_run_saved_before_plain_checkpoints_is_refused_in_one_line(tmp_path, trained, smoke_cache):
    run = shutil.copytree(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        torch.save(ckpt | {"format": CHECKPOINT_FORMAT - 1}, run / name)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, f"format {CHECKPOINT_FORMAT - 1}", "another version of BeetNet")


# --- data loss: no file of the user's overwritten, no link followed --------------------------------

def test_a_symlink_where_the_run_lock_goes_is_refused_and_its_target_kept(tmp_path, smoke, smoke_cache):
    mine = tmp_path / "thesis.txt"
    mine.write_text("years of work")
    (tmp_path / ".run.lock").symlink_to(mine)
    with pytest.raises(BeetNetError) as exc:
        train(smoke_cache, tmp_path / "run", smoke, **quiet)
    assert "symbolic link" in str(exc.value) and "\n" not in str(exc.value)
    assert mine.read_text() == "years of work"


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


@pytest.mark.parametrize("damage", ["truncated", "empty", "one file"])
def test_a_damaged_cache_copy_on_drive_is_ignored_with_a_warning(tmp_path, smoke_cache, damage, capsys):
    import tarfile

    from beetnet_utils import runtime

    archive = runtime.backup_cache(smoke_cache.path, tmp_path / "drive" / "cache.tar")
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 3])
    elif damage == "empty":
        archive.write_bytes(b"")
    else:
        (tmp_path / "x.txt").write_text("one file")
        with tarfile.open(archive, "w") as tar:
            tar.add(tmp_path / "x.txt", arcname="x.txt")
    local = tmp_path / "local" / "cache"
    assert runtime.restore_cache(archive, local) is False
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "is damaged" in said and "built again" in said
    assert not local.exists() and sorted(p.name for p in local.parent.iterdir()) == []


def test_evaluate_clips_whose_derived_cache_is_the_training_cache_is_refused(tmp_path, trained, smoke, smoke_clips):
    """--clips X caches X's clips at <cache parent>/eval_<X's name>: never over --cache itself."""
    cache = build_cache_quiet(smoke_clips.path, tmp_path / "eval_new", smoke)
    other = shutil.copytree(smoke_clips.path, tmp_path / "elsewhere" / "new")
    before = tree(tmp_path)
    r = cli("evaluate", "--run", trained, "--cache", cache.path, "--clips", other, "--profile", "smoke")
    assert_one_line_error(r, "is the input folder itself")
    assert tree(tmp_path) == before


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


def build_cache_quiet(clips, out, cfg):
    from beetnet_utils import build_cache

    return build_cache(clips, out, cfg.features, cfg.data, **quiet)


# --- silent wrong: readers hold what they read ---------------------------------------------------

def test_a_cache_cannot_be_rebuilt_while_a_training_reads_it(tmp_path, smoke_clips, smoke):
    import signal
    import subprocess
    import sys
    import time

    from test_attacks import ROOT

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
    import subprocess
    import sys

    from test_attacks import ROOT

    clips = shutil.copytree(smoke_clips.path, tmp_path / "clips")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom beetnet_utils.storage import writer_lock\n"
                               f"with writer_lock({str(clips)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BeetNetError) as exc:
            build_cache_quiet(clips, tmp_path / "cache", smoke)
        assert f"being written by process {holder.pid}" in str(exc.value)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "cache").exists()


# --- silent wrong: meta.json is checked, settings are checked ------------------------------------

@pytest.mark.parametrize("edit, words", [
    (lambda m: m["stats"].update(std=float("nan")), "changed after the cache was built"),
    (lambda m: m["stats"].update(std=-16.9), "changed after the cache was built"),
    (lambda m: m["features"].update(n_fft=1024), "changed after the cache was built"),
    (lambda m: m.pop("stats"), "changed after the cache was built"),
])
def test_an_edited_meta_json_is_refused_by_load_and_rebuilt_by_build(tmp_path, smoke_cache, smoke, smoke_clips, edit,
                                                                      words):
    import json

    from beetnet_utils import load_cache

    cache = shutil.copytree(smoke_cache.path, tmp_path / "cache")
    meta = json.loads((cache / "meta.json").read_text())
    edit(meta)
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BeetNetError) as exc:
        load_cache(cache)
    assert words in str(exc.value) and "\n" not in str(exc.value)
    said = []
    rebuilt = build_cache(smoke_clips.path, cache, smoke.features, smoke.data, progress=False, log=said.append)
    assert words in said[0] and rebuilt.std == smoke_cache.std and rebuilt.meta["features"]["n_fft"] == 2048


@pytest.mark.parametrize("stats, words", [
    ({"mean": 8.0, "std": 0.0}, "positive std"), ({"mean": 8.0, "std": "16"}, "positive std"),
    ({"mean": 8.0, "std": float("nan")}, "positive std"), ({"mean": 8.0}, "incomplete or invalid"),
])
def test_a_meta_json_with_its_checksum_remade_is_still_validated(tmp_path, smoke_cache, stats, words):
    """Someone who recomputes the checksum still cannot hand in a statistic that is not a finite std > 0."""
    import json

    from beetnet_utils import load_cache
    from beetnet_utils.features import meta_digest

    cache = shutil.copytree(smoke_cache.path, tmp_path / "cache")
    meta = json.loads((cache / "meta.json").read_text()) | {"stats": stats}
    meta["meta_hash"] = meta_digest(meta)
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BeetNetError) as exc:
        load_cache(cache)
    assert words in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("change, words", [
    ({"features": {"db_min": -50.0}}, "db_min -40.0 in the cache, -50.0 in the settings"),
    ({"features": {"n_mels": 64}}, "n_mels 96 in the cache, 64 in the settings"),
    ({"features": {"hop_length": 256}}, "hop_length 512 in the cache, 256 in the settings"),
])
def test_train_refuses_settings_whose_features_are_not_the_caches(tmp_path, smoke, smoke_cache, change, words):
    settings = tmp_path / "settings.json"
    settings.write_text(smoke.replace(**change).to_json())
    r = cli("train", "--cache", smoke_cache.path, "--run", tmp_path / "run", "--settings", settings)
    assert_one_line_error(r, "other feature settings", words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section, field, value", [
    ("train", "grad_clip", float("nan")), ("train", "flux_weight", float("inf")), ("train", "epochs", 1.5),
    ("train", "lr", "0.001"), ("features", "hop_length", 0), ("features", "n_mels", 0),
    ("features", "sample_rate", 0), ("train", "betas", [0.5]), ("model", "latent_dim", True),
])
def test_settings_of_the_wrong_type_or_not_finite_are_one_line_naming_them(tmp_path, smoke, smoke_cache, section,
                                                                           field, value):
    import json

    d = smoke.to_dict()
    d[section][field] = value
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(d))
    r = cli("train", "--cache", smoke_cache.path, "--run", tmp_path / "run", "--settings", settings)
    assert_one_line_error(r, field)
    assert not (tmp_path / "run").exists()


def test_byte_identical_clips_under_two_recordings_never_straddle_train_and_test(tmp_path, smoke, smoke_clips):
    import numpy as np

    clips = shutil.copytree(smoke_clips.path, tmp_path / "clips", ignore=shutil.ignore_patterns("*.json"))
    recs = sorted({p.name.rsplit("_", 1)[0] for p in clips.glob("*.wav")})
    copies = 0
    for rec in recs:  # every recording also under another name: whatever the split, a pair could straddle it
        for p in sorted(clips.glob(f"{rec}_*.wav")):
            shutil.copyfile(p, clips / f"copy{rec}_{p.name.rsplit('_', 1)[1]}")
            copies += 1
    said = []
    cache = build_cache(clips, tmp_path / "cache", smoke.features, smoke.data, progress=False, log=said.append)
    split_of = dict(zip(cache.recordings, cache.splits))
    assert all(split_of[rec] == split_of[f"copy{rec}"] for rec in recs)
    assert cache.meta["shared_clips"]["copies"] == copies and cache.summary()["shared_clips"] == copies
    assert any(f"{copies} clip(s) are byte-identical" in line for line in said)
    assert len(set(np.unique(cache.splits))) == 3


def test_near_silence_of_dither_is_skipped_not_blown_up_to_full_scale(tmp_path, smoke):
    import numpy as np

    from beetnet_utils.features import load_clip

    from helpers import write_wav

    lsb = np.random.default_rng(0).choice([-1, 1], 32000).astype(np.float32) / 32768
    wav, reason, _ = load_clip(write_wav(tmp_path / "1_0.wav", lsb), smoke.features)
    assert wav is None and reason == "near-silent (peak below -60 dBFS)"
    quiet_note = np.sin(np.arange(32000) / 10).astype(np.float32) * 2e-3  # -54 dBFS: quiet, but music
    wav, reason, _ = load_clip(write_wav(tmp_path / "1_1.wav", quiet_note, subtype="FLOAT"), smoke.features)
    assert reason is None and float(wav.abs().max()) == 1.0


# --- a model's inputs ---------------------------------------------------------------------------

def test_encode_and_decode_refuse_what_no_spectrogram_or_code_is_made_of(trained):
    import numpy as np

    run = load_run(trained)
    mel = np.full((96, 63), 10.0)
    assert run.encode(mel).shape == (run.config.model.latent_dim,)
    for bad, words in [(np.full((96, 63), 1e39), "NaN or infinite"),
                       (mel.astype(np.complex64), "real numbers"), (mel > 0, "real numbers"),
                       (np.zeros((0, 96, 63)), "empty array"), (np.zeros((2, 1, 96, 63)), "one, or a batch")]:
        with pytest.raises(BeetNetError) as exc:
            run.encode(bad)
        assert words in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
    with pytest.raises(BeetNetError, match="NaN or infinite"):
        run.decode(np.full(run.config.model.latent_dim, 1e300))


def test_mel_to_audio_refuses_no_iterations_a_config_and_a_rate_of_zero(smoke):
    import numpy as np

    from beetnet_utils import FeatureConfig, mel_to_audio

    mel = np.zeros((96, 63))
    for call, words in [(lambda: mel_to_audio(mel, smoke.features, n_iter=0), "n_iter"),
                        (lambda: mel_to_audio(mel, smoke), "feature settings (config.features), not Config"),
                        (lambda: FeatureConfig(sample_rate=0), "sample_rate must be above 0")]:
        with pytest.raises(ValueError) as exc:
            call()
        assert words in str(exc.value)


def test_a_run_trained_to_nan_is_refused_as_diverged_not_blamed_on_the_input(tmp_path, trained, smoke_cache):
    run = shutil.copytree(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        next(iter(ckpt["model"].values())).fill_(float("nan"))
        torch.save(ckpt, run / name)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, "not finite", "diverged")


def test_load_run_on_a_cache_or_a_checkpoint_file_says_what_to_pass(trained, smoke_cache):
    for wrong, words in [(smoke_cache.path, "is a mel cache or a clip folder, not a run"),
                         (trained / "best.pt", f"pass the run folder that holds it ({trained})")]:
        with pytest.raises(BeetNetError) as exc:
            load_run(wrong)
        assert words in str(exc.value) and "train first" not in str(exc.value)


# --- memory: a long recording is read a block at a time ------------------------------------------

def long_recording(path: Path, minutes: float, sr: int = 22050, channels: int = 1) -> Path:
    """A recording of `minutes` of changing tones, written a minute at a time (never whole in memory)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16") as f:
        for m in range(math.ceil(minutes)):
            n = int(sr * 60 * min(1.0, minutes - m))
            t = np.arange(n) / sr
            x = 0.3 * np.sin(2 * np.pi * (220 + 40 * m) * t) * (1 + 0.5 * np.sin(t)) + 0.01 * rng.standard_normal(n)
            f.write(np.repeat(x[:, None], channels, axis=1).astype(np.float32))
    return path


def peak_memory_of_cutting(recording: Path, out: Path) -> int:
    """ru_maxrss (kB) of a process that cuts `recording` into clips, as `download --source folder` does."""
    import subprocess
    import sys

    from test_attacks import ROOT

    script = (f"import resource\nfrom beetnet_utils import get_config\nfrom beetnet_utils.data import from_folder\n"
              f"c = from_folder({str(recording.parent)!r}, {str(out)!r}, get_config('smoke').features,"
              f" progress=False)\n"
              f"print(c.clips, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    clips, kb = map(int, r.stdout.split()[-2:])
    return clips, kb


def test_a_long_recording_is_cut_in_flat_memory(tmp_path):
    short = long_recording((tmp_path / "a").mkdir() or tmp_path / "a" / "short.wav", 2)
    long = long_recording((tmp_path / "b").mkdir() or tmp_path / "b" / "long.wav", 20)
    (n_short, kb_short), (n_long, kb_long) = (peak_memory_of_cutting(short, tmp_path / "out_a"),
                                              peak_memory_of_cutting(long, tmp_path / "out_b"))
    assert (n_short, n_long) == (60, 600)
    # whole, 20 minutes at 22.05 kHz are 106 MB as float32, and resampling holds two more copies
    assert kb_long - kb_short < 40_000, (kb_short, kb_long)


def test_clips_cut_a_block_at_a_time_are_the_clips_of_the_whole_recording(tmp_path, smoke):
    import numpy as np
    import soundfile as sf
    import torchaudio.functional as AF

    from beetnet_utils.data import BLOCK_SECONDS, from_folder

    rec = long_recording((tmp_path / "in").mkdir() or tmp_path / "in" / "take.wav", 1.2, sr=44100, channels=2)
    assert 1.2 * 60 > 2 * BLOCK_SECONDS  # the recording spans block boundaries
    out = from_folder(tmp_path / "in", tmp_path / "clips", smoke.features, progress=False)
    whole, sr = sf.read(rec, dtype="float32")
    mono = AF.resample(torch.from_numpy(np.ascontiguousarray(whole.mean(axis=1))), sr, 16000).numpy()
    n = smoke.features.clip_samples
    assert out.clips == len(mono) // n == 36
    for k in (0, 14, 15, 35):  # clips 14-15 straddle the first block's end (30 s)
        got, _ = sf.read(tmp_path / "clips" / f"take_{k}.wav", dtype="float32")
        expected = np.clip(mono[k * n:(k + 1) * n], -1, 1)
        assert np.abs(got - expected).max() <= 2 / 32768  # equal, to 16-bit rounding


def test_a_valid_cache_in_a_read_only_folder_is_reused_and_a_stale_one_is_one_line(tmp_path, smoke_cache, smoke_clips):
    """As a user who cannot write there: root without the capability to override file modes (root writes
    everywhere otherwise). No lock can be made, and nothing needs writing, so the cache is used as it is."""
    import subprocess
    import sys

    from test_attacks import ROOT

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


# --- added by the breakage check: a lock link refused at once, and plain data only -----------------

def test_a_symlink_where_a_cache_builds_locks_go_is_refused_at_once_never_spun_on(tmp_path, smoke_clips):
    """A link planted at the writer's lock (beside --out) or the reader's (beside --clips) is refused in
    one line within seconds: opened through the link, the lock's inode check would retry forever."""
    import subprocess
    import sys

    from test_attacks import ROOT

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


@pytest.mark.parametrize("extra", [{1, 2}, b"\x00bytes", torch.float32, torch.device("cpu")],
                         ids=["set", "bytes", "dtype", "device"])
def test_a_checkpoint_the_safe_unpickler_reads_but_not_of_plain_data_is_refused(tmp_path, trained, extra):
    """torch's weights_only unpickler also builds sets, bytes, dtypes and devices: a checkpoint holding one
    is refused in one line all the same, never loaded."""
    run = shutil.copytree(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        torch.save(ckpt | {"note": extra}, run / name)
    assert isinstance(torch.load(run / "last.pt", weights_only=True)["note"], type(extra))  # it does unpickle
    before = tree(tmp_path)
    for load in (lambda: load_run(run), lambda: load_checkpoint(run, "last"), lambda: run_summary(run)):
        with pytest.raises(ForeignCheckpoint) as exc:
            load()
        assert REFUSAL in str(exc.value) and "delete it" in str(exc.value) and "\n" not in str(exc.value)
    assert tree(tmp_path) == before


def test_hostile_run_on_drive_is_refused_when_notebook_04_loads_it(tmp_path, trained, smoke):
    """Colab: runs live on Drive (a run folder someone shared there); notebook 04's load refuses it."""
    from beetnet_utils.runtime import Environment, paths

    env = Environment(in_colab=True, gpu_name=None, content_root=tmp_path / "content")
    where = paths(env, drive_root=tmp_path / "drive" / "MyDrive" / "beetnet")
    assert where.runs == tmp_path / "drive" / "MyDrive" / "beetnet" / "runs"
    marker = tmp_path / "PWNED"
    poison(shutil.copytree(trained, where.runs / "smoke-original"), marker)
    session = sessions.Session(env, where, smoke)
    with pytest.raises(BeetNetError) as exc:
        session.load_runs()
    assert REFUSAL in str(exc.value) and "\n" not in str(exc.value)
    assert not marker.exists()


def test_a_training_whose_loss_turns_nan_stops_in_one_line_and_writes_no_nan_checkpoint(tmp_path, smoke, smoke_cache):
    """A learning rate of 1e30 (finite, so the settings allow it) blows the weights up in the first epoch."""
    from beetnet_utils import with_preset

    run = tmp_path / "run"
    with pytest.raises(BeetNetError) as exc:
        train(smoke_cache, run, with_preset(smoke, "original").replace(train={"lr": 1e30, "epochs": 2}), **quiet)
    msg = str(exc.value)
    assert "\n" not in msg and "training diverged in epoch 1" in msg and "no checkpoint was written" in msg, msg
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()
