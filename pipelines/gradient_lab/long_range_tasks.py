"""Synthetic long-range dependency problems: the adding problem and the copy/recall problem.

Both are generated from a seed and built so that the answer depends on the FIRST steps of a long
sequence, which is what makes them hard for a vanilla RNN (its gradient from the answer back to
those steps vanishes) and learnable for gated cells. They need no data files.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# Predicting 1.0 (the mean of a + b, a and b uniform on [0, 1]) has MSE Var(a + b) = 2 / 12.
ADDING_BASELINE_MSE = 1.0 / 6.0


def adding_problem(n_examples: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber, 1997): sum the two marked numbers.

    Each step carries (value, marker): values uniform on [0, 1), markers 0 except at two steps.
    The first marked step lies in the first tenth of the sequence, the second in the last half,
    so the answer needs a number seen near the start; the target is the sum of the two values.

    Args:
        n_examples: number of sequences.
        length: time steps per sequence (at least 2).
        seed: seed of the generator; the same seed gives the same examples.

    Returns:
        inputs float32 [n_examples, length, 2] and targets float32 [n_examples, 1].
    """
    _check_sizes(n_examples, length, minimum_length=2)
    rng = np.random.default_rng(seed)
    values = rng.random((n_examples, length), dtype=np.float32)
    first = rng.integers(0, max(1, math.ceil(length / 10)), size=n_examples)
    second = rng.integers(max(1, length // 2), length, size=n_examples)
    markers = np.zeros((n_examples, length), dtype=np.float32)
    rows = np.arange(n_examples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    return np.stack([values, markers], axis=-1), targets


@dataclasses.dataclass(frozen=True)
class RecallSpec:
    """Sizes of the copy/recall problem.

    Args:
        n_symbols: alphabet of the symbols to remember (chance accuracy is 1 / n_symbols).
        recall_length: how many symbols at the start of the sequence must be recalled.
        n_distractors: alphabet of the filler symbols between the symbols and the recall marker;
            1 fills with one blank symbol, as the classic copy task does.
    """

    n_symbols: int = 8
    recall_length: int = 2
    n_distractors: int = 1

    @property
    def input_dim(self) -> int:
        """One-hot width: symbols, distractors and the recall marker."""
        return self.n_symbols + self.n_distractors + 1

    @property
    def chance_accuracy(self) -> float:
        """Per-symbol accuracy of guessing."""
        return 1.0 / self.n_symbols


def recall_problem(n_examples: int, length: int, seed: int,
                   spec: RecallSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The copy/recall problem: reproduce the symbols shown in the first steps.

    Steps 0 .. recall_length-1 show symbols to remember; every later step but the last shows a
    filler (blank, or a random distractor when spec.n_distractors > 1); the last step shows the
    recall marker, after which the model must name
    the remembered symbols in order. Inputs are one-hot.

    Args:
        n_examples: number of sequences.
        length: time steps per sequence (more than `spec.recall_length`).
        seed: seed of the generator; the same seed gives the same examples.
        spec: alphabet and recall sizes (RecallSpec() when None).

    Returns:
        inputs float32 [n_examples, length, spec.input_dim] and targets int32
        [n_examples, spec.recall_length] (symbol ids in [0, n_symbols)).
    """
    spec = spec or RecallSpec()
    _check_sizes(n_examples, length, minimum_length=spec.recall_length + 1)
    if spec.n_symbols < 2 or spec.n_distractors < 1 or spec.recall_length < 1:
        raise ValueError(f"recall problem needs n_symbols >= 2, n_distractors >= 1 and "
                         f"recall_length >= 1, got {spec}")
    rng = np.random.default_rng(seed)
    k = spec.recall_length
    ids = rng.integers(spec.n_symbols, spec.n_symbols + spec.n_distractors,
                       size=(n_examples, length))
    targets = rng.integers(0, spec.n_symbols, size=(n_examples, k))
    ids[:, :k] = targets
    ids[:, -1] = spec.input_dim - 1
    inputs = np.eye(spec.input_dim, dtype=np.float32)[ids]
    return inputs, targets.astype(np.int32)


def _check_sizes(n_examples: int, length: int, minimum_length: int) -> None:
    """Reject sizes no sequence can be built from, naming the bad value."""
    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")
    if length < minimum_length:
        raise ValueError(f"length must be at least {minimum_length} for this problem, "
                         f"got {length}")
