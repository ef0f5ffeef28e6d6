"""Per-sequence dropout masks for recurrent cells: drawn once per call, reused at every step."""

from __future__ import annotations

from typing import NamedTuple

import keras


class DropoutMasks(NamedTuple):
    """The two masks a cell multiplies into its inputs and its previous output.

    Args:
        inputs: [batch, input_dim] mask for x_t, or None when input dropout is off.
        recurrent: [batch, units] mask for h_{t-1}, or None when recurrent dropout is off.
    """

    inputs: object | None
    recurrent: object | None


def _mask(batch_size, dim: int, rate: float, seed_generator, dtype):
    """One inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate)."""
    if not 0.0 < rate < 1.0:
        return None
    ones = keras.ops.ones((batch_size, dim), dtype=dtype)
    return keras.random.dropout(ones, rate=rate, seed=seed_generator)


def make_dropout_masks(
    batch_size,
    input_dim: int,
    units: int,
    dropout: float,
    recurrent_dropout: float,
    seed_generator: keras.random.SeedGenerator,
    dtype: str,
    training: bool,
) -> DropoutMasks | None:
    """Draws the masks for one sequence; None outside training or when both rates are 0.

    Args:
        batch_size: number of sequences (int or scalar tensor).
        input_dim: size of the cell's input vector x_t.
        units: size of the cell's output h_t.
        dropout: fraction of x_t dropped.
        recurrent_dropout: fraction of h_{t-1} dropped in the recurrent products.
        seed_generator: the cell's SeedGenerator, so seeded cells repeat their masks.
        dtype: dtype of the masks (the cell's compute dtype).
        training: masks are only drawn in training.
    """
    if not training or (dropout == 0.0 and recurrent_dropout == 0.0):
        return None
    return DropoutMasks(
        inputs=_mask(batch_size, input_dim, dropout, seed_generator, dtype),
        recurrent=_mask(batch_size, units, recurrent_dropout, seed_generator, dtype),
    )
