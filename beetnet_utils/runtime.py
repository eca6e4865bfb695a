"""The one place that knows the environment: Colab, Kaggle Notebooks or a local machine, which GPU,
where files live.

Facts only: nothing here trains or evaluates. Nothing else in the package tests for Colab or Kaggle.
Every function takes the environment as an argument so tests can pretend to be Colab or Kaggle
without being there; two settings move the hosts' fixed folders (`/content`, `/kaggle`) for the
tests' stand-ins.
"""
from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from .storage import MARKERS, BeetNetError, atomic_dir, atomic_write, claim_output, owned

DEVICES = ("cpu", "cuda")
CONTENT_ROOT_ENV, KAGGLE_ROOT_ENV = "BEETNET_CONTENT_ROOT", "BEETNET_KAGGLE_ROOT"
KAGGLE_SECRETS = ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")  # Colab secrets kagglehub may need


@dataclass(frozen=True)
class Environment:
    in_colab: bool
    gpu_name: str | None
    home_override: str | None = None  # BEETNET_HOME
    in_kaggle: bool = False
    content_root: Path = Path("/content")  # Colab's working folder (BEETNET_CONTENT_ROOT for the stand-in)
    kaggle_root: Path = Path("/kaggle")  # Kaggle's input/, working/, temp/ (BEETNET_KAGGLE_ROOT)

    @property
    def hosted(self) -> bool:
        """Colab or Kaggle: the notebooks default to the full profile there."""
        return self.in_colab or self.in_kaggle

    @property
    def is_t4(self) -> bool:
        return bool(self.gpu_name) and "T4" in self.gpu_name

    def describe(self) -> str:
        where = "Google Colab" if self.in_colab else "Kaggle Notebooks" if self.in_kaggle else "local machine"
        gpu = self.gpu_name or "no GPU (CPU only)"
        if not self.hosted or self.is_t4:
            warn = ""
        elif self.gpu_name:
            warn = "  (not a T4: timings in the notebooks assume one)"
        else:
            warn = "  (no GPU: pick a T4 as the accelerator to train)"
        return f"{where}; {gpu}{warn}"


@dataclass(frozen=True)
class Paths:
    """Folders for one environment. In Colab, runs live on Drive; the cache is read from local disk.
    In Kaggle, an attached dataset of clips is read in place (`clips_attached`)."""

    home: Path
    clips: Path
    cache: Path
    runs: Path
    cache_archive: Path | None  # Colab: the cache packed as one file on Drive, restored after a disconnect
    clips_attached: bool = False  # Kaggle: `clips` is a read-only input, used as it is


def detect(environ: Mapping[str, str] | None = None, modules: Mapping | None = None) -> Environment:
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    in_colab = "COLAB_RELEASE_TAG" in environ or "google.colab" in modules
    in_kaggle = "KAGGLE_KERNEL_RUN_TYPE" in environ or "KAGGLE_DATA_PROXY_URL" in environ
    return Environment(in_colab=in_colab, gpu_name=gpu_name(), home_override=environ.get("BEETNET_HOME"),
                       in_kaggle=in_kaggle and not in_colab,
                       content_root=Path(environ.get(CONTENT_ROOT_ENV, "/content")),
                       kaggle_root=Path(environ.get(KAGGLE_ROOT_ENV, "/kaggle")))


def gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def gpu_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Can this torch build run on a GPU of this compute capability? It needs the GPU's own `sm_XY`
    kernels, or PTX (`compute_XY`) of that capability or an older one. Kaggle's P100 (sm_60) fails this
    with recent torch builds."""
    major, minor = capability
    if f"sm_{major}{minor}" in arch_list:
        return True
    ptx = [a.removeprefix("compute_") for a in arch_list if a.startswith("compute_")]  # "compute_80" -> "80"
    return any(p.isdigit() and (int(p[:-1]), int(p[-1])) <= (major, minor) for p in ptx)


def pick_device(prefer: str | None = None, capability: tuple[int, int] | None = None,
           arch_list: list[str] | None = None) -> torch.device:
    """`prefer` ('cpu' or 'cuda') or the best available. Asking for CUDA without a usable GPU is an error;
    a GPU this torch build cannot run (Kaggle's P100) gives the CPU with a one-line warning instead of a
    crash at the first operation. `capability` and `arch_list` default to the installed GPU and torch."""
    if prefer == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available() and capability is None:
        if prefer == "cuda":
            raise BeetNetError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
        return torch.device("cpu")
    capability = capability or torch.cuda.get_device_capability(0)
    arch_list = torch.cuda.get_arch_list() if arch_list is None else arch_list
    if gpu_supported(capability, arch_list):
        return torch.device("cuda")
    sm = "sm_{}{}".format(*capability)
    advice = (f"this torch build cannot run this GPU ({sm}; it has {' '.join(arch_list) or 'no GPU code'}): "
              "pick GPU T4 x2 as the accelerator (Kaggle: Settings > Accelerator)")
    if prefer == "cuda":
        raise BeetNetError(f"--device cuda: {advice}, or use --device cpu")
    warnings.warn(f"training on the CPU: {advice}", stacklevel=2)
    return torch.device("cpu")


def paths(env: Environment, drive_root: Path | None = None, drive_mounted: bool = True,
          source: str | None = None) -> Paths:
    """Where clips, cache and runs live. `drive_root` defaults to CONTENT/drive/MyDrive/beetnet; without a
    mounted Drive, Colab's runs stay on the VM's disk. In Kaggle, with `source` "kaggle" and a dataset
    of clips attached under input/, the clips are read where they are."""
    if env.home_override:
        home = Path(env.home_override).expanduser()
        return Paths(home, home / "clips", home / "cache", home / "runs", None)
    if env.in_colab:
        local = env.content_root / "beetnet_data"  # beside the code, which the set-up cell clones to beetnet/
        if not drive_mounted:
            return Paths(local, local / "clips", local / "cache", local / "runs", None)
        drive = drive_root or env.content_root / "drive" / "MyDrive" / "beetnet"
        return Paths(local, local / "clips", local / "cache", drive / "runs", drive / "cache.tar")
    if env.in_kaggle:
        working = env.kaggle_root / "working" / "beetnet_data"  # the set-up cell clones the code to beetnet/
        attached = attached_clips(env.kaggle_root / "input") if source == "kaggle" else None
        return Paths(working, attached or working / "clips", env.kaggle_root / "temp" / "beetnet" / "cache",
                     working / "runs", None, clips_attached=attached is not None)
    home = Path.cwd() / "beetnet_data"
    return Paths(home, home / "clips", home / "cache", home / "runs", None)


def _folders(root: Path, depth: int):
    """`root` and its sub-folders down to `depth` levels, in a stable order, without following links."""
    yield root
    if depth > 0:
        for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
            yield from _folders(child, depth - 1)


def attached_clips(inputs: Path, depth: int = 4) -> Path | None:
    """The folder under Kaggle's input/ that holds the most `{recording}_{k}.wav` clips, if any."""
    if not inputs.is_dir():
        return None
    counts = {d: sum(1 for p in d.glob("*_*.wav") if p.stem.rsplit("_", 1)[-1].isdigit())
              for d in _folders(inputs, depth)}
    best = max(counts, key=lambda d: counts[d], default=None)
    return best if best is not None and counts[best] else None


def attached_runs(env: Environment, depth: int = 5) -> list[Path]:
    """Run folders (with a last.pt, inside a folder named runs) of an earlier notebook version's output
    attached under Kaggle's input/."""
    inputs = env.kaggle_root / "input"
    if not env.in_kaggle or not inputs.is_dir():
        return []
    return [d for d in _folders(inputs, depth) if d.parent.name == "runs" and (d / "last.pt").is_file()]


def adopt_attached_runs(env: Environment, runs: Path) -> list[Path]:
    """Copy attached earlier runs into `runs` (inputs are read-only, and training writes into its run
    folder), unless a run of that name is already there; returns the copies made."""
    adopted = []
    for src in attached_runs(env):
        dest = runs / src.name
        if dest.exists():
            continue
        links = 0
        with atomic_dir(dest) as staging:
            for folder, dirs, files in os.walk(src):  # never into a linked folder
                here = Path(folder)
                links += sum((here / d).is_symlink() for d in dirs)
                for name in sorted(files):
                    f = here / name
                    if f.is_symlink() or not f.is_file():  # a link could point anywhere: a key, a password file
                        links += 1
                        continue
                    (staging / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, staging / f.relative_to(src), follow_symlinks=False)  # contents, not modes
        if links:
            print(f"warning: {links} symbolic link(s) or special file(s) in {src} were not copied")
        adopted.append(dest)
    return adopted


def colab_secrets(env: Environment, environ: Mapping[str, str]) -> dict[str, str]:
    """Kaggle credentials from Colab's secrets (the key icon), for those not already in `environ`.
    kagglehub reads them from the environment; it reads Colab's secrets itself only in Colab's own shell."""
    if not env.in_colab or any(name in environ for name in KAGGLE_SECRETS):
        return {}
    from google.colab import userdata  # type: ignore[import-not-found]

    found = {}
    for name in KAGGLE_SECRETS:
        try:  # missing (SecretNotFoundError), not shared with this notebook (NotebookAccessError), timed out
            found[name] = userdata.get(name).strip()
        except Exception:  # noqa: BLE001  (Colab's exception classes differ between releases)
            pass
    return {k: v for k, v in found.items() if v}


def widgets_major() -> int:
    """ipywidgets' major version, without importing it."""
    return int(metadata.version("ipywidgets").split(".")[0])


def mount_drive(env: Environment, timeout_s: float = 120.0) -> bool:
    """Mount Google Drive in Colab (asks the user once); False elsewhere, or if the mount fails or times
    out, with a warning that runs then stay on the VM's disk and do not survive a disconnect."""
    if not env.in_colab:
        return False
    from google.colab import drive, output  # type: ignore[import-not-found]

    if widgets_major() >= 8:  # Colab's own image has ipywidgets 7, whose widgets need no custom manager
        output.enable_custom_widget_manager()
    mount = env.content_root / "drive"
    if (mount / "MyDrive").exists():
        return True
    try:
        drive.mount(str(mount), timeout_ms=int(timeout_s * 1000))
        problem = None if (mount / "MyDrive").exists() else f"no MyDrive folder in {mount}"
    except Exception as exc:  # noqa: BLE001  (ValueError, TimeoutError, or Colab's MessageError when refused)
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    if problem:
        print(f"warning: Google Drive did not mount ({problem}); runs stay on this VM's disk and will NOT "
              "survive a disconnect: run this cell again to retry the mount")
    return problem is None


def backup_cache(cache_dir: Path, archive: Path) -> Path:
    """Pack the cache folder into one uncompressed tar (Drive is slow with many files), atomically."""
    def pack(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            tar.add(cache_dir, arcname=cache_dir.name)

    return atomic_write(archive, pack)


def restore_cache(archive: Path, cache_dir: Path) -> bool:
    """Unpack a backed-up cache to local disk if the local copy is gone (after a disconnect). A damaged
    archive (truncated, empty, not a cache) is set aside with a warning, and the cache is built again; a
    folder of files BeetNet did not write is never replaced."""
    if (cache_dir / MARKERS["cache"]).exists() or not archive.exists():
        return False
    claim_output(cache_dir, "cache")
    cache_dir.parent.mkdir(parents=True, exist_ok=True)  # a new VM: staged beside the target, renamed in place
    staging = Path(tempfile.mkdtemp(dir=cache_dir.parent, prefix=f".{cache_dir.name}.restoring-"))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
            unpacked = [p for p in staging.iterdir()]
            if len(unpacked) != 1 or not owned(unpacked[0], "cache"):
                raise tarfile.TarError("it holds no cache folder")
        except (tarfile.TarError, EOFError, OSError) as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:80]
            print(f"warning: the cache copy {archive} is damaged ({why}): ignoring "
                  "it; the cache is built again and copied anew")
            return False
        with atomic_dir(cache_dir) as target:
            target.rmdir()
            os.replace(unpacked[0], target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
