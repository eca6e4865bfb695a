"""The one place that knows the environment: Colab or not, which GPU, where files live.

Facts only: nothing here trains or evaluates. Nothing else in the package tests for Colab.
Every function takes the environment as an argument so tests can pretend to be Colab
without being there.
"""
from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from .storage import BeetNetError

DEVICES = ("cpu", "cuda")
COLAB_CONTENT = Path("/content")
DRIVE_MOUNT = COLAB_CONTENT / "drive"


@dataclass(frozen=True)
class Environment:
    in_colab: bool
    gpu_name: str | None
    home_override: str | None = None  # BEETNET_HOME

    @property
    def is_t4(self) -> bool:
        return bool(self.gpu_name) and "T4" in self.gpu_name

    def describe(self) -> str:
        where = "Google Colab" if self.in_colab else "local machine"
        gpu = self.gpu_name or "no GPU (CPU only)"
        warn = "" if self.is_t4 or not self.in_colab else "  (not a T4: timings in the notebooks assume one)"
        return f"{where}; {gpu}{warn}"


@dataclass(frozen=True)
class Paths:
    """Folders for one environment. In Colab, runs live on Drive; the cache is read from local disk."""

    home: Path
    clips: Path
    cache: Path
    runs: Path
    cache_archive: Path | None  # Colab: the cache packed as one file on Drive, restored after a disconnect


def detect(environ: Mapping[str, str] | None = None, modules: Mapping | None = None) -> Environment:
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    in_colab = "COLAB_RELEASE_TAG" in environ or "google.colab" in modules
    return Environment(in_colab=in_colab, gpu_name=gpu_name(), home_override=environ.get("BEETNET_HOME"))


def gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def device(prefer: str | None = None) -> torch.device:
    """`prefer` ('cpu' or 'cuda') or the best available; asking for CUDA without one is an error."""
    if prefer == "cuda" and not torch.cuda.is_available():
        raise BeetNetError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    return torch.device(prefer or ("cuda" if torch.cuda.is_available() else "cpu"))


def paths(env: Environment, drive_root: Path | None = None) -> Paths:
    """Where clips, cache and runs live. `drive_root` defaults to /content/drive/MyDrive/beetnet."""
    if env.home_override:
        home = Path(env.home_override).expanduser()
        return Paths(home, home / "clips", home / "cache", home / "runs", None)
    if env.in_colab:
        local = COLAB_CONTENT / "beetnet"
        drive = drive_root or DRIVE_MOUNT / "MyDrive" / "beetnet"
        return Paths(local, local / "clips", local / "cache", drive / "runs", drive / "cache.tar")
    home = Path.cwd() / "beetnet_data"
    return Paths(home, home / "clips", home / "cache", home / "runs", None)


def mount_drive(env: Environment) -> bool:
    """Mount Google Drive in Colab (asks the user once); a no-op elsewhere."""
    if not env.in_colab:
        return False
    from google.colab import drive, output  # type: ignore[import-not-found]

    output.enable_custom_widget_manager()  # ipywidgets 8 in Colab
    if not (DRIVE_MOUNT / "MyDrive").exists():
        drive.mount(str(DRIVE_MOUNT))
    return True


def backup_cache(cache_dir: Path, archive: Path) -> Path:
    """Pack the cache folder into one uncompressed tar (Drive is slow with many files), atomically."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            tar.add(cache_dir, arcname=cache_dir.name)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive


def restore_cache(archive: Path, cache_dir: Path) -> bool:
    """Unpack a backed-up cache to local disk if the local copy is gone (after a disconnect)."""
    if (cache_dir / "meta.json").exists() or not archive.exists():
        return False
    staging = Path(tempfile.mkdtemp(dir=cache_dir.parent if cache_dir.parent.exists() else None))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        unpacked = next(staging.iterdir())
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        os.replace(unpacked, cache_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
