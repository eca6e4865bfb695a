"""Figures a person would rather look at than read. Each returns a matplotlib Figure."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np

from .config import FeatureConfig

DB_RANGE = FeatureConfig().db_range  # one colour scale for every spectrogram; pass another for other features


def loss_curves(histories: dict[str, list[dict]]):
    """Train and validation L1 per epoch, one colour per run (solid: train, dashed: validation)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, (name, hist) in enumerate(histories.items()):
        colour = f"C{i}"
        epochs = [h["epoch"] for h in hist]
        ax.plot(epochs, [h["train_l1"] for h in hist], "-o", ms=3, color=colour, label=f"{name} train")
        ax.plot(epochs, [h["val_l1"] for h in hist], "--s", ms=3, color=colour, label=f"{name} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 (standardised)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def triptych(real_db: np.ndarray, recon_db: np.ndarray, title: str = "", db_range: tuple[float, float] = DB_RANGE):
    """The real clip, its reconstruction and |error|, all on one dB colour scale so their sizes compare."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.1), sharey=True, constrained_layout=True)
    panels = [("real clip", real_db), ("reconstruction", recon_db), ("|error|", np.abs(real_db - recon_db))]
    for ax, (name, img) in zip(axes, panels):
        im = ax.imshow(np.asarray(img), origin="lower", aspect="auto", cmap="magma", vmin=db_range[0], vmax=db_range[1])
        ax.set_title(name)
        ax.set_xlabel("frame")
    axes[0].set_ylabel("mel bin")
    fig.colorbar(im, ax=axes, label="dB", shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


def spectrogram(mel_db: np.ndarray, title: str = "", db_range: tuple[float, float] = DB_RANGE, ax=None):
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.5, 3))
    ax.imshow(np.asarray(mel_db), origin="lower", aspect="auto", cmap="magma", vmin=db_range[0], vmax=db_range[1])
    ax.set_title(title)
    ax.set_xlabel("frame")
    ax.set_ylabel("mel bin")
    return fig


def metrics_bars(report: dict, metric: str = "l1_std"):
    """The model against the baselines, one group of bars per split (lower is better)."""
    splits = list(report["splits"])
    models = list(report["splits"][splits[0]]["models"])
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(splits)
    for j, s in enumerate(splits):
        vals = [report["splits"][s]["models"][m][metric] for m in models]
        ax.bar(np.arange(len(models)) + j * width, vals, width, label=s)
    ax.set_xticks(np.arange(len(models)) + width * (len(splits) - 1) / 2, models, rotation=15)
    ax.set_ylabel({"l1_std": "L1 (standardised)", "l1_db": "L1 (dB)", "rmse_db": "RMSE (dB)"}[metric])
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def latent_map(run, cache, splits: tuple[str, ...] = ("val", "test")):
    """The held-out clips' latent vectors on their first two principal components, by recording."""
    idx = np.concatenate([cache.indices(s) for s in splits])
    z = np.concatenate([run.encode(cache.db(idx[i:i + 256])).numpy()
                        for i in range(0, len(idx), 256)])
    return latent_pca(z, cache.recordings[idx], f"{' and '.join(splits)} latents, first two principal components")


def latent_pca(z: np.ndarray, recordings: np.ndarray, title: str = "test latents, first two principal components"):
    """Where each recording's clips sit in latent space."""
    z = np.asarray(z, dtype=np.float64)
    centred = z - z.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i, rec in enumerate(sorted(set(recordings))):
        sel = recordings == rec
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, color=f"C{i % 10}", label=str(rec))
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, title="recording", markerscale=2)
    fig.tight_layout()
    return fig


def panels_png(mels: list[np.ndarray], db_range: tuple[float, float] = DB_RANGE, zoom: tuple[int, int] = (3, 4),
               gap: int = 8) -> bytes:
    """Spectrograms side by side as one colour-mapped PNG (low bins at the bottom, then a colour bar), drawn
    without a figure: a few ms where a matplotlib figure takes half a second, so a slider can redraw at once."""
    cmap, norm = plt.get_cmap("magma"), plt.Normalize(*db_range)
    tiles = [cmap(norm(np.asarray(m, dtype=np.float32)[::-1]), bytes=True) for m in mels]
    tiles = [np.repeat(np.repeat(t, zoom[0], axis=0), zoom[1], axis=1) for t in tiles]
    height = tiles[0].shape[0]
    bar = cmap(np.linspace(1.0, 0.0, height)[:, None].repeat(3 * zoom[1], axis=1), bytes=True)
    space = np.full((height, gap, 4), 255, dtype=np.uint8)
    row = [part for tile in tiles + [bar] for part in (tile, space)][:-1]
    buf = io.BytesIO()
    plt.imsave(buf, np.concatenate(row, axis=1), format="png")
    return buf.getvalue()


def db_histogram(cache, bins: int = 100):
    """Where the clamped dB values fall: the spikes at the ends are the clamp at work."""
    f = cache.features
    sample = cache.db(slice(None, None, max(1, len(cache.mels) // 2000))).ravel()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.hist(sample, bins=bins, color="C0", log=True)
    for edge in (f.db_min, f.db_max):
        ax.axvline(edge, color="C3", ls="--")
    ax.axvline(cache.mean, color="k", label=f"train mean {cache.mean:.1f} dB (std {cache.std:.1f})")
    ax.set_xlabel("dB (clamped to the dashed range)")
    ax.set_ylabel("count (log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def split_sizes(cache):
    """Clips per recording, coloured by the split the recording belongs to."""
    recs = sorted(set(cache.recordings), key=lambda r: (["train", "val", "test"].index(
        cache.splits[cache.recordings == r][0]), r))
    counts = [int((cache.recordings == r).sum()) for r in recs]
    colours = [{"train": "C0", "val": "C1", "test": "C2"}[cache.splits[cache.recordings == r][0]] for r in recs]
    fig, ax = plt.subplots(figsize=(max(5, 0.12 * len(recs) + 3), 3))
    ax.bar(range(len(recs)), counts, color=colours)
    ax.set_xticks(range(len(recs)), recs if len(recs) <= 40 else [""] * len(recs), rotation=90, fontsize=7)
    ax.set_ylabel("clips")
    ax.set_xlabel("recording (blue: train, orange: val, green: test)")
    fig.tight_layout()
    return fig


def clip_gallery(mels: list[np.ndarray], titles: list[str]):
    fig, axes = plt.subplots(1, len(mels), figsize=(3.2 * len(mels), 2.8), squeeze=False, constrained_layout=True)
    for ax, mel, title in zip(axes[0], mels, titles):
        spectrogram(mel, title, ax=ax)
    return fig


def grid(rows: dict[str, list[np.ndarray]], titles: list[str] | None = None, db_range: tuple[float, float] = DB_RANGE):
    """One row of spectrograms per name (for example, samples from each preset)."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(3.2 * n, 2.7 * len(rows)), squeeze=False, constrained_layout=True)
    for r, (name, mels) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            if c < len(mels):
                spectrogram(mels[c], f"{name}: {titles[c] if titles else c}", db_range, ax=ax)
            else:
                ax.axis("off")
    return fig


def presets_side_by_side(runs: dict, cache, index: int):
    """One clip: the real clip, then each run's reconstruction, on one colour scale, with each one's L1. The
    clip is "real clip", never "original": a run may be the `original` preset."""
    real = cache.db(index)
    panels, titles = [real], [f"real clip {cache.names[index]}"]
    for name, run in runs.items():
        rec = run.reconstruct(real).numpy()
        panels.append(rec)
        titles.append(f"{name}: L1 {np.abs(rec - real).mean() / run.stats['std']:.3f}")
    return clip_gallery(panels, titles)
