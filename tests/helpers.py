"""Small audio makers for tests, kagglehub's cache layout, the lock on Kaggle's test port, and what the attack
suite shares (test_safe_files, test_safe_loading, test_bad_input, test_failed_downloads): a user's folders of
recordings and clips, the CLI and its one-line errors, a disk that fills up."""
from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000
ROOT = Path(__file__).parents[1]
quiet = dict(progress=False, log=lambda m: None)


def tone(seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t) * np.exp(-t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def kaggle_cache(root: Path, owner: str, name: str, version: int) -> Path:
    """The folder layout kagglehub itself writes after a completed download."""
    files = root / "datasets" / owner / name / "versions" / str(version)
    files.mkdir(parents=True)
    (root / "datasets" / owner / name / f"{version}.complete").touch()
    return files


def write_wav(path, audio, sr: int = SR, subtype: str = "PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype=subtype)
    return path


@contextlib.contextmanager
def kaggle_port():
    """kagglehub's test endpoint is a fixed port, 127.0.0.1:7777. Whoever serves it, or needs it silent,
    holds this lock (one file for the machine, as the port is), so that `make test`'s two workers take turns."""
    with open(Path(tempfile.gettempdir()) / "beetnet-tests-port-7777.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def smoke_preset(smoke, preset: str):
    """A preset on the smoke profile: `with_preset` itself, now that local's layout scales with the latent
    (smoke's 32 numbers: 8 for the envelope and 8 steps of 3). Kept for the tests that still call it."""
    from beetnet_utils.config import with_preset

    return with_preset(smoke, preset)


# --- the attack suite's: a user's folders, the CLI, one-line errors, a full disk ------------------

NEW_FOLDER = "choose a new or empty folder as the output (nothing was changed)"
FREE_SPACE = "free some space and run again (nothing was replaced"


def one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    """The error's message: one line, holding `words` (what went wrong, where, and what to do)."""
    msg = str(exc.value)
    assert msg and "\n" not in msg and all(w in msg for w in words), msg
    return msg


def recordings(folder: Path, n: int = 3, seconds: float = 4.5) -> Path:
    """A user's folder of recordings: n files of a few seconds, different content each."""
    for i in range(n):
        write_wav(folder / f"take {i}.wav", tone(seconds, freq=220 + 110 * i))
    return folder


def clip_folder(folder: Path, recs: tuple[str, ...] = ("100", "200", "300"), k: int = 2) -> Path:
    for r, rec in enumerate(recs):
        for j in range(k):
            write_wav(folder / f"{rec}_{j}.wav", tone(2.0, freq=220 + 55 * r + 20 * j))
    return folder


def run_python(script: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120, **kw)


@contextlib.contextmanager
def lock_held_elsewhere(kind: str, folder: Path):
    """Another process holding storage's `kind` lock ("writer_lock" or "reader_lock") on `folder`; yields its pid."""
    holder = subprocess.Popen([sys.executable, "-c", f"import time\nfrom beetnet_utils.storage import {kind}\n"
                               f"with {kind}({str(folder)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


DISK_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from beetnet_utils import BeetNetError
try:
    {call}
except BeetNetError as e:
    print(e); sys.exit(3)
"""


def in_thread(fn, timeout: float = 60):
    """Run fn (its error raised here); a call still blocked after `timeout` fails the test instead of hanging it."""
    result = {}

    def call():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (raised again below, in the test's thread)
            result["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    if "error" in result:
        raise result["error"]
    return result["value"]


def cli(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`python -m beetnet_utils ARGS` in the repository, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "beetnet_utils", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, **kw)


def assert_one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr[-3000:]
    assert all(w in r.stderr for w in words), r.stderr


def copy_run(trained: Path, dest: Path) -> Path:
    shutil.copytree(trained, dest)
    return dest
