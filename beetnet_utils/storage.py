"""Atomic writes: a crash, a SIGKILL or a full disk leaves either the old file or the new one."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class BeetNetError(RuntimeError):
    """An error a user can act on; the CLI prints its one-line message without a traceback."""


def disk_full_error(exc: OSError, target: Path) -> BeetNetError | None:
    short_write = exc.errno is None and "written" in str(exc)  # numpy's tofile reports ENOSPC this way
    if exc.errno in _DISK_FULL or short_write:
        return BeetNetError(f"disk full while writing {target}: free some space and run again "
                            f"(nothing was replaced; the previous copy, if any, is intact)")
    return None


def atomic_write(target: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `target`, fsync it, then rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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
    """Yield a staging folder; on success it replaces `target` with two renames, else it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield staging
        for f in staging.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise (disk_full_error(exc, target) or exc) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
