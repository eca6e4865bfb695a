import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "beetnet_utils", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, **kw)


@pytest.mark.parametrize("command, option", [("download", "--out"), ("cache", "--out"), ("train", "--minutes")])
def test_every_command_has_help(command, option):
    r = cli(command, "--help")
    assert r.returncode == 0 and option in r.stdout and "--profile" in r.stdout


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
