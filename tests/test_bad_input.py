"""Bad input is one clear line or a counted skip: never a NaN result, a hang, a traceback or a file written.

Audio: NaN or inf samples, clipping, a constant (DC) signal, silence and near-silence are skipped under
their own reason, float samples beyond ±1 scaled down and counted; only regular files are read (a FIFO
or a broken link named like audio is a counted skip, and never blocks); any file name, however long,
non-Latin or not UTF-8; byte-identical clips under two names; a long recording read a block at a time.
Settings of the wrong type or not finite, another cache's feature settings, a learning rate that
diverges, the `BEETNET_*` variables and `BEETNET_HOME`; and the arrays and numbers given to the Python
API (Run.encode and decode, mel_to_audio, save_wav, load_run, evaluate, samples, interpolate, the priors).
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from beetnet_utils import BeetNetError, build_cache, download, load_run
from beetnet_utils import session as sessions
from beetnet_utils.audio import mel_to_audio, save_wav
from beetnet_utils.features import load_clip
from beetnet_utils.train import train

from helpers import (
    ROOT,
    SR,
    assert_one_line_error,
    cli,
    clip_folder,
    in_thread,
    one_line,
    quiet,
    recordings,
    tone,
    write_wav,
)
from journey import tree

# --- audio: bad samples are counted, never written ------------------------------------------------

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


# --- files and names: only regular files are read, and any name -----------------------------------

def special_files(folder: Path) -> None:
    """Names like a clip that are no file to read: a FIFO (reading it blocks until a writer comes),
    a dangling symlink, a symlink loop, and a folder."""
    os.mkfifo(folder / "500_0.wav")
    (folder / "500_1.wav").symlink_to(folder / "gone.wav")
    (folder / "500_2.wav").symlink_to(folder / "500_3.wav")
    (folder / "500_3.wav").symlink_to(folder / "500_2.wav")
    (folder / "500_4.wav").mkdir()


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


# --- a long recording is read a block at a time ---------------------------------------------------

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

    script = (f"import resource\nfrom beetnet_utils import get_config\nfrom beetnet_utils.sources import from_folder\n"
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

    from beetnet_utils.data import BLOCK_SECONDS
    from beetnet_utils.sources import from_folder

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


# --- settings and the environment -----------------------------------------------------------------

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


def test_a_training_whose_loss_turns_nan_stops_in_one_line_and_writes_no_nan_checkpoint(tmp_path, smoke, smoke_cache):
    """A learning rate of 1e30 (finite, so the settings allow it) blows the weights up in the first epoch."""
    from beetnet_utils import with_preset

    run = tmp_path / "run"
    with pytest.raises(BeetNetError) as exc:
        train(smoke_cache, run, with_preset(smoke, "original").replace(train={"lr": 1e30, "epochs": 2}), **quiet)
    msg = str(exc.value)
    assert "\n" not in msg and "training diverged in epoch 1" in msg and "no checkpoint was written" in msg, msg
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


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


# --- the Python API: arrays and numbers -----------------------------------------------------------

def test_attack_nan_and_wrong_shapes_are_one_line_errors_not_nan_results(tmp_path, trained, smoke_cache):
    f = smoke_cache.features
    with pytest.raises(BeetNetError) as exc:
        save_wav(np.full(16000, np.nan, np.float32), tmp_path / "x.wav", 16000)
    one_line(exc, "save_wav", "16000 NaN")
    assert not (tmp_path / "x.wav").exists()
    mel = smoke_cache.clips("test").db[0].copy()
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
    assert run.reconstruct(smoke_cache.clips("test").db[0]).shape == (96, 63)  # a good clip still works


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


def test_load_run_on_a_cache_or_a_checkpoint_file_says_what_to_pass(trained, smoke_cache):
    for wrong, words in [(smoke_cache.path, "is a mel cache or a clip folder, not a run"),
                         (trained / "best.pt", f"pass the run folder that holds it ({trained})")]:
        with pytest.raises(BeetNetError) as exc:
            load_run(wrong)
        assert words in str(exc.value) and "train first" not in str(exc.value)


def test_attack_evaluate_of_no_runs_is_one_line(smoke_cache):
    from beetnet_utils import evaluate

    with pytest.raises(BeetNetError) as exc:
        evaluate({}, smoke_cache)
    one_line(exc, "at least one trained run")


# --- what generate.py draws from ------------------------------------------------------------------

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
