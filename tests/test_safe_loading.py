"""What BeetNet reads is checked before it is used, and a file from elsewhere is data, never code.

Hostile checkpoints: each is a real BeetNet checkpoint with one extra pickled object whose unpickling
would run a command (the classic `__reduce__` -> `os.system`) that creates a marker file; every path
that loads one (the API, the CLI, resume, a run attached in Kaggle or shared on Drive) refuses it in one
line, and the marker never appears. Checkpoints of another version, or whose weights are not finite,
are refused in one line. Caches are keyed on their clips' content, and a damaged or edited cache (its
files, its meta.json) is rebuilt with the reason, refused by a reader, never trusted; a damaged copy on
Drive is set aside.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from beetnet_utils import BeetNetError, build_cache, download, load_cache, load_run, run_summary
from beetnet_utils import session as sessions
from beetnet_utils.run import CHECKPOINT_FORMAT, ForeignCheckpoint, load_checkpoint
from beetnet_utils.train import train

from helpers import (
    NEW_FOLDER,
    assert_one_line_error,
    cli,
    clip_folder,
    copy_run,
    one_line,
    quiet,
    recordings,
    tone,
    write_wav,
)
from journey import tree

REFUSAL = "objects other than tensors, numbers, strings, lists and dicts"


# --- hostile checkpoints: data, never code --------------------------------------------------------

class Payload:
    """Unpickled, this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


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


# --- checkpoints of another version, or that cannot be used ---------------------------------------

def test_a_run_saved_before_plain_checkpoints_is_refused_in_one_line(tmp_path, trained, smoke_cache):
    run = shutil.copytree(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        torch.save(ckpt | {"format": CHECKPOINT_FORMAT - 1}, run / name)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, f"format {CHECKPOINT_FORMAT - 1}", "another version of BeetNet")


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


def test_a_run_trained_to_nan_is_refused_as_diverged_not_blamed_on_the_input(tmp_path, trained, smoke_cache):
    run = shutil.copytree(trained, tmp_path / "run")
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        next(iter(ckpt["model"].values())).fill_(float("nan"))
        torch.save(ckpt, run / name)
    r = cli("evaluate", "--run", run, "--cache", smoke_cache.path, "--profile", "smoke")
    assert_one_line_error(r, "not finite", "diverged")


def test_attack_resuming_with_more_epochs_says_the_schedule_changes(tmp_path, smoke, smoke_cache):
    from beetnet_utils import with_preset

    cfg = with_preset(smoke, "best").replace(train={"epochs": 2}, model={"refine_steps": 0})
    train(smoke_cache, tmp_path / "run", cfg, **quiet)
    said = []
    train(smoke_cache, tmp_path / "run", cfg.replace(train={"epochs": 3}), progress=False, log=said.append)
    notes = [s for s in said if s.startswith("note:")]
    assert len(notes) == 1 and "training to 2 epochs and now to 3" in notes[0] and "\n" not in notes[0]


# --- caches: content, not size; damage rebuilt with the reason or refused, never trusted ----------

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


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["stats"].update(std=float("nan")), "changed after the cache was built"),
    (lambda m: m["stats"].update(std=-16.9), "changed after the cache was built"),
    (lambda m: m["features"].update(n_fft=1024), "changed after the cache was built"),
    (lambda m: m["features"].update(db_min=-60.0), "changed after the cache was built"),
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
    from beetnet_utils.cache import meta_digest

    cache = shutil.copytree(smoke_cache.path, tmp_path / "cache")
    meta = json.loads((cache / "meta.json").read_text()) | {"stats": stats}
    meta["meta_hash"] = meta_digest(meta)
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(BeetNetError) as exc:
        load_cache(cache)
    assert words in str(exc.value) and "\n" not in str(exc.value)


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
