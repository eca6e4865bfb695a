from pathlib import Path

import numpy as np
import pytest

from beetnet_utils import runtime


def test_colab_detected_from_environment_or_module():
    assert runtime.detect({"COLAB_RELEASE_TAG": "release-x"}, {}).in_colab
    assert runtime.detect({}, {"google.colab": object()}).in_colab
    assert not runtime.detect({}, {}).in_colab


def test_colab_paths_put_runs_on_drive_and_cache_on_local_disk():
    env = runtime.Environment(in_colab=True, gpu_name="Tesla T4")
    p = runtime.paths(env)
    assert str(p.runs).startswith("/content/drive/MyDrive/beetnet")
    assert str(p.cache).startswith("/content/beetnet") and not str(p.cache).startswith("/content/drive")
    assert p.cache_archive is not None and str(p.cache_archive).startswith("/content/drive")
    assert env.is_t4 and "T4" in env.describe()


def test_local_paths_and_home_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = runtime.paths(runtime.Environment(in_colab=False, gpu_name=None))
    assert local.runs.parent == local.cache.parent == tmp_path / "beetnet_data" and local.cache_archive is None
    env = runtime.detect({"BEETNET_HOME": str(tmp_path / "h"), "COLAB_RELEASE_TAG": "x"}, {})
    assert runtime.paths(env).runs == tmp_path / "h" / "runs"


def test_not_a_t4_is_said():
    env = runtime.Environment(in_colab=True, gpu_name="NVIDIA A100-SXM4-40GB")
    assert not env.is_t4 and "not a T4" in env.describe()
    assert "CPU" in runtime.Environment(in_colab=False, gpu_name=None).describe()


def test_mount_drive_is_a_no_op_outside_colab():
    assert runtime.mount_drive(runtime.Environment(in_colab=False, gpu_name=None)) is False


def test_cuda_asked_for_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        assert runtime.pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            runtime.pick_device("cuda")
    assert runtime.pick_device("cpu").type == "cpu"


def test_cache_backup_and_restore_after_a_disconnect(tmp_path):
    cache = tmp_path / "local" / "cache"
    cache.mkdir(parents=True)
    np.save(cache / "mels.npy", np.arange(12, dtype=np.float16))
    (cache / "meta.json").write_text('{"beetnet": "cache"}')  # its marker
    archive = runtime.backup_cache(cache, tmp_path / "drive" / "cache.tar")
    assert archive.is_file() and not list(archive.parent.glob(".*tmp"))
    import shutil

    shutil.rmtree(tmp_path / "local")  # the VM was recycled
    assert runtime.restore_cache(archive, cache)
    assert np.array_equal(np.load(cache / "mels.npy"), np.arange(12, dtype=np.float16))
    assert not runtime.restore_cache(archive, cache)  # already there: nothing to do


def test_a_cache_restored_on_a_new_vm_is_staged_beside_its_target_never_in_the_system_temp(tmp_path, monkeypatch):
    """/tmp and the cache's disk may be different file systems on a real host: a rename between them fails
    (EXDEV). So the parent is made first and the archive unpacked beside the cache, then renamed in place."""
    import tempfile

    cache = tmp_path / "local" / "cache"
    cache.mkdir(parents=True)
    (cache / "meta.json").write_text('{"beetnet": "cache"}')  # its marker
    archive = runtime.backup_cache(cache, tmp_path / "drive" / "cache.tar")
    import shutil

    shutil.rmtree(tmp_path / "local")  # a new VM: not even the cache's parent folder is there
    staged, real_mkdtemp = [], tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: staged.append(Path(real_mkdtemp(*a, **k))) or staged[-1])
    assert runtime.restore_cache(archive, cache)
    assert (cache / "meta.json").read_text() == '{"beetnet": "cache"}'
    assert staged and all(p.parent == cache.parent for p in staged), staged
    assert sorted(p.name for p in cache.parent.iterdir()) == ["cache"]  # the staging folder is gone
