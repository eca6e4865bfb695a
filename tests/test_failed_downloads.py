"""A download that fails ends within its bound in one line, and leaves the user's files as they were.

The real kagglehub code against its TEST endpoint on loopback: a server that accepts and never answers,
stalls, breaks off, sends a damaged archive or a captive portal's page, or refuses credentials; inside a
Kaggle notebook, a data proxy that reports an error; and a disk that fills up mid-download. Each failure
is one line that says what to do (try again, or use --source demo); every file outside kagglehub's own
folder for the dataset is hashed before and after (the user's earlier kagglehub downloads included), and
no clips are left.
"""
from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import socket
import threading
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from beetnet_utils import BeetNetError
from beetnet_utils.sources import from_kaggle

from helpers import DISK_FULL, FREE_SPACE, SR, in_thread, kaggle_cache, one_line, run_python, tone
from journey import tree


@pytest.fixture
def mute_kaggle(offline_kaggle):
    """A server at kagglehub's TEST address that accepts connections (the kernel completes them) and never answers."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 7777))
    s.listen(16)
    yield s
    s.close()


# kagglehub's own folder for the dataset being fetched (it makes it, and may keep a partial archive there)
KAGGLE_DOWNLOAD = ("clips", "kh/datasets/alexzyukov")


def users_kaggle_cache(offline_kaggle: Path) -> None:
    """Another dataset the user fetched earlier with kagglehub, which a failed download must leave alone."""
    files = kaggle_cache(offline_kaggle, "someone", "other", 3)
    (files / "table.csv").write_text("a,b\n1,2\n")


def failed_fetch(tmp_path: Path) -> pytest.ExceptionInfo:
    """from_kaggle into tmp_path/clips, failing; no file outside kagglehub's download and the clips changes,
    and no clips are left. Run in a thread: a fetch that blocks fails the test instead of hanging it."""
    before = tree(tmp_path, KAGGLE_DOWNLOAD)

    def fetch():
        with pytest.raises(BeetNetError) as e:
            from_kaggle(tmp_path / "clips", "alexzyukov/beethoven/versions/1", progress=False, stall_seconds=1)
        return e

    e = in_thread(fetch)
    assert tree(tmp_path, KAGGLE_DOWNLOAD) == before and not (tmp_path / "clips").exists()
    return e


# --- a server that never answers, stalls, breaks off or sends what is not the archive -------------

def test_attack_kaggle_server_that_accepts_and_never_answers_ends_within_the_bound(mute_kaggle, offline_kaggle,
                                                                                   tmp_path):
    users_kaggle_cache(offline_kaggle)
    one_line(failed_fetch(tmp_path), "stopped answering", "nothing for 1 s", "try again later", "--source demo")


class BadKaggle(http.server.BaseHTTPRequestHandler):
    """kagglehub's DownloadDataset answered badly: `mode` says how."""

    mode = "stall"
    body = b""
    release = threading.Event()

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = self.body
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        if self.mode == "md5":
            self.send_header("x-goog-hash", "md5=" + "A" * 22 + "==")
        self.end_headers()
        if self.mode in ("stall", "cut"):
            self.wfile.write(body[:100])
            self.wfile.flush()
            if self.mode == "stall":
                self.release.wait(30)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def small_zip(n: int = 4) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k in range(n):
            wav = io.BytesIO()
            sf.write(wav, tone(2.0, freq=300 + 50 * k), SR, format="WAV", subtype="PCM_16")
            z.writestr(f"audio/1759_{k}.wav", wav.getvalue())
    return buf.getvalue()


@pytest.fixture
def bad_kaggle(offline_kaggle):
    BadKaggle.body, BadKaggle.release = small_zip(), threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 7777), BadKaggle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield BadKaggle
    BadKaggle.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode, words", [
    ("stall", "stopped answering"),  # headers, 100 bytes, then silence
    ("cut", "broke off"),  # fewer bytes than Content-Length, then the connection closes
    ("md5", "arrived damaged (DataCorruptionError)"),
    ("notzip", "Unsupported archive type"),  # a captive portal's login page instead of the archive
])
def test_attack_kaggle_download_that_stalls_breaks_or_arrives_damaged_is_one_line(bad_kaggle, offline_kaggle,
                                                                                  tmp_path, mode, words):
    bad_kaggle.mode = mode
    if mode == "notzip":
        bad_kaggle.body = b"<html>a captive portal login page</html>" * 100
    users_kaggle_cache(offline_kaggle)
    again = "try again later" if mode == "stall" else "run again"
    one_line(failed_fetch(tmp_path), words, "alexzyukov/beethoven", again, "or use --source demo")


# --- errors that Kaggle reports -------------------------------------------------------------------

@contextlib.contextmanager
def json_server(port: int, status: int, payload: dict):
    """A loopback server answering every POST with `status` and `payload`; yields its port."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_attack_kaggle_credentials_refused_says_none_are_needed(offline_kaggle, tmp_path):
    users_kaggle_cache(offline_kaggle)
    with json_server(7777, 401, {"code": 401, "message": "bad token"}):
        e = failed_fetch(tmp_path)
    one_line(e, "needs no credentials: unset KAGGLE_API_TOKEN", "kagglehub.login()", "use --source demo")


def test_attack_kaggle_notebook_data_proxy_reporting_a_failure_is_one_line(offline_kaggle, tmp_path,
                                                                             monkeypatch):
    """Inside a Kaggle notebook kagglehub asks the notebook's data proxy; a BackendError comes back."""
    with json_server(0, 200, {"wasSuccessful": False, "error": "quota"}) as port:
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
        monkeypatch.setenv("KAGGLE_DATA_PROXY_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("KAGGLE_USER_SECRETS_TOKEN", "jwt")
        monkeypatch.setenv("KAGGLE_DATA_PROXY_TOKEN", "proxy")
        users_kaggle_cache(offline_kaggle)
        e = failed_fetch(tmp_path)
    one_line(e, "Kaggle reported an error", "quota", "try again later", "or use --source demo")


# --- disk full ------------------------------------------------------------------------------------

def test_attack_disk_full_while_downloading_from_kaggle_says_so(bad_kaggle, offline_kaggle, tmp_path):
    bad_kaggle.mode = "ok"
    users_kaggle_cache(offline_kaggle)
    before = tree(tmp_path, KAGGLE_DOWNLOAD)
    call = ("from beetnet_utils.sources import from_kaggle; "
            f"from_kaggle({str(tmp_path / 'clips')!r}, 'alexzyukov/beethoven/versions/1', progress=False)")
    r = run_python(DISK_FULL.format(limit=50_000, call=call), env=os.environ.copy())
    assert tree(tmp_path, KAGGLE_DOWNLOAD) == before
    assert r.returncode == 3, r.stderr[-2000:]
    said = r.stdout.splitlines()[-1]  # above it, kagglesdk's TEST environment prints its requests
    assert said.startswith(f"disk full while writing {offline_kaggle}") and FREE_SPACE in said
    assert "System error" not in r.stdout + r.stderr and not (tmp_path / "clips").exists()
