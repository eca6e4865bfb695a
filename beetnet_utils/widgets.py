"""Interactive views (ipywidgets): compare a clip with its reconstruction, and walk between two clips.

Each view's callbacks are plain methods that update plain widget values (an Image's PNG
bytes, an Audio's WAV bytes, an HTML readout), so tests drive them without a browser.
A slider move only decodes, draws (`plots.panels_png`, not a matplotlib figure) and inverts:
the slow part, refining codes, is done for a window of clips or a pair of clips at a time, and
the compare view refines (and renders) ahead of the slider in a background thread.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ipywidgets as W
import numpy as np
import torch

from . import plots
from .audio import mel_to_audio, wav_bytes
from .cache import MelCache
from .evaluate import metrics
from .features import load_clip
from .generate import mix_codes
from .run import Run


def _player(label: str) -> tuple[W.Audio, W.VBox]:
    audio = W.Audio(format="wav", autoplay=False, loop=False)
    return audio, W.VBox([W.HTML(f"<b>{label}</b>"), audio])


def _caption(titles: list[str], db_range: tuple[float, float]) -> str:
    """What the panels of `plots.panels_png` are, left to right, and what the colour bar spans."""
    return (f"<small>left to right: {', '.join(titles)}; low mel bins at the bottom; colour bar "
            f"{db_range[0]:g} dB (dark) to {db_range[1]:g} dB (bright)</small>")


class Refiner:
    """A compare view's clips of one recording, refined in windows and rendered on one worker thread.

    A clip not yet refined is refined with the WINDOW clips nearest it, in one batch. With `background`
    the worker also keeps ahead of the slider: it refines the next window once the slider comes within
    WINDOW / 2 clips of its start, and while the slider rests it renders the audio of the refined clips
    ahead; so a slider move mostly only looks things up and draws. A refinement that fails is queued again
    by a later move that needs one of its clips, TRIES times in all (a failure that lasts, out of memory
    say, then stays failed instead of being retried forever). No widgets here: `slider` gives the chosen
    clips (cache indices, in clip order) and the slider's position among them, `drawn` when the view's last
    drawing ended (monotonic s; inf while one draws).
    """

    WINDOW = 16  # clips refined together: 16 take 1.4 times as long as one (1.1 s against 0.8 s on 2 cores)
    REST = 0.2  # s the slider must rest before the worker renders ahead: a slider on the move renders itself
    TRIES = 3  # times a clip's refinement is queued before its failure is final

    def __init__(self, run: Run, cache: MelCache, n_iter: int, slider: Callable[[], tuple[np.ndarray, int]],
                 drawn: Callable[[], float], background: bool = True):
        self.run, self.cache, self.n_iter, self.background = run, cache, n_iter, background
        self.slider, self.drawn = slider, drawn
        # For the chosen recording, by cache index: reconstruction dB; (oracle, reconstruction) WAV
        # bytes; the refinement that makes (or made) the reconstruction.
        self._recons: dict[int, np.ndarray] = {}
        self._audio: dict[int, tuple[bytes, bytes]] = {}
        self._queued: dict[int, Future] = {}
        self._tries: dict[int, int] = {}  # times each clip's refinement was queued
        self._windows = 0  # windows queued so far: background rendering gives way when it grows
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beetnet-refine")

    def reset(self) -> None:
        """A new recording: forget the old one's clips and cancel its refinements not yet started."""
        for future in set(self._queued.values()):
            future.cancel()  # one already running fills the old dicts, now unused
        self._recons, self._audio, self._queued, self._tries = {}, {}, {}, {}

    def refined(self, i: int) -> np.ndarray | None:
        """Clip i's reconstruction if its window is refined, else None (never waits)."""
        return self._recons.get(i)

    def tries(self, i: int) -> int:
        return self._tries.get(i, 0)

    def _render(self, i: int, recon: np.ndarray) -> tuple[bytes, bytes]:
        """Clip i's oracle (its own mel) and reconstruction as WAV bytes, inverted in one batch: faster."""
        both = mel_to_audio(np.stack([self.cache.db(i), recon]), self.cache.features,
                            self.n_iter)
        sr = self.cache.features.sample_rate
        return wav_bytes(both[0], sr), wav_bytes(both[1], sr)

    def audio(self, i: int, recon: np.ndarray) -> tuple[bytes, bytes]:
        """Clip i's (oracle, reconstruction) WAV bytes: rendered ahead, or now."""
        if i not in self._audio:
            self._audio[i] = self._render(i, recon)
        return self._audio[i]

    def _pending(self, i: int) -> Future | None:
        """The refinement that makes (or made) clip i; None if there is none to wait for: never queued, or
        failed with tries left, so that the caller queues it again."""
        future = self._queued.get(i)
        failed = future is not None and future.done() and not future.cancelled() and future.exception() is not None
        return None if failed and self.tries(i) < self.TRIES else future

    def _queue(self, k: int, after: threading.Event | None = None) -> Future:
        """On the worker thread: refine the WINDOW clips nearest the k-th (it, those ahead, then those
        behind) not yet queued (or failed, with tries left), once `after` is set (the drawing that asked for
        it is done); then render the audio of refined clips ahead of the slider, nearest first, until a newer
        window is queued. Returns the refinement, which stores its own results."""
        sel, _ = self.slider()
        ordered = np.concatenate([sel[k:], sel[:k][::-1]])
        window = [int(j) for j in ordered if self._pending(int(j)) is None][:self.WINDOW]
        for j in window:
            self._tries[j] = self.tries(j) + 1
        recons, audio = self._recons, self._audio
        self._windows += 1
        this = self._windows

        def refine() -> None:
            if after is not None:
                after.wait()
            recons.update(zip(window, self.run.reconstruct(self.cache.db(window)).numpy()))

        def render_ahead() -> None:
            while this == self._windows:
                if time.monotonic() < self.drawn() + self.REST:  # a slider on the move: keep the cores free
                    time.sleep(0.02)
                    continue
                _, at = self.slider()
                todo = [int(j) for j in sel[at + 1:] if j in recons and j not in audio]
                if not todo:
                    return
                audio[todo[0]] = self._render(todo[0], recons[todo[0]])

        future = self._executor.submit(refine)
        self._queued.update(dict.fromkeys(window, future))
        if self.background:
            self._executor.submit(render_ahead)
        return future

    def refinement(self, i: int, after: threading.Event | None = None) -> Future:
        """The refinement that makes (or made) clip i of the chosen clips: the one queued, or its window
        queued now, to start once `after` is set."""
        sel, _ = self.slider()
        return self._pending(i) or self._queue(int(np.flatnonzero(sel == i)[0]), after)

    def reconstruction(self, i: int) -> np.ndarray:
        """Clip i's reconstruction: ready if its window was refined ahead; otherwise wait for that window
        (queued now, or already on the worker thread)."""
        if i not in self._recons:
            self.refinement(i).result()  # re-raises the refinement's error, if any
        return self._recons[i]

    def refine_ahead(self) -> None:
        """Queue the next window once any of the WINDOW / 2 clips after the current one is not queued: the
        worker has 8 moves to refine it (1.1-1.6 s), and renders the audio ahead first."""
        sel, k = self.slider()
        ahead = sel[k + 1:k + 1 + self.WINDOW // 2]
        missing = [n for n, j in enumerate(ahead, start=k + 1) if self._pending(int(j)) is None]
        if missing:
            self._queue(missing[0])

    def wait_for_refinement(self) -> None:
        """Block until the work queued so far is done (a person's pace, for tests)."""
        self._executor.submit(lambda: None).result()


class CompareView:
    """Pick a split, a recording and a clip; see and hear the real clip, its reconstruction and the inversion alone.

    The slow part, refining codes, is the `refiner`'s. With `background` (the default) it keeps ahead of the
    clip slider on its worker thread; a move that lands on a clip not yet refined (a jump, a new recording)
    is drawn at once from the encoder's code, marked as such, and drawn again from the worker when the
    clip's window is refined. Without `background`, such a move waits for its window. A refinement that
    failed for good stays on the readout.
    """

    def __init__(self, run: Run, cache: MelCache, n_iter: int = 32, background: bool = True):
        self.run, self.cache, self.background = run, cache, background
        self._drawn = 0.0  # when the last update finished drawing (monotonic s; inf while one draws)
        self._lock = threading.RLock()  # one drawing at a time: a slider update or the worker's redraw
        self.refiner = Refiner(run, cache, n_iter, lambda: (self.selection(), self.clip.value),
                               lambda: self._drawn, background)
        self.features = cache.features
        self.clips_dir = Path(cache.meta["clips_dir"])
        self.split = W.Dropdown(options=["test", "val", "train"], value="test", description="split")
        self.recording = W.Dropdown(description="recording")
        self.clip = W.IntSlider(min=0, max=0, value=0, description="clip", continuous_update=False)
        self.image = W.Image(format="png")
        self.readout = W.HTML()
        self.original_audio, orig_box = _player("real clip")
        self.recon_audio, recon_box = _player("reconstruction")
        self.oracle_audio, oracle_box = _player("inversion only: the real clip's own mel, inverted (what the "
                                                "inversion alone does, with no model)")
        # each player under its own image (real clip | reconstruction | error); the inversion alone apart
        self.widget = W.VBox([W.HBox([self.split, self.recording, self.clip]), self.readout, self.image,
                              W.HBox([orig_box, recon_box]), oracle_box])
        self.split.observe(lambda _: self._recordings(), names="value")
        self.recording.observe(lambda _: self._clips(), names="value")
        self.clip.observe(lambda _: self.show(), names="value")
        self._recordings()

    @property
    def n_iter(self) -> int:
        """Griffin-Lim iterations of the sounds: the refiner's, so that setting it here reaches the worker."""
        return self.refiner.n_iter

    @n_iter.setter
    def n_iter(self, n_iter: int) -> None:
        self.refiner.n_iter = n_iter

    def _recordings(self) -> None:
        recs, before = sorted(set(self.cache.recordings[self.cache.indices(self.split.value)])), self.recording.value
        self.recording.options = recs
        if recs and self.recording.value not in recs:
            self.recording.value = recs[0]
        if self.recording.value == before:  # otherwise its observer has shown the new clips (once, not twice)
            self._clips()

    def _clips(self) -> None:
        self.refiner.reset()
        with self.clip.hold_trait_notifications():
            self.clip.max = max(len(self.selection()) - 1, 0)
            self.clip.value = min(self.clip.value, self.clip.max)
        self.show()

    def selection(self) -> np.ndarray:
        """Cache indices of the chosen split and recording, in clip order."""
        idx = self.cache.indices(self.split.value)
        return idx[self.cache.recordings[idx] == self.recording.value]

    def current(self) -> int:
        return int(self.selection()[self.clip.value])

    def reconstruction(self, i: int) -> np.ndarray:
        """Clip i's reconstruction, waiting for its window if it is not refined yet."""
        return self.refiner.reconstruction(i)

    def wait_for_refinement(self) -> None:
        """Block until the background work queued so far is done (a person's pace, for tests)."""
        self.refiner.wait_for_refinement()

    def show(self) -> dict:
        """Draw the chosen clip; returns what was shown (name, L1, refined or not) for callers and tests."""
        if not len(self.selection()):
            return {}
        with self._lock:
            i = self.current()
            refining = self.run.config.model.refine_steps > 0 and self.refiner.refined(i) is None
            if not (self.background and refining):
                shown = self._drawing(i, self.reconstruction(i))  # may wait for its window
            else:  # at once from the encoder's code; the worker draws it again when its window is refined
                drawn = threading.Event()
                future = self.refiner.refinement(i, after=drawn)
                try:
                    plain = self.run.reconstruct(self.cache.db(i), refine=False).numpy()
                    shown = self._drawing(i, plain, refined=False)
                finally:
                    drawn.set()  # now the refinement may take the cores
                future.add_done_callback(lambda f: self._redraw(i, f))  # at once, here, if it is already done
            if self.background:
                self.refiner.refine_ahead()
            return shown

    def _redraw(self, i: int, refinement: Future) -> None:
        """Clip i's window is refined: draw it again if it is still the one shown, or say why it failed.
        Skipped if an update is drawing: that update draws the clip now chosen, with what is refined by then."""
        if refinement.cancelled() or not self._lock.acquire(blocking=False):
            return
        try:
            if not len(self.selection()) or self.current() != i:
                return
            if refinement.exception() is not None:
                exc, name = refinement.exception(), self.cache.names[i]
                tried = self.refiner.tries(i)
                then = "a later move tries again" if tried < self.refiner.TRIES else f"gave up after {tried} tries"
                self.readout.value = (f"<span class='beetnet-readout' data-clip='{name}' data-refined='0'>refining "
                                      f"clip <b>{name}</b> failed: {type(exc).__name__}: {exc}; {then}</span>")
            elif (recon := self.refiner.refined(i)) is not None:
                self._drawing(i, recon)
        finally:
            self._lock.release()

    def _drawing(self, i: int, recon: np.ndarray, refined: bool = True) -> dict:
        self._drawn = float("inf")  # the worker does not start rendering ahead meanwhile
        try:
            return self._draw(i, recon, refined)
        finally:
            self._drawn = time.monotonic()

    def _draw(self, i: int, recon: np.ndarray, refined: bool) -> dict:
        name, sr = self.cache.names[i], self.features.sample_rate
        original = self.cache.db(i)
        m = metrics(recon, original, self.run.stats["std"])
        code = "" if refined else " from the encoder's code, <i>refining…</i>"
        self.readout.value = (f"<span class='beetnet-readout' data-clip='{name}' data-l1='{m['l1_std']:.4f}' "
                              f"data-refined='{int(refined)}'>clip <b>{name}</b>: L1 {m['l1_std']:.4f} "
                              f"(standardised), {m['l1_db']:.2f} dB{code}</span><br>"
                              + _caption(["real clip", "reconstruction", "|error|"], self.features.db_range))
        self.image.value = plots.panels_png([original, recon, np.abs(original - recon)], self.features.db_range)
        wav = load_clip(self.clips_dir / name, self.features)[0]
        self.original_audio.value = wav_bytes(wav.numpy(), sr) if wav is not None else b""
        if not refined:  # the oracle alone: the reconstruction's sound comes with its refined code
            self.oracle_audio.value, self.recon_audio.value = wav_bytes(mel_to_audio(original, self.features,
                                                                                     self.n_iter), sr), b""
        else:
            self.oracle_audio.value, self.recon_audio.value = self.refiner.audio(i, recon)
        return {"name": name, "index": i, "l1_std": m["l1_std"], "l1_db": m["l1_db"], "refined": refined}


class InterpolateView:
    """Two clips and an alpha slider: the decoded mix of their latents, seen and heard."""

    def __init__(self, run: Run, cache: MelCache, split: str = "test", n_iter: int = 32):
        self.run, self.cache, self.n_iter = run, cache, n_iter
        idx = cache.indices(split)
        names = [cache.names[i] for i in idx]
        self.index = dict(zip(names, idx))
        far = names[len(names) // 2] if len(names) > 1 else names[0]
        self.a = W.Dropdown(options=names, value=names[0], description="clip A")
        self.b = W.Dropdown(options=names, value=far, description="clip B")
        self.alpha = W.FloatSlider(min=0.0, max=1.0, step=0.05, value=0.5, description="alpha",
                                   continuous_update=False)
        self.mode = W.ToggleButtons(options=["linear", "spherical"], value="linear")
        self.image = W.Image(format="png")
        self.readout = W.HTML()
        self.audio, box = _player("the mix")
        self.widget = W.VBox([W.HBox([self.a, self.b]), W.HBox([self.alpha, self.mode]), self.readout,
                              self.image, box])
        for w in (self.a, self.b, self.alpha, self.mode):
            w.observe(lambda _: self.show(), names="value")
        self._pair = None
        self.show()

    def codes(self) -> tuple[torch.Tensor, np.ndarray]:
        """Clips A and B's codes (refined: the slow part) and reconstructions, once per pair, so that moving
        alpha only decodes."""
        pair = (self.a.value, self.b.value)
        if pair != self._pair:
            z = self.run.encode(self.cache.db(np.array([self.index[n] for n in pair])))
            self._pair, self._codes, self._ends = pair, z, self.run.decode(z).numpy()
        return self._codes, self._ends

    def show(self) -> np.ndarray:
        z, ends = self.codes()
        mix = self.run.decode(mix_codes(z[0], z[1], [self.alpha.value], self.mode.value))[0].numpy()
        self.readout.value = (f"<span class='beetnet-readout' data-alpha='{self.alpha.value:.2f}'>"
                              f"{(1 - self.alpha.value):.2f} × {self.a.value} + {self.alpha.value:.2f} × "
                              f"{self.b.value} ({self.mode.value})</span><br>"
                              + _caption(["A", "the mix", "B"], self.cache.features.db_range))
        self.image.value = plots.panels_png([ends[0], mix, ends[1]], self.cache.features.db_range)
        features = self.cache.features
        self.audio.value = wav_bytes(mel_to_audio(mix, features, self.n_iter), features.sample_rate)
        return mix
