"""The pretrained BeetNet the package ships: the committed file, its checks, and every place it is used."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch

import beetnet_utils as bn
from beetnet_utils import pretrained
from beetnet_utils.cache_build import build_cache
from beetnet_utils.config import PRETRAIN
from beetnet_utils.evaluate import evaluate, metrics, reconstruct_all
from beetnet_utils.pretrained import PRETRAINED_PATH, PRETRAINED_SHA256, load_pretrained
from beetnet_utils.run import ForeignCheckpoint, load_run
from beetnet_utils.session import for_folders
from beetnet_utils.storage import BeetNetError
from beetnet_utils.train import train

from helpers import ROOT, cli

# docs/MODEL_CARD.md: the pretrained model, never trained on the demo data, on the demo profile's test
# recordings (benchmarks/bench_pretrained.py --zero-shot prints it). The tolerance covers the CPU's float sums.
CARD_DEMO_TEST_L1_DB = 4.59
TOLERANCE_DB = 0.05


def test_the_committed_weights_are_the_ones_the_code_names_and_small():
    data = PRETRAINED_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == PRETRAINED_SHA256
    assert len(data) <= 5 * 2**20


def test_the_pretrained_model_loads_offline_and_is_the_pretrain_architecture(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("the network is off")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    run = load_pretrained()
    assert run.pretrained and run.config.model.dec_hidden == PRETRAIN["model"]["dec_hidden"] == 256
    assert run.config.model.dec_layers == 2 and run.config.model.latent_dim == 256
    assert run.config.features == bn.FeatureConfig()  # the specification's mel settings
    z = run.encode(np.zeros(run.config.features.shape, np.float32), refine=False)
    assert z.shape == (256,)


def test_a_corrupted_weights_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "w.pt"
    data = bytearray(PRETRAINED_PATH.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    bad.write_bytes(bytes(data))
    with pytest.raises(BeetNetError, match="not the pretrained BeetNet this version ships") as err:
        load_pretrained(path=bad)
    assert "\n" not in str(err.value)


def test_a_swapped_weights_file_is_refused_even_when_it_is_a_valid_beetnet_run(tmp_path, run):
    swapped = tmp_path / "w.pt"
    shutil.copy(run.path / "best.pt", swapped)  # a real checkpoint, loadable by load_run, but not ours
    with pytest.raises(BeetNetError, match="SHA-256"):
        load_pretrained(path=swapped)


def test_a_file_with_the_right_hash_is_still_read_as_data_never_code(tmp_path):
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    hostile = tmp_path / "w.pt"
    torch.save({"format": pretrained.PRETRAINED_FORMAT, "x": Payload()}, hostile)
    digest = hashlib.sha256(hostile.read_bytes()).hexdigest()
    with pytest.raises(ForeignCheckpoint, match="never loads"):
        load_pretrained(path=hostile, sha256=digest)
    assert not marker.exists()


def test_a_missing_weights_file_says_how_to_restore_it(tmp_path):
    with pytest.raises(BeetNetError, match="git checkout -- beetnet_utils/pretrained"):
        load_pretrained(path=tmp_path / "gone.pt")


def test_a_cache_of_other_mel_settings_is_refused_in_one_line(tmp_path, smoke, smoke_clips):
    other = smoke.features.__class__(n_mels=64)
    cache = build_cache(smoke_clips.path, tmp_path / "cache64", other, smoke.data, progress=False, log=lambda m: None)
    with pytest.raises(BeetNetError, match="n_mels 64 \\(the model's: 96\\)") as err:
        evaluate({"pretrained": load_pretrained()}, cache)
    assert "\n" not in str(err.value)


def test_evaluate_scores_the_pretrained_model_beside_the_baselines_on_any_cache_of_its_settings(smoke_cache):
    report = evaluate({"pretrained": load_pretrained()}, smoke_cache)
    models = report["splits"]["test"]["models"]
    assert {"pretrained", "global_mean", "clip_mean_spectrum"} <= set(models)
    assert models["pretrained"]["l1_db"] < models["global_mean"]["l1_db"]


def test_the_cli_evaluates_the_pretrained_model_by_name(smoke_cache, tmp_path):
    out = tmp_path / "report.json"
    proc = cli("evaluate", "--profile", "smoke", "--pretrained", "--cache", smoke_cache.path, "--json", out,
               timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| pretrained |" in proc.stdout
    assert "pretrained" in json.loads(out.read_text())["splits"]["test"]["models"]
    none = cli("evaluate", "--cache", smoke_cache.path, timeout=600)
    assert none.returncode == 2 and none.stderr.strip() == "error: evaluate needs --run FOLDER, --pretrained, or both"


def _weights_distance(a: dict, b: dict) -> float:
    """Relative L2 distance between two state dicts."""
    num = sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a)
    den = sum(float(b[k].float().pow(2).sum()) for k in b)
    return (num / den) ** 0.5


def test_fine_tuning_starts_from_the_pretrained_weights_and_resumes_from_its_own(tmp_path, smoke_cache,
                                                                                 monkeypatch):
    session = for_folders("smoke", cache=smoke_cache.path)
    cfg = session.settings(init="pretrained", epochs=1)
    assert cfg.model == load_pretrained().config.model and cfg.train.init == "pretrained"
    scratch_cfg = cfg.replace(train={"init": "scratch"})
    tuned = train(smoke_cache, tmp_path / "ft", cfg, progress=False, log=lambda m: None)
    fresh = train(smoke_cache, tmp_path / "fresh", scratch_cfg, progress=False, log=lambda m: None)
    start = load_pretrained().model.state_dict()
    after = load_run(tmp_path / "ft", "last").model.state_dict()
    assert _weights_distance(after, start) < 0.2  # one epoch moved it a little, from there
    assert _weights_distance(load_run(tmp_path / "fresh", "last").model.state_dict(), start) > 0.5
    # its first evaluation is far below a fresh model's, in dB (the two standardise alike: the cache's statistics)
    assert tuned[0]["val_l1_db"] < 0.8 * fresh[0]["val_l1_db"]
    # the rules: statistics re-fitted (the cache's, not the corpus's), and a learning rate of 3e-4, not best's 1e-3
    stats, shipped = load_run(tmp_path / "ft").stats, load_pretrained().stats
    assert (stats["mean"], stats["std"]) == (smoke_cache.mean, smoke_cache.std) != (shipped["mean"], shipped["std"])
    assert tuned[0]["lr"] == pytest.approx(3e-4) and session.settings("best", init="scratch").train.lr == 1e-3

    def gone(*args, **kwargs):
        raise AssertionError("a resumed run read the shipped weights again")

    # resuming continues from the run's own checkpoint
    monkeypatch.setattr(importlib.import_module("beetnet_utils.train"), "load_pretrained", gone)
    again = train(smoke_cache, tmp_path / "ft", cfg.replace(train={"epochs": 2}), progress=False, log=lambda m: None)
    assert [h["epoch"] for h in again] == [1, 2] and again[0] == tuned[0]


def test_fine_tuning_refuses_another_preset_and_a_run_of_another_architecture(tmp_path, smoke_cache):
    session = for_folders("smoke", cache=smoke_cache.path)
    with pytest.raises(BeetNetError, match="fine-tunes the pretrained best"):
        session.settings("original", init="pretrained")
    wrong = session.settings(init="pretrained").replace(model={"dec_hidden": 128})
    with pytest.raises(BeetNetError, match="needs the pretrained model's architecture"):
        train(smoke_cache, tmp_path / "r", wrong, progress=False, log=lambda m: None)
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_with_no_trained_run_a_session_shows_the_pretrained_model_and_says_so(tmp_path, smoke_cache, capsys):
    session = for_folders("smoke", cache=smoke_cache.path, runs=tmp_path / "runs")
    runs = session.load_runs()
    assert list(runs) == ["pretrained"]
    assert "showing the pretrained BeetNet" in capsys.readouterr().out
    with pytest.raises(BeetNetError, match="no trained run"):
        session.load_runs(pretrained=False)


def test_the_model_cards_demo_figure_is_reproduced(demo_cache):
    test = demo_cache.indices("test")
    x = demo_cache.mels[test].astype(np.float32)
    l1_db = metrics(reconstruct_all(load_pretrained(), x), x, 1.0)["l1_db"]
    assert abs(l1_db - CARD_DEMO_TEST_L1_DB) <= TOLERANCE_DB, l1_db
    assert f"{CARD_DEMO_TEST_L1_DB:.2f} dB" in (ROOT / "docs" / "MODEL_CARD.md").read_text()  # the card says it
