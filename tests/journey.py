"""What the Colab and Kaggle journeys share: the code as a git repository to clone, a loopback Kaggle that
records who asked, notebooks run in real kernels of a chosen Python, with the hosts' working folder, and a
hash of a folder's every file (the attack suite's too)."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "tests" / "standins"


def tree(folder: Path, outputs: tuple[str, ...] = ()) -> dict[str, str]:
    """Everything under `folder` except the `outputs` (paths relative to it: BeetNet's own output folders),
    links not followed: file -> sha256, link -> its target, folder -> 'dir'. Equal before and after: no
    file outside the outputs was added, removed or changed (permissions prove nothing for root)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = [d for d in dirs if str((here / d).relative_to(folder)) not in outputs]
        for name in dirs + files:
            p, rel = here / name, str((here / name).relative_to(folder))
            if rel in outputs:
                continue
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def code_repository(dest: Path) -> Path:
    """A git repository of the working tree as it is (tracked and untracked files git does not ignore,
    committed or not), for the set-up cell to clone as it would clone GitHub."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the working tree"]):
        subprocess.run(git + args, cwd=dest, check=True)
    return dest


def kernel_manager(python: Path, folder: Path) -> AsyncKernelManager:
    """A kernel manager whose one kernel spec runs `python` (a venv's interpreter, as a hosted image's)."""
    spec = folder / "kernels" / "hosted"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"hosted ({python})", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)])
    return AsyncKernelManager(kernel_name="hosted", kernel_spec_manager=specs)


def outputs(nb) -> str:
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) + o.get("evalue", "")
                     for c in nb.cells for o in c.get("outputs", []))


def run_notebook(name: str, cwd: Path, env: dict[str, str], python: Path, kill_when=None,
                 kept: Path | None = None, then: str | None = None) -> str:
    """Run notebooks/NAME.ipynb in a fresh kernel of `python` whose working folder is `cwd` (the host's
    /content or /kaggle/working) and whose environment is exactly `env`; returns what it printed.
    With `kill_when` (a function), the kernel process is killed with SIGKILL once it returns true
    (a lost VM); the notebook's error is then expected and the output so far is returned. `then` is code
    run in the same kernel after the last cell (a person using what the notebook made). The executed
    notebook is kept in `kept` (default: beside `cwd`) for a person reading a failure."""
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    if then is not None:
        nb.cells.append(nbformat.v4.new_code_cell(then))
    km = kernel_manager(python, cwd.parent / f".kernelspec-{cwd.name}")
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(cwd)}})
    killed = threading.Event()

    def watch():
        while not killed.is_set():
            if km.has_kernel and kill_when():
                os.kill(km.provisioner.pid, signal.SIGKILL)
                killed.set()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True) if kill_when else None
    if watcher:
        watcher.start()
    try:
        client.execute(env=env)
    except Exception:
        if not killed.is_set():
            print(outputs(nb))
            raise
    finally:
        killed.set()
        if km.has_kernel:  # a kernel manager passed in is not shut down by the client
            run_sync(km.shutdown_kernel)(now=True)
        kept = kept or cwd.parent / "executed"
        kept.mkdir(exist_ok=True)
        nbformat.write(nb, kept / f"{len(list(kept.iterdir())):02d}-{name}.ipynb")
    return outputs(nb)


class LoopbackKaggle(http.server.BaseHTTPRequestHandler):
    """Kaggle as kagglesdk's TEST environment reaches it (127.0.0.1:7777), and the Colab runtime's
    Kaggle cache service (TBE_RUNTIME_ADDR), which answers 'not cached here' so kagglehub downloads.
    Records each request's last path part and its Authorization header."""

    zip_bytes = b""
    seen: list[tuple[str, str | None]] = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.path.rsplit("/", 1)[-1], self.headers.get("Authorization")))
        if self.path.endswith("/DownloadDataset"):
            self._send(200, "application/zip", self.zip_bytes)
        elif self.path.endswith("/GetDataset"):
            self._send(200, "application/json", json.dumps({"currentVersionNumber": 1}).encode())
        else:  # /kagglehub/datasets/is_supported and anything else
            self._send(404, "application/json", b"{}")

    def _send(self, code, ctype, data):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def zip_of(folder: Path, inside: str = "beethoven") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.glob("*.wav")):
            z.write(p, f"{inside}/{p.name}")
    return buf.getvalue()


def serve_kaggle(zip_bytes: bytes):
    """Start the loopback Kaggle; returns (handler class, server). Call server.shutdown() after."""
    LoopbackKaggle.zip_bytes, LoopbackKaggle.seen = zip_bytes, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 7777), LoopbackKaggle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return LoopbackKaggle, server
