"""One model in two processes (torchrun, gloo on the CPU): a single process's weights, exact resume, a dead rank.

On the smoke cache, 2 epochs of 22 batches of 2: each of the two ranks takes one clip of every batch. The
`original` preset (no dropout, no random moves) is compared with one process with the same global batch;
`best` (dropout, a random EQ per clip, drawn per rank) is killed, resumed and compared with a straight run.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from beetnet_utils import BeetNetError, Config, with_preset
from beetnet_utils.batches import Batches
from beetnet_utils.distributed import Group, failure, processes
from beetnet_utils.run import load_checkpoint
from beetnet_utils.session import for_folders
from beetnet_utils.train import train

ROOT = Path(__file__).parents[1]
SETTINGS = {"epochs": 2, "batch_size": 2}
# Two processes sum the two halves' gradients where one process sums one batch: the same numbers, rounded in
# another order. Measured after 44 steps: weights within 7.5e-7 of each other (the largest weight is 0.23).
WEIGHT_TOLERANCE = 1e-5


def cli(cache: Path, run: Path, preset: str) -> list[str]:
    return [sys.executable, "-m", "beetnet_utils", "train", "--profile", "smoke", "--preset", preset,
            "--cache", str(cache), "--run", str(run), "--epochs", "2", "--batch-size", "2", "--gpus", "2",
            "--device", "cpu"]


def strip_timing(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "wall", "samples_per_s")} for h in history]


def two_processes(run: Path, cache: Path, preset: str) -> list[str]:
    """A straight two-process run, through Session.train(gpus=2) as notebook 03 asks for it; the lines it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        history = for_folders("smoke", cache=cache).train(preset, run, device="cpu", gpus=2, init="scratch",
                                                          **SETTINGS)
    assert [h["epoch"] for h in history] == [1, 2]
    return printed.getvalue().splitlines()


def test_two_processes_reach_the_weights_of_one_with_the_same_global_batch(tmp_path, smoke, smoke_cache):
    run = tmp_path / "two"
    printed = two_processes(run, smoke_cache.path, "original")
    assert "22 batches of 2, in 2 processes of 1" in printed[0] and printed[1].startswith("epoch 1:")
    cfg = with_preset(smoke, "original").replace(train=SETTINGS)
    one = train(smoke_cache, tmp_path / "one", cfg, progress=False, log=lambda m: None)
    a, b = load_checkpoint(tmp_path / "one"), load_checkpoint(run)
    assert b["processes"] == 2 and a["processes"] == 1
    ranks = b["rng"]["ranks"]  # each rank draws from its own seeds (rank 0 from the run's, as one process does)
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    assert not torch.equal(ranks[0]["augment"]["eq"], ranks[1]["augment"]["eq"])
    assert torch.equal(ranks[0]["augment"]["eq"], a["rng"]["augment"]["eq"])
    assert a["model"].keys() == b["model"].keys()
    gap = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert gap < WEIGHT_TOLERANCE, gap
    for x, y in zip(one, b["history"], strict=True):
        assert x["train_l1"] == pytest.approx(y["train_l1"], rel=1e-5)
        assert x["val_l1"] == pytest.approx(y["val_l1"], rel=1e-5)


def parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return found


def rank_process(root: int, rank: int) -> int:
    """The process below `root` (the CLI, then torchrun) whose environment says RANK=`rank`."""
    parent, below, frontier = parents(), [], [root]
    while frontier:
        above = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == above]
        below += kids
        frontier += kids
    for pid in below:
        with contextlib.suppress(OSError):
            if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
    raise AssertionError(f"no rank {rank} below process {root}")


def test_a_rank_killed_mid_epoch_stops_the_job_in_one_line_and_the_run_resumes_exactly(tmp_path, smoke_cache):
    straight, run = tmp_path / "straight", tmp_path / "run"
    two_processes(straight, smoke_cache.path, "best")
    proc = subprocess.Popen(cli(smoke_cache.path, run, "best"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim = None
    for line in proc.stdout:
        if line.startswith("training on"):
            victim = rank_process(proc.pid, 1)
        if line.startswith("epoch 1:"):  # its checkpoint is written: rank 1 is in epoch 2's 22 batches
            os.kill(victim, signal.SIGKILL)
            break
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith("error: rank 1 was killed by SIGKILL; torchrun stopped the other ranks"), err
    assert load_checkpoint(run)["epoch"] == 1
    resumed = subprocess.run(cli(smoke_cache.path, run, "best"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} after epoch 1" in resumed.stdout
    a, b = load_checkpoint(straight), load_checkpoint(run)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert strip_timing(a["history"]) == strip_timing(b["history"])
    for x, y in zip(a["rng"]["ranks"], b["rng"]["ranks"], strict=True):  # dropout's and the EQ's, rank by rank
        assert torch.equal(x["torch"], y["torch"]) and torch.equal(x["augment"]["eq"], y["augment"]["eq"])


def test_what_cannot_be_shared_out_is_refused_before_torchrun_starts(smoke_cache, tmp_path):
    session = for_folders("smoke", cache=smoke_cache.path)
    with pytest.raises(BeetNetError, match="a batch of 3 does not split into 2 equal parts"):
        session.train("original", tmp_path / "run", device="cpu", gpus=2, batch_size=3)
    assert processes("all", "cpu") == 1  # every GPU: on the CPU, the one process
    with pytest.raises(BeetNetError, match="at least 1"):
        processes("0", "cpu")
    with pytest.raises(BeetNetError, match="--device cpu to train in 100000 CPU processes"):
        processes(100_000, None)
    assert processes("3", "cpu") == 3 and not (tmp_path / "run").exists()


def test_each_rank_takes_its_own_equal_part_of_every_batch_of_the_one_permutation():
    batches = Batches(45, 6, seed=3)
    for size in (1, 2, 3):
        parts = [batches.share(4, Group(rank, size)) for rank in range(size)]
        assert all(p.shape == (7, 6 // size) for p in parts)
        assert torch.equal(torch.cat(parts, dim=1), batches.epoch(4))


def test_a_failed_job_is_said_in_the_ranks_own_line_else_in_torchruns_root_cause():
    report = "Root Cause (first observed failure):\n[0]:\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 7)\n"
    assert failure(report, 1).startswith("rank 1 was killed by SIGKILL")
    assert failure(report.replace("-9", "3"), 1).startswith("rank 1 exited with code 3")
    assert failure("warning\nerror: the run folder is being written by process 12\n" + report, 1) == \
        "the run folder is being written by process 12"
    assert failure("nothing useful", 7) == "torchrun exited with code 7"


def test_when_torchrun_itself_is_killed_its_ranks_stop_and_the_line_says_so(tmp_path, smoke_cache):
    """kill -9 of torchrun's agent cannot be passed on by it: the kernel stops its ranks (PR_SET_PDEATHSIG),
    cleanly, and the launcher's one line says what happened and how to continue."""
    import time

    run = tmp_path / "run"
    args = cli(smoke_cache.path, run, "original")
    args[args.index("--epochs") + 1] = "500"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1:"):
            break
    ranks = [rank_process(proc.pid, r) for r in (0, 1)]
    agent = parents()[ranks[0]]
    os.kill(agent, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    deadline = time.time() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in ranks) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in ranks if Path(f"/proc/{pid}").exists()]
    for pid in left:  # never leave them training behind the test
        os.kill(pid, signal.SIGKILL)
    assert not left, "the ranks trained on without torchrun"
    assert proc.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith("error: torchrun was killed by SIGKILL, and its ranks were stopped with it"), err
    assert load_checkpoint(run)["epoch"] >= 1  # what they had written is intact


def test_a_run_folder_that_starts_with_a_dash_reaches_the_ranks_as_one_argument(tmp_path, smoke_cache, monkeypatch):
    """`--run=-x` is one folder: handed on as `--run=PATH`, never as `--run` and `-x`."""
    from beetnet_utils import session as sessions
    from beetnet_utils.rank import parser

    handed = []
    monkeypatch.setattr(sessions, "launch", lambda procs, args: handed.append(args))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError):  # nothing trained: the stand-in launcher wrote no history.json
        for_folders("smoke", cache=smoke_cache.path).train("original", Path("-x"), device="cpu", gpus=2)
    args = parser().parse_args(handed[0])
    assert args.run == Path("-x") and args.cache == smoke_cache.path and args.device == "cpu"
    assert Config.from_json(args.config) == for_folders("smoke", cache=smoke_cache.path).settings("original")
