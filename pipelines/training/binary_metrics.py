"""Test-set metrics of a binary classifier from labels and predicted probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative.

    Computed exactly from ranks (Mann-Whitney U), ties counting one half.

    Args:
        labels: 0/1 true labels.
        scores: predicted probability of class 1.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average rank of each group of tied scores (1-based).
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def binary_report(labels: np.ndarray, probabilities: np.ndarray,
                  threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, ROC-AUC and the confusion matrix.

    Args:
        labels: 0/1 true labels.
        probabilities: predicted probability of class 1.
        threshold: probabilities at or above it predict class 1.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    if labels.shape != probabilities.shape:
        raise ValueError(f"{labels.size} labels but {probabilities.size} probabilities")
    predicted = probabilities >= threshold
    tp = int(np.sum(predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    n = labels.size
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n_examples": n,
        "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(labels, probabilities),
        "threshold": threshold,
        # rows: true negative/positive; columns: predicted negative/positive
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def best_threshold(labels: np.ndarray, probabilities: np.ndarray, smoothing: float = 0.05,
                   candidates: np.ndarray | None = None) -> float:
    """The decision threshold of highest accuracy, for choosing one on a validation split.

    Each candidate's accuracy is averaged with its neighbours within `smoothing`, so the choice
    lands on a broad plateau rather than a spike a few lucky examples make; among equal
    candidates the one nearest 0.5 wins.

    Args:
        labels: 0/1 true labels.
        probabilities: predicted probability of class 1.
        smoothing: half-width of the averaging window, in probability.
        candidates: thresholds to try; default 0.05, 0.06, ..., 0.95.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    if labels.shape != probabilities.shape:
        raise ValueError(f"{labels.size} labels but {probabilities.size} probabilities")
    if labels.size == 0:
        raise ValueError("no examples to choose a threshold on")
    if candidates is None:
        candidates = np.round(np.arange(0.05, 0.951, 0.01), 2)
    candidates = np.asarray(candidates, dtype=np.float64)
    correct = (probabilities[None, :] >= candidates[:, None]) == labels[None, :]
    accuracy = correct.mean(axis=1)
    near = np.abs(candidates[:, None] - candidates[None, :]) <= smoothing + 1e-9
    smoothed = (near * accuracy[None, :]).sum(axis=1) / near.sum(axis=1)
    best = np.flatnonzero(smoothed >= smoothed.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])
