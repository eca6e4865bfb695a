"""Stand-in for `google.colab.drive`: the mount shows a local folder as MyDrive."""
import os
import time

from google.colab import _log


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    mode = os.environ.get("COLAB_STANDIN_DRIVE_MODE", "ok")
    _log(f"drive.mount {mountpoint} {mode}")
    if mode == "fail":
        raise ValueError("mount failed")
    if mode == "timeout":
        time.sleep(min(timeout_ms / 1000, 0.5))
        raise ValueError("Timed out waiting for the Drive mount")
    os.makedirs(mountpoint, exist_ok=True)
    link = os.path.join(mountpoint, "MyDrive")
    if not os.path.lexists(link):
        os.symlink(os.environ["COLAB_STANDIN_DRIVE"], link)
    print(f"Mounted at {mountpoint}")
