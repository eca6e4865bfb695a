"""Every source yields the Kaggle layout; kagglehub runs for real against local stand-ins."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beetnet_utils import BeetNetError, download, get_config, list_clips
from beetnet_utils.data import parse_clip_name
from beetnet_utils.sources import from_kaggle, from_musicnet

from helpers import SR, kaggle_cache, tone, write_wav


def assert_kaggle_layout(folder: Path, min_clips: int = 1) -> list[Path]:
    clips = list_clips(folder)
    assert len(clips) >= min_clips
    for p in clips:
        parse_clip_name(p.name)
        info = sf.info(p)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, 2 * SR, "PCM_16"), p
    return clips


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_clips(folder)}


def test_demo_is_deterministic_and_in_the_kaggle_layout(tmp_path, smoke, smoke_clips):
    clips = assert_kaggle_layout(smoke_clips.path, min_clips=40)
    assert len(smoke_clips.recordings) == smoke.data.demo_recordings
    again = download("demo", tmp_path / "again", smoke, progress=False)
    assert digest(again.path) == digest(smoke_clips.path)
    # the clips are music, not silence or noise: most energy sits below 4 kHz
    x, _ = sf.read(clips[3])
    spec = np.abs(np.fft.rfft(x)) ** 2
    assert spec[: len(spec) // 2].sum() > 0.95 * spec.sum() and np.abs(x).max() > 0.1


def test_demo_folder_is_reused_when_asked_again(smoke, smoke_clips):
    before = {p.name: p.stat().st_mtime_ns for p in list_clips(smoke_clips.path)}
    download("demo", smoke_clips.path, smoke, progress=False)
    assert before == {p.name: p.stat().st_mtime_ns for p in list_clips(smoke_clips.path)}


def test_full_demo_profile_size():
    d = get_config("demo").data
    assert d.demo_recordings >= 10 and 1000 <= d.demo_recordings * d.demo_seconds / 2 <= 2000


def test_folder_source_takes_any_format_rate_and_channel_count(tmp_path, smoke):
    src = tmp_path / "mine"
    write_wav(src / "sonata take 1.wav", tone(5.3, 44100, channels=2), 44100)
    write_wav(src / "nested" / "etude.flac", tone(4.2, 22050), 22050)
    write_wav(src / "waltz.ogg", tone(6.0, 48000), 48000, subtype="VORBIS")
    write_wav(src / "rondo.mp3", tone(4.5, 44100), 44100, subtype="MPEG_LAYER_III")
    write_wav(src / "tiny.wav", tone(1.0))
    (src / "notes.wav").write_text("this is not audio")
    out = download("folder", tmp_path / "clips", smoke, audio_dir=src)
    assert_kaggle_layout(out.path)
    assert out.recordings == {"sonata-take-1": 2, "etude": 2, "waltz": 3, "rondo": 2}
    assert out.skipped == {"unreadable (corrupt or not audio)": 1, "shorter than one clip": 1}


def test_empty_folder_and_missing_audio_dir_are_one_line_errors(tmp_path, smoke):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BeetNetError, match="no audio files") as e:
        download("folder", tmp_path / "out", smoke, audio_dir=tmp_path / "empty")
    assert "\n" not in str(e.value)
    with pytest.raises(BeetNetError, match="needs --audio-dir"):
        download("folder", tmp_path / "out", smoke)
    assert not (tmp_path / "out").exists()  # a failed build leaves nothing half-made


# --- Kaggle, for real, against local stand-ins ------------------------------------------------

def test_kaggle_source_reads_a_prefilled_cache_without_network_or_writing_to_it(offline_kaggle, tmp_path, smoke):
    files = kaggle_cache(offline_kaggle, "alexzyukov", "beethoven", 1)
    for rec, n in [("2614", 3), ("2303", 2)]:
        for k in range(n):
            write_wav(files / "beethoven" / f"{rec}_{k}.wav", tone(2.0, freq=200 + 30 * k))
    (files / "dataset-metadata.json").write_text("{}")
    # Colab and Kaggle may mount it read-only; permissions prove nothing for root, so check that no file
    # there is added, removed or touched
    before = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in offline_kaggle.rglob("*"))
    out = download("kaggle", tmp_path / "clips", smoke)
    assert out.recordings == {"2303": 2, "2614": 3}
    assert_kaggle_layout(out.path)
    assert before == sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in offline_kaggle.rglob("*"))


def test_offline_kaggle_is_a_one_line_error_that_suggests_alternatives(offline_kaggle, tmp_path, smoke):
    with pytest.raises(BeetNetError) as e:
        download("kaggle", tmp_path / "clips", smoke)
    msg = str(e.value)
    assert "unreachable" in msg and "--source demo" in msg and "--source folder" in msg and "\n" not in msg


class FakeKaggle(http.server.BaseHTTPRequestHandler):
    """What kagglesdk's TEST environment talks to: GetDataset, then DownloadDataset returning a zip."""

    zip_bytes = b""
    status = 200
    seen: list[str] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.seen.append(self.path.rsplit("/", 1)[-1])
        if self.status != 200:
            self._send(self.status, "application/json", json.dumps({"code": self.status, "message": "nope"}).encode())
        elif self.path.endswith("/GetDataset"):
            assert body.get("ownerSlug") == "alexzyukov", body
            self._send(200, "application/json", json.dumps({"currentVersionNumber": 3}).encode())
        elif self.path.endswith("/DownloadDataset"):
            self._send(200, "application/zip", self.zip_bytes)
        else:
            self._send(404, "text/plain", b"?")

    def _send(self, code, ctype, data):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_kaggle(offline_kaggle):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k in range(4):
            wav = io.BytesIO()
            sf.write(wav, tone(2.0, freq=300 + 50 * k), SR, format="WAV", subtype="PCM_16")
            z.writestr(f"audio/1759_{k}.wav", wav.getvalue())
        z.writestr("dataset-metadata.json", "{}")
    FakeKaggle.zip_bytes, FakeKaggle.status, FakeKaggle.seen = buf.getvalue(), 200, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 7777), FakeKaggle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FakeKaggle
    server.shutdown()
    server.server_close()


def test_kaggle_download_over_loopback_http(fake_kaggle, offline_kaggle, tmp_path):
    out = from_kaggle(tmp_path / "clips", "alexzyukov/beethoven/versions/1", progress=False)
    assert fake_kaggle.seen == ["DownloadDataset"]  # pinned: no version lookup
    assert out.recordings == {"1759": 4}
    assert_kaggle_layout(out.path)
    assert (offline_kaggle / "datasets/alexzyukov/beethoven/1.complete").exists()
    fake_kaggle.seen = []
    from_kaggle(tmp_path / "clips2", "alexzyukov/beethoven/versions/1", progress=False)
    assert fake_kaggle.seen == []  # pinned and cached: the server is not asked again


def test_unpinned_handle_asks_the_server_for_the_version(fake_kaggle, tmp_path):
    from_kaggle(tmp_path / "clips", "alexzyukov/beethoven", progress=False)
    assert fake_kaggle.seen == ["GetDataset", "DownloadDataset"]


@pytest.mark.parametrize("status, words", [(404, "was not found"), (403, "is forbidden"),
                                           (401, "needs Kaggle credentials")])
def test_kaggle_http_errors_are_one_line(fake_kaggle, tmp_path, status, words):
    fake_kaggle.status = status
    with pytest.raises(BeetNetError, match=words) as e:
        from_kaggle(tmp_path / "clips", "alexzyukov/beethoven/versions/9", progress=False)
    assert "\n" not in str(e.value)


def test_musicnet_source_keeps_beethoven_solo_piano_and_cuts_consecutive_clips(offline_kaggle, tmp_path, smoke):
    files = kaggle_cache(offline_kaggle, "alonhaviv", "musicnet", 1)
    (files / "musicnet_metadata.csv").write_text(
        "id,composer,composition,movement,ensemble,source,transcriber,catalog_name,seconds\n"
        "2303,Beethoven,Piano Sonata No 1,1. Allegro,Solo Piano,x,x,OP2NO1,7\n"
        "1752,Schubert,Piano Sonata,1,Solo Piano,x,x,D959,5\n"
        "2494,Beethoven,String Quartet,1,String Quartet,x,x,OP18,5\n"
        "2614,Beethoven,Piano Sonata No 8,2,Solo Piano,x,x,OP13,4.5\n")
    for rid, secs in [("1752", 5.0), ("2494", 5.0), ("2614", 4.5)]:
        write_wav(files / "musicnet" / "musicnet" / "train_data" / f"{rid}.wav", tone(secs, 44100), 44100)
    rng = np.random.default_rng(0)  # 2303 at 16 kHz, no resampling: its clips must join back into it exactly
    source = (0.3 * rng.standard_normal(7 * SR) * np.exp(-np.arange(7 * SR) / (3 * SR))).astype(np.float32)
    write_wav(files / "musicnet" / "musicnet" / "train_data" / "2303.wav", source)
    source, _ = sf.read(files / "musicnet" / "musicnet" / "train_data" / "2303.wav", dtype="float32")
    out = from_musicnet(tmp_path / "clips", "alonhaviv/musicnet/versions/1", smoke.features, progress=False)
    assert out.recordings == {"2303": 3, "2614": 2}
    assert_kaggle_layout(out.path)
    joined = np.concatenate([sf.read(out.path / f"2303_{k}.wav", dtype="float32")[0] for k in range(3)])
    np.testing.assert_allclose(joined, source[: 3 * 2 * SR], atol=1 / 32768)  # consecutive, in order, no overlap


def test_recording_ids_keep_underscores_and_name_their_clips(tmp_path, smoke):
    """A file named moonlight_sonata_1.wav is the recording moonlight_sonata_1: its clips parse back to it."""
    write_wav(tmp_path / "in" / "moonlight_sonata_1.wav", tone(4.5))
    write_wav(tmp_path / "in" / "op 27 no 2.wav", tone(4.5, freq=330))
    out = download("folder", tmp_path / "clips", smoke, audio_dir=tmp_path / "in", progress=False)
    assert sorted(out.recordings) == ["moonlight_sonata_1", "op-27-no-2"]
    assert sorted(parse_clip_name(p.name) for p in list_clips(out.path)) == [
        ("moonlight_sonata_1", 0), ("moonlight_sonata_1", 1), ("op-27-no-2", 0), ("op-27-no-2", 1)]
