"""StackedCells: several cells run as one, each feeding its output to the next at every step."""

from __future__ import annotations

import keras

from models.layers.rnn_cell import RNNCell

_CONTRACT = ("state_size", "output_size", "get_initial_state", "get_dropout_masks",
             "project_inputs", "step")


def check_cell(cell) -> None:
    """Raises ValueError unless `cell` follows the RNNCell contract.

    Args:
        cell: the object to check.
    """
    missing = [name for name in _CONTRACT if not hasattr(cell, name)]
    if missing:
        raise ValueError(
            f"{cell!r} is not an rnnkit cell (missing {', '.join(missing)}); use the cells in "
            "models.layers or subclass models.layers.RNNCell.")


@keras.saving.register_keras_serializable(package="rnnkit")
class StackedCells(RNNCell):
    """A stack of cells behaving as one cell (like keras.layers.StackedRNNCells).

    The state is the list of the cells' states, in stack order: an entry is a tensor for a cell
    whose `state_size` is an int and a list for a cell with several states (LSTM: [h, c]).

    Args:
        cells: the cells, bottom first.
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    def __init__(self, cells, **kwargs):
        if not isinstance(cells, (list, tuple)) or not cells:
            raise ValueError(f"`cells` must be a non-empty list of cells, got {cells!r}.")
        for cell in cells:
            check_cell(cell)
        super().__init__(**kwargs)
        self.cells = list(cells)

    @property
    def state_size(self) -> list:
        return [cell.state_size for cell in self.cells]

    @property
    def output_size(self) -> int:
        return self.cells[-1].output_size

    def build(self, input_shape):
        for cell in self.cells:
            if not cell.built:
                cell.build(input_shape)
            input_shape = (*tuple(input_shape)[:-1], cell.output_size)

    def get_initial_state(self, batch_size) -> list:
        states = []
        for cell in self.cells:
            cell_states = cell.get_initial_state(batch_size)
            states.append(cell_states if isinstance(cell.state_size, (list, tuple))
                          else cell_states[0])
        return states

    def get_dropout_masks(self, batch_size, training: bool = False) -> list:
        return [cell.get_dropout_masks(batch_size, training) for cell in self.cells]

    def project_inputs(self, inputs, dropout_masks=None):
        """Only the bottom cell's projection: the others' inputs exist only inside the step."""
        return self.cells[0].project_inputs(inputs, _nth(dropout_masks, 0))

    def step(self, projected, states, dropout_masks=None, training=False):
        new_states = []
        inputs = projected
        for index, (cell, cell_states) in enumerate(zip(self.cells, states, strict=True)):
            masks = _nth(dropout_masks, index)
            if index > 0:
                inputs = cell.project_inputs(inputs, masks)
            single = not isinstance(cell.state_size, (list, tuple))
            inputs, cell_new = cell.step(
                inputs, [cell_states] if single else list(cell_states), masks, training)
            new_states.append(cell_new[0] if single else list(cell_new))
        return inputs, new_states

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "cells": [keras.saving.serialize_keras_object(cell) for cell in self.cells],
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        cells = [keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)
                 for c in config.pop("cells")]
        return cls(cells, **config)


def _nth(dropout_masks, index: int):
    """The masks of cell `index`, or None when no masks were drawn."""
    return None if dropout_masks is None else dropout_masks[index]
