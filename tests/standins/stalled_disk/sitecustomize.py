"""A disk that stalls in the middle of a checkpoint: with this folder on PYTHONPATH, every write of last.pt's
temporary file (storage.atomic_write's `.last.pt.staging-*`) puts its first 4 KiB on disk and then hangs until
the process is killed. So a kill aimed at "while a checkpoint is being written" lands there every time."""
import pathlib
import time

STALL_AFTER = 4096
_write_bytes = pathlib.Path.write_bytes


def _stalling_write_bytes(self, data):
    if not self.name.startswith(".last.pt.staging-"):
        return _write_bytes(self, data)
    _write_bytes(self, memoryview(data)[:STALL_AFTER])
    while True:
        time.sleep(1)


pathlib.Path.write_bytes = _stalling_write_bytes
