"""benchmarks/build_corpus.py refuses, in one line and before anything is written, every score and soundfont that
../shared/spec/RESERVED.md keeps for independent checks, and the benchmarks' unseen piano."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import build_corpus  # noqa: E402


def build(*args, tmp_path):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "build_corpus.py"), "--out", str(tmp_path / "out"),
                           *map(str, args)], capture_output=True, text=True, timeout=120)


def soundfont(path, bank_name: str):
    """A file that starts as a soundfont does: RIFF, sfbk, an INFO list with its bank name (INAM)."""
    name = bank_name.encode() + b"\0"
    inam = b"INAM" + len(name).to_bytes(4, "little") + name
    info = b"LIST" + (4 + len(inam)).to_bytes(4, "little") + b"INFO" + inam
    path.write_bytes(b"RIFF" + (4 + len(info)).to_bytes(4, "little") + b"sfbk" + info)
    return path


@pytest.mark.parametrize("score", build_corpus.RESERVED_SCORES)
def test_every_reserved_score_is_refused(score):
    assert "reserved for independent checks" in build_corpus.refusal([], [score])


def test_a_whole_work_that_holds_a_reserved_movement_is_refused_in_one_line(tmp_path):
    proc = build("--piece", "beethoven/opus59no2.mxl", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "build_corpus: beethoven/opus59no2.mxl is reserved for independent checks (RESERVED.md): never rendered here"]
    assert not (tmp_path / "out").exists()
    assert build_corpus.refusal([], ["beethoven/opus59no2/movement1.mxl"]) is None  # its free movements are not


@pytest.mark.parametrize("name", ["MuseScore_General.sf3", "MuseScore_General-Small.sf3",  # reserved: refused
                                  "musescore-general-lossless.sf2"])
def test_musescore_general_is_refused_by_its_file_name(tmp_path, name):
    proc = build("--soundfont", soundfont(tmp_path / name, "Some Bank"), tmp_path=tmp_path)
    assert proc.returncode == 1 and "MuseScore General, reserved" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_musescore_general_is_refused_behind_a_link_and_under_another_name(tmp_path):
    real = soundfont(tmp_path / "MuseScore_General.sf3", "Some Bank")  # reserved: must be refused
    (tmp_path / "piano.sf2").symlink_to(real)
    assert "MuseScore General" in build_corpus.refusal([str(tmp_path / "piano.sf2")], [])
    renamed = soundfont(tmp_path / "grand.sf2", "MuseScore_General")  # reserved, renamed: its bank name tells
    assert "MuseScore General" in build_corpus.refusal([str(renamed)], [])


def test_the_unseen_piano_stays_out_of_the_corpus(tmp_path):
    renamed = soundfont(tmp_path / "piano.sf2", "TimGM6mb1.sf2")
    proc = build("--soundfont", renamed, tmp_path=tmp_path)
    assert proc.returncode == 1 and "TimGM6mb, the benchmarks' unseen piano" in proc.stderr


def test_the_corpus_soundfonts_and_the_rendered_sets_scores_pass():
    assert build_corpus.refusal(list(build_corpus.SOUNDFONTS), [p for p, _, _ in build_corpus.PIECES]) is None
