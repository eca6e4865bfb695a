"""Figures a person would rather look at than read. Each returns a matplotlib Figure."""
from __future__ import annotations

import matplotlib

matplotlib.use(matplotlib.get_backend())  # keep whatever the notebook or Agg chose
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
