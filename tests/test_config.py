import json
import subprocess
import sys
from pathlib import Path

import pytest

from beetnet_utils import PROFILES, Config, get_config, with_preset
from beetnet_utils.config import LocalConfig
from beetnet_utils.run import config_differences


def test_full_profile_is_the_specification():
    c = get_config("full")
    f, m, t = c.features, c.model, c.train
    assert (f.sample_rate, f.clip_seconds, f.n_fft, f.hop_length, f.n_mels, f.power) == (16000, 2.0, 2048, 512, 96, 1.0)
    assert (f.db_min, f.db_max, f.silence_threshold) == (-40.0, 60.0, 1e-3)
    assert (f.n_mels, f.n_frames) == (96, 63)
    assert (m.proj_dim, m.latent_dim, m.dec_hidden, m.enc_layers, m.dec_layers, m.bidirectional) == (
        256, 256, 256, 2, 2, True)
    assert (t.batch_size, t.epochs, t.lr, t.betas, t.grad_clip) == (32, 50, 1e-3, (0.5, 0.999), 1.0)


def test_profiles_share_features_so_one_cache_serves_all():
    assert len({p.features for p in PROFILES.values()}) == 1
    assert set(PROFILES) == {"full", "demo", "smoke"}


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("BEETNET_PROFILE", "smoke")
    assert get_config().profile == "smoke"
    assert get_config("demo").profile == "demo"  # an argument wins
    monkeypatch.delenv("BEETNET_PROFILE")
    assert get_config().profile == "full"


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown profile 'tiny'.*full, demo, smoke"):
        get_config("tiny")


@pytest.mark.parametrize("name", list(PROFILES))
def test_json_round_trip(name):
    c = get_config(name)
    back = Config.from_json(c.to_json())
    assert back == c and back.hash() == c.hash()
    assert json.loads(c.to_json())["profile"] == name


def test_hash_is_stable_across_processes_and_sensitive_to_every_change():
    here = get_config("full").hash()
    script = "from beetnet_utils import get_config; print(get_config('full').hash())"
    there = subprocess.run([sys.executable, "-c", script],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]).stdout.strip()
    assert here == there
    c = get_config("full")
    assert c.replace(features={"n_mels": 64}).hash() != here
    assert c.replace(train={"lr": 2e-3}).hash() != here
    assert c.replace(model={"bidirectional": False}).hash() != here


def test_an_architectures_own_fields_travel_with_it():
    """`local`'s fields are a section of their own (model.local): only that architecture has them, JSON and
    `replace` give them as a dict, and a saved run that predates one of them resumes with its default."""
    best = with_preset(get_config("full"), "best")
    assert best.model.local == LocalConfig(envelope_dims=32, channels=28, kernel=24)
    assert with_preset(best, "original").model.local is None and get_config("full").model.local is None
    assert Config.from_json(best.to_json()) == best
    assert best.replace(model={"local": {"channels": 56}}).model.local == LocalConfig(channels=56)
    with pytest.raises(ValueError, match=r"unknown settings local.width \(from a newer version\?\)"):
        best.replace(model={"local": {"width": 3}})
    with pytest.raises(ValueError, match=r"the local architecture takes its fields in model.local"):
        best.replace(model={"local": None})
    with pytest.raises(ValueError, match=r"no other architecture has them"):
        get_config("full").replace(model={"local": {}})
    with pytest.raises(ValueError, match=r"setting channels must be above 0"):
        LocalConfig(channels=0)
    saved = best.to_dict()
    del saved["model"]["local"]["kernel"]
    assert config_differences(saved, best.to_dict()) == []
    wider = best.replace(model={"local": {"kernel": 12}}).to_dict()
    assert config_differences(saved, wider) == ["model.local.kernel 24 -> 12"]
