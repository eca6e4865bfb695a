import argparse
import json

import pytest

from beetnet_utils.cli import parser

from helpers import cli


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_command_has_help_listing_all_its_options(command):
    r = cli(command, "--help")
    assert r.returncode == 0 and "--profile" in r.stdout
    options = [o for a in subcommands()[command]._actions for o in a.option_strings if o.startswith("--")]
    assert options and all(o in r.stdout for o in options), options


def test_choices_come_from_the_registries_that_define_them():
    from beetnet_utils.config import AMP_MODES, PRESETS
    from beetnet_utils.sources import SOURCES

    choices = {a.dest: a.choices for c in subcommands().values() for a in c._actions if a.choices}
    assert list(choices["preset"]) == list(PRESETS) and list(choices["source"]) == list(SOURCES)
    assert list(choices["amp"]) == list(AMP_MODES)


def test_download_then_cache_on_smoke(tmp_path):
    r = cli("download", "--source", "demo", "--out", tmp_path / "clips", "--profile", "smoke")
    assert r.returncode == 0, r.stderr
    assert "clips from 6 recordings" in r.stdout
    r = cli("cache", "--clips", tmp_path / "clips", "--out", tmp_path / "cache", "--profile", "smoke")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["clips"] == sum(s["clips"] for s in summary["splits"].values())
    r = cli("train", "--cache", tmp_path / "cache", "--run", tmp_path / "run", "--profile", "smoke", "--epochs", "1",
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "best val L1" in r.stdout and (tmp_path / "run" / "last.pt").exists()
    r = cli("train", "--cache", tmp_path / "cache", "--run", tmp_path / "run", "--profile", "demo")
    assert r.returncode == 2 and "other settings" in r.stderr and r.stderr.count("\n") == 1


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    r = cli("cache", "--clips", tmp_path / "missing", "--out", tmp_path / "cache")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ")
    r = cli("download", "--source", "folder", "--out", tmp_path / "x")
    assert r.returncode == 2 and "--audio-dir" in r.stderr


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--epochs", "-5"), ("--batch-size", "0"),
                                           ("--minutes", "-1"), ("--minutes", "nan")])
def test_numeric_options_are_validated_before_anything_runs(tmp_path, option, value):
    r = cli("train", "--cache", tmp_path / "no-cache", "--run", tmp_path / "run", option, value)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert option.strip("-").replace("-", " ") in r.stderr and not (tmp_path / "run").exists()


def test_a_run_written_to_a_log_file_has_one_line_per_epoch_and_no_progress_bars(tmp_path, smoke_clips):
    """The README's Kaggle command redirects the CLI to a file: no carriage-return updates there."""
    cache = tmp_path / "cache"
    assert cli("cache", "--profile", "smoke", "--clips", smoke_clips.path, "--out", cache).returncode == 0
    r = cli("train", "--profile", "smoke", "--cache", cache, "--run", tmp_path / "run", "--preset", "original")
    assert r.returncode == 0, r.stderr[-2000:]
    log = r.stdout + r.stderr
    assert "\r" not in log and "it/s" not in log, log[-2000:]
    assert [line.split(":")[0] for line in log.splitlines() if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]
