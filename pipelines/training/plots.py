"""Figures of a run: matplotlib without a display, PNGs written atomically, training curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg")  # must precede importing pyplot
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as a PNG through a temporary file (readers never see half a
    file) and close it.

    Args:
        fig: the figure.
        path: the PNG to write.
        dpi: its resolution.
    """
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    os.replace(tmp, path)


def plot_curves(history: dict[str, list[float]], path: Path, title: str = "",
                best_epoch: int | None = None) -> None:
    """Draw each metric's training and validation curve against the epoch into a PNG.

    Args:
        history: metric name -> one value per epoch (Keras's History.history layout).
        path: the PNG to write.
        title: the figure title.
        best_epoch: 1-based epoch of the kept (best) weights, marked with a dashed line.
    """
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()

    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(range(1, len(history[f"val_{name}"]) + 1), history[f"val_{name}"],
                    marker="o", label="validation")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
