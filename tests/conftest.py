"""Shared fixtures: real files in temporary folders, made once per session (once per worker: `make test`
runs two pytest-xdist workers, each with one torch thread, so that they never spin against each other)."""
from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # this worker, and the kernels and commands its tests start

import pytest

from beetnet_utils import build_cache, download, get_config

import helpers


@pytest.fixture
def kaggle_port():
    """Kaggle's test port, 127.0.0.1:7777, for this test alone (helpers.kaggle_port)."""
    with helpers.kaggle_port():
        yield


@pytest.fixture
def offline_kaggle(kaggle_port, monkeypatch, tmp_path):
    """kagglehub pointed at its TEST endpoint (localhost:7777) with nothing listening: no network at all."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kh"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    return tmp_path / "kh"


@pytest.fixture(scope="session")
def smoke():
    return get_config("smoke")


@pytest.fixture(scope="session")
def smoke_clips(tmp_path_factory, smoke):
    return download("demo", tmp_path_factory.mktemp("smoke") / "clips", smoke, progress=False)


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory, smoke, smoke_clips):
    out = tmp_path_factory.mktemp("smoke_cache") / "cache"
    return build_cache(smoke_clips.path, out, smoke.features, smoke.data, progress=False, log=lambda m: None)


@pytest.fixture(scope="session")
def mid():
    """Demo data big enough to learn from in seconds: 10 recordings of 40 s, a 64-wide model."""
    return get_config("smoke").replace(data={"demo_recordings": 10, "demo_seconds": 40.0},
                                       model={"proj_dim": 64, "latent_dim": 64, "dec_hidden": 64},
                                       train={"epochs": 15, "lr": 3e-3, "batch_size": 16})


@pytest.fixture(scope="session")
def mid_cache(tmp_path_factory, mid):
    root = tmp_path_factory.mktemp("mid")
    clips = download("demo", root / "clips", mid, progress=False)
    return build_cache(clips.path, root / "cache", mid.features, mid.data, progress=False, log=lambda m: None)


@pytest.fixture(scope="session")
def run(tmp_path_factory, mid, mid_cache):
    """`mid` trained for 3 epochs, loaded: the run the evaluation and view tests score and drive."""
    from beetnet_utils import load_run, train

    path = tmp_path_factory.mktemp("eval") / "run"
    train(mid_cache, path, mid.replace(train={"epochs": 3}), progress=False, log=lambda m: None)
    return load_run(path)
