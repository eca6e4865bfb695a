"""Several processes, one model: torchrun's ranks, what they share, and the launcher a notebook uses.

`torchrun` starts one process per GPU (NCCL) or per CPU share (gloo) and tells each its place in the
environment (RANK, WORLD_SIZE, LOCAL_RANK). `joined` turns that into a `Group`, which is all the training
loop asks of the other ranks: sums, rank 0's objects, everyone's objects, and gradients averaged by
DistributedDataParallel. One process is the same code with a group of one.

`launch` runs `torchrun -m beetnet_utils train ...` as a subprocess and streams its lines: a notebook
must never fork its own kernel (forking a CUDA process breaks in Kaggle and Colab). When a rank dies,
torchrun stops the others at once (its agent checks its processes every 0.1 s and sends them SIGTERM),
and a rank blocked on a collective that never completes gives up after COLLECTIVE_TIMEOUT; `launch`
then raises one line saying which rank stopped and how, and the run resumes from its last checkpoint.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .storage import BeetNetError

# The longest a rank waits on the others at a collective: rank 0 writing a checkpoint (to Drive, seconds)
# while the others wait at the next epoch's first gradient sum is the longest legitimate wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=5)
RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks, and the few collectives training needs (no-ops for one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, writes the run folder and holds its lock."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This rank's contiguous share of n items (the shares differ by one at most)."""
        return range(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the ranks, in place."""
        if self.size > 1:
            dist.all_reduce(t)
        return t

    def share(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (what it decided, so that every rank decides the same)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train through: `model` itself, or DistributedDataParallel around it, which starts
        every rank from rank 0's weights and averages the gradients over the ranks in backward."""
        if self.size == 1:
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


SINGLE = Group()


def rank() -> int:
    """This process's rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def in_torchrun(environ: dict[str, str] | None = None) -> bool:
    """Is this process one of several ranks that torchrun started?"""
    return int((os.environ if environ is None else environ).get("WORLD_SIZE", "1")) > 1


PR_SET_PDEATHSIG = 1  # prctl(2)


def stop_with_parent() -> None:
    """Have the kernel send this rank SIGTERM (a clean stop: checkpoints intact) when torchrun's agent dies, even
    by SIGKILL, which the agent cannot pass on: its ranks would otherwise train on to the end, unseen."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the agent died before the call
            os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def joined(device: torch.device) -> Iterator[tuple[Group, torch.device]]:
    """This process's group and device: one process as it is, or, under torchrun, its rank in a process group
    (NCCL on CUDA, each rank on its own GPU; gloo on the CPU), left when training ends or fails."""
    if not in_torchrun():
        yield SINGLE, device
        return
    group = Group(*(int(os.environ[name]) for name in RANK_ENV))
    stop_with_parent()
    if device.type == "cuda":
        if group.local_rank >= torch.cuda.device_count():
            raise BeetNetError(f"rank {group.rank} wants GPU {group.local_rank}, but {torch.cuda.device_count()} "
                               "are visible: start at most one process per GPU")
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield group, device
    finally:
        dist.destroy_process_group()


def processes(gpus: int | str, device: str | None) -> int:
    """How many processes `gpus` asks for: a number, or "all": every visible GPU, one process each (one process
    when none is visible or `device` is "cpu", so that a notebook may always ask for "all"). With `device` "cpu"
    a number is of CPU processes (gloo), which is how the tests train in several processes without a GPU."""
    if gpus == "all":
        return torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 1
    try:
        n = int(gpus)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise BeetNetError(f"--gpus {gpus}: give a whole number of processes, at least 1, or 'all'")
    if n > 1 and device != "cpu":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible < n:
            raise BeetNetError(f"--gpus {n}: {visible} CUDA GPU(s) visible; use --gpus {max(visible, 1)}, or "
                               f"--device cpu to train in {n} CPU processes")
    return n


_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?error: (.+)$", re.MULTILINE)  # a rank's one-line errors (cli.guarded)
_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.DOTALL)


def failure(output: str, returncode: int) -> str:
    """One line for a torchrun job that failed, from its output: a rank's own error line ("error: ..."),
    else the rank torchrun names as the first to stop, and how it stopped."""
    if m := _ERROR_LINE.search(output):
        return m[1].strip()
    if m := _ROOT_CAUSE.search(output):
        rank, code = int(m[1]), int(m[2])
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return (f"rank {rank} {how}; torchrun stopped the other ranks. Every checkpoint written is intact: "
                "run the same command again to resume from the last one")
    if returncode < 0:
        return (f"torchrun was killed by {signal.Signals(-returncode).name}, and its ranks were stopped with it. "
                "Every checkpoint written is intact: run the same command again to resume from the last one")
    return f"torchrun exited with code {returncode}"


def launch(procs: int, args: list[str], log: Callable[[str], None] = print) -> None:
    """Run `python -m beetnet_utils.rank ARGS` (one rank of a training) in `procs` processes under torchrun,
    each line of their output passed to `log` as it comes; a failure is one BeetNetError line (torchrun's
    own report is kept in a file the line names). torchrun is this interpreter's `python -m
    torch.distributed.run` (a `torchrun` on PATH may be another Python's); --standalone picks a free port,
    so jobs never collide."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
           "-m", "beetnet_utils.rank", "--", *args]  # "--": torchrun would read --run as its --run-path
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # lines as they are printed, not when a buffer fills
    with tempfile.NamedTemporaryFile("w+", prefix="beetnet-torchrun-", suffix=".log", delete=False) as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        try:
            for line in proc.stdout:
                log(line.rstrip("\n"))
            code = proc.wait()
        except BaseException:  # Ctrl-C, or the kernel interrupted: torchrun stops its ranks on SIGTERM
            proc.terminate()
            proc.wait()
            raise
        errors.seek(0)
        output = errors.read()
    if code == 0:
        Path(errors.name).unlink(missing_ok=True)
        return
    raise BeetNetError(f"{failure(output, code)} (torchrun's output: {errors.name})")
