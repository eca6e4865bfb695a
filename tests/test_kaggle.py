"""Kaggle Notebooks, end to end, against a stand-in: a folder for /kaggle whose input/ holds the clip
dataset, Kaggle's environment variables, and the four notebooks in real kernels whose working folder is
/kaggle/working, each on its own machine. The next notebook version has the first one's output attached as
input and resumes its run; notebook 04 evaluates what version 2 trained. input/ is hashed before and after
every notebook: Kaggle mounts it read-only, but chmod does not stop root. Also the GPU decision for Kaggle's
P100, with the capability passed in."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from beetnet_utils import BeetNetError, download, get_config, runtime
from beetnet_utils import session as sessions
from beetnet_utils.config import DEFAULT_PRESET, FINETUNED

from journey import code_repository, run_notebook, tree

PYTHON = Path(sys.executable)  # the kernels run in this venv: only Colab's image is mirrored (.venv-colab)


def read_only(folder: Path) -> None:
    for p in [*folder.rglob("*"), folder]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def kaggle_vm(root: Path, inputs: dict[str, Path]) -> Path:
    """A fresh /kaggle: empty working/ and temp/, and `inputs` attached read-only under input/."""
    kaggle = root / "kaggle"
    if kaggle.exists():
        for p in kaggle.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(kaggle)
    for d in ("working", "temp", "input"):
        (kaggle / d).mkdir(parents=True)
    for name, src in inputs.items():
        shutil.copytree(src, kaggle / "input" / name)
        read_only(kaggle / "input" / name)
    return kaggle


def test_the_four_notebooks_in_kaggle_read_the_attached_dataset_in_place_resume_and_leave_input_alone(tmp_path):
    clips = download("demo", tmp_path / "demo", get_config("smoke"), progress=False)
    dataset = tmp_path / "dataset"  # as Kaggle mounts alexzyukov/beethoven: clips one folder down
    shutil.copytree(clips.path, dataset / "beethoven", ignore=shutil.ignore_patterns("*.json"))
    kaggle = tmp_path / "kaggle"
    env = {
        "PATH": f"{PYTHON.parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "KAGGLE_KERNEL_RUN_TYPE": "Interactive",
        "KAGGLE_URL_BASE": "https://www.kaggle.com", "BEETNET_CODE_URL": str(code_repository(tmp_path / "code")),
        "BEETNET_PROFILE": "smoke", "BEETNET_SOURCE": "kaggle", "BEETNET_PRESET": DEFAULT_PRESET,
        "BEETNET_KAGGLE_ROOT": str(kaggle),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}  # Kaggle's 4 CPUs; 1 when tests share the cores

    def notebook(name: str, inputs: dict[str, Path], **settings: str) -> str:
        """`name` on a new machine with `inputs` attached; input/ the same, byte for byte, afterwards."""
        kaggle_vm(tmp_path, inputs)
        before = tree(kaggle / "input")
        assert before, "nothing attached"
        said = run_notebook(name, kaggle / "working", env | settings, PYTHON, kept=tmp_path / "executed")
        assert tree(kaggle / "input") == before, f"{name} changed a file under /kaggle/input"
        return said

    def save_version(output: Path) -> Path:
        """What "Save Version" keeps: /kaggle/working (without the clone of the code)."""
        shutil.copytree(kaggle / "working", output, ignore=shutil.ignore_patterns("beetnet"))
        return output

    # version 1: download (nothing to fetch), the cache, then a training cut short by a time budget
    said = notebook("01_download", {"beethoven": dataset})
    assert "running on: Kaggle Notebooks" in said and "profile:    smoke (source kaggle" in said
    assert f"{clips.clips} clips from {len(clips.recordings)} recordings" in said
    assert f"in {kaggle / 'input' / 'beethoven' / 'beethoven'} [source: kaggle (attached dataset)" in said
    assert not (kaggle / "working" / "beetnet_data" / "clips").exists()  # read in place: no copies, no links
    said = notebook("02_preprocess_cache", {"beethoven": dataset})
    cache = json.loads((kaggle / "temp" / "beetnet" / "cache" / "meta.json").read_text())  # in temp/, not working/
    assert cache["clips_dir"] == str(kaggle / "input" / "beethoven" / "beethoven")
    assert not (kaggle / "working" / "beetnet_data" / "clips").exists()
    said = notebook("03_train_gpu", {"beethoven": dataset}, BEETNET_MINUTES="0.0001")
    assert "no mel cache on this machine (each notebook has its own): building it" in said
    run = kaggle / "working" / "beetnet_data" / "runs" / f"smoke-{FINETUNED}"  # 03 fine-tunes the pretrained best
    assert len(json.loads((run / "history.json").read_text())) == 1
    first = save_version(tmp_path / "version-1-output")

    # version 2, on a new machine: the dataset and version 1's output attached
    said = notebook("03_train_gpu", {"beethoven": dataset, "beetnet-train": first})
    assert f"an earlier version's run was attached as input: copied to {run} to resume it" in said
    assert f"resuming {run} after epoch 1" in said
    assert len(json.loads((run / "history.json").read_text())) == 2
    attached = kaggle / "input" / "beetnet-train" / "beetnet_data" / "runs" / run.name / "history.json"
    assert len(json.loads(attached.read_text())) == 1  # the input is left as it was
    second = save_version(tmp_path / "version-2-output")

    # notebook 04 on its own machine, version 2's output attached: it evaluates the run trained there
    said = notebook("04_evaluate", {"beethoven": dataset, "beetnet-train": second})
    assert f"models: {FINETUNED}, pretrained; the views below use {FINETUNED} ({run})" in said
    history = json.loads((run / "history.json").read_text())
    best = min(history, key=lambda h: h["val_l1"])["epoch"]  # of the two epochs, versions 1 and 2
    report = json.loads((run.parent / "report.json").read_text())
    assert list(report["runs"]) == [FINETUNED, "pretrained"]
    assert report["runs"][FINETUNED]["path"] == str(run) and report["runs"][FINETUNED]["epoch"] == best


def test_kaggle_is_detected_from_either_variable_and_defaults_to_the_full_profile(tmp_path):
    for var in ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_DATA_PROXY_URL"):
        env = runtime.detect({var: "x", "BEETNET_KAGGLE_ROOT": str(tmp_path)}, {})
        assert env.in_kaggle and not env.in_colab and env.hosted and "Kaggle Notebooks" in env.describe()
    assert not runtime.detect({}, {}).in_kaggle
    s = sessions.start(environ={"KAGGLE_KERNEL_RUN_TYPE": "Batch", "BEETNET_KAGGLE_ROOT": str(tmp_path)})
    assert s.config.profile == "full" and s.config.data.source == "kaggle"
    p = runtime.paths(env, source="kaggle")  # nothing attached: the clips are fetched into working/
    assert p.clips == tmp_path / "working" / "beetnet_data" / "clips" and not p.clips_attached
    assert p.cache == tmp_path / "temp" / "beetnet" / "cache" and p.runs.parent.parent == tmp_path / "working"


@pytest.mark.parametrize("capability, arch, usable", [
    ((7, 5), ["sm_75", "sm_80", "sm_86", "sm_90"], True),  # T4
    ((6, 0), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], False),  # P100 with a recent torch
    ((6, 0), ["sm_50", "sm_60", "sm_70"], True),
    ((8, 9), ["sm_80", "compute_80"], True),  # no sm_89 code, but PTX of an older one
    ((7, 0), ["sm_80", "compute_80"], False),  # PTX only of a newer one
])
def test_a_gpu_that_this_torch_cannot_run_is_recognised(capability, arch, usable):
    assert runtime.gpu_supported(capability, arch) is usable


def test_a_p100_gives_the_cpu_with_a_one_line_warning_or_a_clear_error_when_cuda_is_asked_for():
    recent = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    with pytest.warns(UserWarning) as warned:
        assert runtime.pick_device(capability=(6, 0), arch_list=recent) == torch.device("cpu")
    assert len(warned) == 1 and "\n" not in str(warned[0].message) and "T4 x2" in str(warned[0].message)
    with pytest.raises(BeetNetError, match="sm_60.*T4 x2.*--device cpu") as e:
        runtime.pick_device("cuda", capability=(6, 0), arch_list=recent)
    assert "\n" not in str(e.value)
    assert runtime.pick_device(capability=(7, 5), arch_list=recent) == torch.device("cuda")  # a T4: no fuss


def test_an_attached_run_is_copied_writable_once_and_never_over_a_run_already_in_working(tmp_path):
    env = runtime.detect({"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "BEETNET_KAGGLE_ROOT": str(tmp_path)}, {})
    earlier = tmp_path / "input" / "beetnet-train" / "beetnet_data" / "runs"
    for name in ("smoke-best", "smoke-original"):
        (earlier / name).mkdir(parents=True)
        (earlier / name / "last.pt").write_bytes(name.encode())
    (earlier.parent / "clips").mkdir()  # not a run: no last.pt, not inside runs/
    read_only(tmp_path / "input")
    runs = tmp_path / "working" / "beetnet_data" / "runs"
    (runs / "smoke-original").mkdir(parents=True)
    (runs / "smoke-original" / "last.pt").write_bytes(b"newer")
    assert runtime.adopt_attached_runs(env, runs) == [runs / "smoke-best"]
    assert (runs / "smoke-best" / "last.pt").read_bytes() == b"smoke-best"
    (runs / "smoke-best" / "last.pt").write_bytes(b"trained on")  # writable: training can go on
    assert (runs / "smoke-original" / "last.pt").read_bytes() == b"newer"
    assert runtime.adopt_attached_runs(env, runs) == []  # already there: not copied again
    assert runtime.attached_clips(tmp_path / "input") is None  # no clips attached
