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
def demo_cache(tmp_path_factory):
    """The demo profile's data, as `make demo` builds it: the pretrained model's card is measured on it."""
    demo = get_config("demo")
    root = tmp_path_factory.mktemp("demo")
    clips = download("demo", root / "clips", demo, progress=False)
    return build_cache(clips.path, root / "cache", demo.features, demo.data, progress=False, log=lambda m: None)


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


@pytest.fixture(scope="session")
def trained(tmp_path_factory, smoke, smoke_cache):
    """A run of two epochs of the original model on the smoke cache, for the attack suite. Never changed in
    place: a test that damages or poisons it works on a copy (helpers.copy_run, shutil.copytree)."""
    from beetnet_utils.train import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(smoke_cache, run, smoke.replace(train={"epochs": 2}), **helpers.quiet)
    return run


@pytest.fixture(scope="module")
def drawing(trained, smoke_cache):
    """The trained run and the smoke train clips, to sample and interpolate from."""
    from beetnet_utils.run import load_run

    return load_run(trained), smoke_cache.clips("train").db
