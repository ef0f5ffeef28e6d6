"""Test metrics of a classifier over N named classes (and of a tagger's tokens), and the
confusion-matrix plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CONFUSION_FILE = "confusion_matrix.png"


def multiclass_report(true: np.ndarray, predicted: np.ndarray, names: Sequence[str],
                      ) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        true: true class indices.
        predicted: predicted class indices, same shape.
        names: the class names, index order.
    """
    true = np.asarray(true, dtype=np.int64).ravel()
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    if true.shape != predicted.shape:
        raise ValueError(f"{true.size} labels but {predicted.size} predictions")
    n = len(names)
    # rows: true class; columns: predicted class
    matrix = np.bincount(true * n + predicted, minlength=n * n).reshape(n, n)
    hits = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    guessed = matrix.sum(axis=0)
    precision = np.divide(hits, guessed, out=np.zeros(n), where=guessed > 0)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n),
                   where=precision + recall > 0)
    present = support > 0  # macro averages over the classes the test data has
    return {
        "n_examples": int(true.size),
        "accuracy": float(hits.sum() / true.size) if true.size else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "macro_precision": float(precision[present].mean()) if present.any() else float("nan"),
        "macro_recall": float(recall[present].mean()) if present.any() else float("nan"),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(names)},
        "classes": list(names),
        "confusion_matrix": matrix.tolist(),
    }


def plot_confusion(matrix: Sequence[Sequence[int]], names: Sequence[str], path: Path,
                   title: str = "") -> None:
    """Draw a confusion matrix (rows true, columns predicted, shaded by row share) to a PNG.

    Args:
        matrix: counts, rows true class, columns predicted class.
        names: the class names.
        path: the PNG to write (atomically).
        title: the figure title.
    """
    from pipelines.training.plots import pyplot, save_figure

    plt = pyplot()

    counts = np.asarray(matrix, dtype=np.float64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), labels=names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 20:  # numbers stay legible up to about this many classes
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class")
    if title:
        ax.set_title(title)
    save_figure(fig, path)
