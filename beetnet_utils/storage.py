"""Safe outputs: BeetNet replaces only folders it owns, atomically, and never inside its own inputs.

A crash, a SIGKILL or a full disk leaves either the old file or folder or the new one, never neither;
what a killed run leaves beside its target (a staging folder, an `.old-PID` folder) is cleaned up, or
put back, by the next run that writes the same target.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

# The marker file each kind of output carries. A folder with one of these, holding a JSON object whose
# "beetnet" is the kind, is BeetNet's: it may be replaced, and it is never read as input audio.
MARKERS = {"clips": "manifest.json", "cache": "meta.json", "run": "run.json", "demo": "demo.json"}
_LEFTOVER = re.compile(r"^\..+\.(staging|old)-\d+(-.*)?$")  # what atomic_dir and atomic_write leave when killed


class BeetNetError(RuntimeError):
    """An error a user can act on; the CLI prints its one-line message without a traceback."""


class NotRegularFileError(OSError):
    """A FIFO, device or folder where a file was expected: reading it could block forever."""


def disk_full_error(exc: OSError, target: Path) -> BeetNetError | None:
    short_write = exc.errno is None and "written" in str(exc)  # numpy's tofile reports ENOSPC this way
    if exc.errno in _DISK_FULL or short_write:
        return BeetNetError(f"disk full while writing {target}: free some space and run again "
                            f"(nothing was replaced; the previous copy, if any, is intact)")
    return None


# --- what a user hands in ---------------------------------------------------------------------

def check_array(x, where: str, expected: str, trailing: tuple[int | None, ...] = ()) -> None:
    """Refuse, in one line, an array (numpy or torch) whose last dimensions are not `trailing` (None: any
    size) or that holds NaN or infinity: one NaN bin turns a whole inversion into NaN, a NaN waveform
    into a full-scale click, a wrong shape into a raw torch error deep inside a model."""
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    tail = shape[len(shape) - len(trailing):] if len(shape) >= len(trailing) else ()
    if not shape or len(tail) != len(trailing) or any(w is not None and g != w for g, w in zip(tail, trailing)):
        raise BeetNetError(f"{where} expects {expected}, not an array of shape {shape}")
    if 0 in shape:
        raise BeetNetError(f"{where} expects {expected}, not an empty array of shape {shape}")
    try:
        values = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    except TypeError:  # a torch dtype numpy has no counterpart for (bfloat16): such values are real numbers
        values = x.detach().cpu().float().numpy()
    if values.dtype.kind not in "fiu":  # bool, complex, strings, objects: no spectrogram or code is made of them
        raise BeetNetError(f"{where} expects {expected} of real numbers, not of {values.dtype}")
    with np.errstate(over="ignore"):  # as the model reads them: a float64 beyond float32's range is infinite
        values = values.astype(np.float32)
    bad = int(values.size - np.isfinite(values).sum())
    if bad:
        raise BeetNetError(f"{where} expects {expected} of finite values: this one holds {bad} NaN or infinite")


# --- reading ----------------------------------------------------------------------------------

def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading; anything else raises NotRegularFileError without blocking.

    O_NONBLOCK lets the open of a FIFO return at once, and fstat on the open file (not the name)
    leaves no gap for a swap between the check and the read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "rb")


def file_digest(path: Path) -> bytes:
    try:
        with open_regular(path) as f:
            h = hashlib.sha256(os.fstat(f.fileno()).st_size.to_bytes(8, "little"))
            while chunk := f.read(1 << 20):
                h.update(chunk)
            return h.digest()
    except OSError as exc:
        return f"unreadable {type(exc).__name__} {exc.errno}".encode()


def content_hash(paths: Iterable[Path], name: Callable[[Path], str] = lambda p: p.name) -> str:
    """sha256 of each file's name, size and bytes, in order. Names and sizes alone are not enough: every
    2 s 16-bit clip has the same size. A file that cannot be opened counts by its error. sha256 runs in
    hardware on most CPUs, twice blake2b's speed here; threads were slower on 2 busy cores."""
    h = hashlib.sha256()
    for p in paths:
        h.update(name(p).encode("utf-8", "surrogateescape") + b"\0" + file_digest(p))  # any file name
    return h.hexdigest()[:32]


# --- owned outputs ----------------------------------------------------------------------------

def owned(folder: Path, kind: str, marker: str | None = None) -> bool:
    """Does `folder` carry BeetNet's marker for this kind of output?"""
    marker_path = Path(folder) / (marker or MARKERS[kind])
    try:
        with open_regular(marker_path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict):
        return False
    return saved.get("beetnet") == kind


def beetnet_output(folder: Path) -> str | None:
    """The kind of BeetNet output `folder` is ('clips', 'cache', 'staging'), or None.
    Such folders are never read as input: their clips would come back as recordings."""
    if _LEFTOVER.match(Path(folder).name):
        return "staging"
    return next((kind for kind in MARKERS if owned(folder, kind)), None)


def claim_output(path: Path, kind: str, marker: str | None = None) -> Path:
    """Refuse to write `path` unless it is new, an empty folder, or carries `marker` (default MARKERS[kind]):
    a JSON object whose "beetnet" is `kind`. Call it before reading or replacing anything there.

    Also puts back a folder that a run killed in the middle of replacing it left aside (see recover).
    """
    path = Path(path)
    marker = marker or MARKERS[kind]
    recover(path)
    if not os.path.lexists(path):
        return path
    if path.is_symlink():  # replacing it would replace the link; writing into it, a folder BeetNet never chose
        raise BeetNetError(f"{path} is a symbolic link: BeetNet never writes through a link it did not make; give "
                           f"the folder it points to ({path.resolve()}) as the {kind} output (nothing was changed)")
    if not path.is_dir():
        raise BeetNetError(f"{path} exists and is not a folder: choose a new folder as the {kind} output "
                           "(nothing was changed)")
    if any(path.iterdir()) and not owned(path, kind, marker):
        raise BeetNetError(f"{path} holds files BeetNet did not write (no {kind} {marker}): choose a new or "
                           "empty folder as the output (nothing was changed)")
    return path


def claim_dir(path: Path, kind: str, *inputs: Path) -> Path:
    """`claim_output` and `check_not_inside(path, *inputs)`, then make the folder and mark it as BeetNet's
    `kind`: for folders written in place, file by file (a run, make demo's output), not replaced whole."""
    path = claim_output(path, kind)
    check_not_inside(path, *inputs)
    path.mkdir(parents=True, exist_ok=True)
    if not owned(path, kind):
        atomic_write(path / MARKERS[kind], lambda p: p.write_text(json.dumps({"beetnet": kind})))
    return path


def check_not_inside(output: Path, *inputs: Path) -> None:
    """Refuse an output that is an input, lies inside one, or holds one: replacing it would lose the input
    or read the output back in as input."""
    out = Path(output).resolve()
    for given in inputs:
        src = Path(given).resolve()
        if out == src:
            raise BeetNetError(f"the output {output} is the input folder itself: choose another output folder "
                               "(nothing was changed)")
        if src in out.parents:
            raise BeetNetError(f"the output {output} is inside the input folder {given}: choose an output outside "
                               "it (nothing was changed)")
        if out in src.parents:
            raise BeetNetError(f"the input {given} is inside the output folder {output}, which would be replaced: "
                               "choose another output folder (nothing was changed)")


# --- leftovers of killed runs -----------------------------------------------------------------

def _leftovers(target: Path) -> Iterator[tuple[Path, str, int]]:
    """(path, 'staging' | 'old', pid) for what runs writing `target` may leave beside it."""
    ours = re.compile(rf"^\.{re.escape(target.name)}\.(staging|old)-(\d+)(-.*)?$")
    with contextlib.suppress(OSError):  # no parent folder, or one we may not list: nothing to clean
        for entry in os.scandir(target.parent):
            if m := ours.match(entry.name):
                yield Path(entry.path), m[1], int(m[2])


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, and belongs to someone else
        return True
    return True


def _stale(path: Path, pid: int) -> bool:
    return not _alive(pid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(target: Path) -> None:
    """Put back the old copy a killed replacement left aside, and remove the staging of dead runs."""
    target = Path(target)
    left = list(_leftovers(target))
    olds = sorted((p for p, what, pid in left if what == "old" and _stale(p, pid)), key=os.path.getmtime)
    if olds and not os.path.lexists(target):
        os.replace(olds.pop(), target)
    for p, what, pid in left:
        if (what == "staging" or p in olds) and _stale(p, pid):
            _remove(p)


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.staging-{os.getpid()}-"


# --- atomic replacement -----------------------------------------------------------------------

_RENAME_EXCHANGE, _AT_FDCWD = 2, -100
_libc = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not supported."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(staging: Path, target: Path) -> None:
    """Move `staging` to `target`. The target path never goes missing: a swap where the OS has one,
    else two renames whose kill in between leaves `.old-PID`, which `recover` puts back."""
    if not os.path.lexists(target):
        os.replace(staging, target)
    elif _exchange(staging, target):
        _remove(staging)  # now the old copy
    else:
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old, target)
            raise
        _remove(old)


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file() and not f.is_symlink():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _mode_for(target: Path, default: int) -> int:
    """The permissions a replacement of `target` gets: the old one's, or those the umask gives a new file or
    folder (`default` less the umask), not the 0600/0700 of a temporary file or folder."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return default & ~umask


def atomic_write(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `target`, fsync it, then rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_staging_prefix(target))
    os.fchmod(fd, _mode_for(target, 0o666))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise (disk_full_error(exc, target) or exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a staging folder beside `target`; on success it replaces `target` (see replace_dir), else it
    is removed. Claim the target first (claim_output): this replaces whatever folder is there."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    if os.path.lexists(target) and not target.is_dir():
        raise BeetNetError(f"{target} exists and is not a folder: choose a new folder as the output "
                           "(nothing was changed)")
    with writer_lock(target):
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=_staging_prefix(target)))
        staging.chmod(_mode_for(target, 0o777))
        try:
            yield staging
            _fsync_tree(staging)
            replace_dir(staging, target)
        except OSError as exc:
            _remove(staging)
            raise (disk_full_error(exc, target) or exc) from exc
        except BaseException:
            _remove(staging)
            raise


def _describe_process(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"process {pid}" + (f" ({cmd[:120]})" if cmd else "")


_HELD: set[Path] = set()  # the lock files this process holds


def _open_lock(target: Path, path: Path) -> int:
    """The lock file's descriptor, never through a symbolic link (one planted there would have BeetNet
    truncate the file it points to)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BeetNetError(f"{path} is a symbolic link where BeetNet keeps the lock of {target}: remove the "
                               "link, then run again (nothing was changed)") from None
        raise


def _locked(target: Path, path: Path, mode: int) -> int:
    """A descriptor of `path` holding `mode` (flock), or a one-line refusal naming who holds it. A process
    that locked a file just removed (its inode no longer at the path) tries again."""
    while True:
        fd = _open_lock(target, path)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if holder.isdigit():
                raise BeetNetError(f"{target} is being written by {_describe_process(int(holder))}: wait for it to "
                                   "finish, or stop it, then run again (nothing was changed)") from None
            raise BeetNetError(f"{target} is being read by another process (a training or a cache build): wait "
                               "for it to finish, or stop it, then run again (nothing was changed)") from None
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def writer_lock(target: Path) -> Iterator[None]:
    """Hold an OS lock on `target` while writing it; a second writer, or a reader (`reader_lock`), is refused
    at once, naming the writer.

    The lock is `flock` on `.NAME.lock` beside the target: the kernel releases it when its process
    dies, however it dies, so a killed run never leaves a folder locked. The file is removed on release.
    """
    target = Path(target)
    path = target.parent / f".{target.name}.lock"
    key = path.resolve()
    if key in _HELD:  # this process holds it already (a build that locks early, then writes through atomic_dir)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _locked(target, path, fcntl.LOCK_EX)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def reader_lock(target: Path) -> Iterator[None]:
    """Hold a shared lock on `target` while reading it: any number of readers, and no writer (`writer_lock`)
    meanwhile, so a training never reads a cache rebuilt under it. Where no lock file can be made (a
    read-only folder), nothing can write there either, and the read goes on without one."""
    target = Path(target)
    path = target.parent / f".{target.name}.lock"
    if path.resolve() in _HELD:
        yield
        return
    try:
        fd = _locked(target, path, fcntl.LOCK_SH)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        yield
        return
    try:
        os.ftruncate(fd, 0)  # no writer holds it: a PID in it is a dead writer's
        yield
    finally:
        with contextlib.suppress(OSError):  # the last reader out removes the file, as a writer does
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        os.close(fd)
