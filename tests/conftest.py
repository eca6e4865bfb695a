"""Shared fixtures: real files in temporary folders, made once per session."""
from __future__ import annotations

import pytest

from beetnet_utils import build_cache, download, get_config


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
