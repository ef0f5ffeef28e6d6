"""RNNCell: the contract every rnnkit cell follows so that `RNN` can run it over time.

A cell computes ONE time step. `RNN` (models/layers/rnn.py) is the only loop over time; it never
looks inside a cell beyond this contract:

1. `state_size` (int, or list of ints, one per state tensor) and `output_size` (int) are set in
   `__init__`; `get_initial_state(batch_size)` returns a list of zero tensors, one per state.
2. `get_dropout_masks(batch_size, training)` draws whatever per-sequence randomness the cell
   needs (e.g. `DropoutMasks`), or returns None. `RNN` calls it once per sequence and hands the
   result back to the two methods below at every step, so each sequence uses one mask.
3. `project_inputs(inputs, dropout_masks)` computes the part of the step that depends on x_t
   only (x_t @ kernel + bias). It must accept a single step [batch, input_dim] AND several
   time-major steps [time, batch, input_dim]: `RNN` calls it on chunks of steps, which turns
   several small matmuls into one larger one.
4. `step(projected, states, dropout_masks, training)` takes one slice of that projection and the
   list of previous states, and returns `(output, new_states)` with `new_states` a list shaped
   like `states`.
5. `call(inputs, states, training)` (given here) is one full step: project, then step.

A new cell (e.g. a layer-normalised LSTM) subclasses `RNNCell`, or `DenseCell` to get kernel,
recurrent_kernel, bias, dropout and the projection for free, and writes `step` next to its
formula; `get_config` must return every constructor argument. `@register_cell("name")` makes it
serializable and selectable everywhere a cell is named: `recurrent_layer("name", units)`, every
task's `--cell name`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import keras

# Every cell a task or `recurrent_layer()` can name, by that name (filled by `register_cell`).
CELLS: dict[str, type[RNNCell]] = {}


def register_cell(name: str) -> Callable[[type], type]:
    """Class decorator: registers a cell with Keras (package "rnnkit") and in CELLS as `name`.

    Args:
        name: the setting that selects the cell (`--cell name`), e.g. "lstm".
    """
    def register(cls: type) -> type:
        taken = CELLS.get(name)
        if taken is not None and taken.__qualname__ != cls.__qualname__:
            raise ValueError(f"cell name {name!r} is taken by {taken.__qualname__}; register "
                             f"{cls.__qualname__} under another name.")
        CELLS[name] = keras.saving.register_keras_serializable(package="rnnkit")(cls)
        return cls

    return register


@keras.saving.register_keras_serializable(package="rnnkit")
class RNNCell(keras.layers.Layer):
    """Base class of recurrent cells: one time step, split into input projection and recurrence.

    Args:
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    # Names of the states, in order; readable without making a cell (making one draws seeds).
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    state_size: int | list = 0
    output_size: int = 0

    def get_initial_state(self, batch_size) -> list:
        """Zero states, one [batch_size, size] tensor per entry of `state_size`.

        Args:
            batch_size: number of sequences (int or scalar tensor).
        """
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        return [keras.ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in sizes]

    def get_dropout_masks(self, batch_size, training: bool = False):
        """Per-sequence randomness shared by every step of one sequence; None by default.

        Args:
            batch_size: number of sequences (int or scalar tensor).
            training: whether the call is a training call.
        """
        del batch_size, training
        return None

    def project_inputs(self, inputs, dropout_masks=None):
        """The input-only part of a step, for one step or a whole time-major sequence.

        Args:
            inputs: [batch, input_dim] or [time, batch, input_dim].
            dropout_masks: what `get_dropout_masks` returned for this sequence.
        """
        del dropout_masks
        return inputs

    def step(self, projected, states: list, dropout_masks=None, training: bool = False):
        """One recurrent step from projected inputs; returns (output, new_states).

        Args:
            projected: one time slice of `project_inputs`'s result.
            states: list of the previous state tensors.
            dropout_masks: what `get_dropout_masks` returned for this sequence.
            training: whether the call is a training call.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def call(self, inputs, states, training: bool = False):
        """One full time step; returns (output, new_states).

        Args:
            inputs: [batch, input_dim] input at this step.
            states: the previous states (a list, or one tensor for a single-state cell).
            training: draws fresh dropout masks when True (a loop over steps should use `RNN`,
                which keeps one mask per sequence).
        """
        if not isinstance(states, (list, tuple)):
            states = [states]
        masks = self.get_dropout_masks(keras.ops.shape(inputs)[0], training)
        return self.step(self.project_inputs(inputs, masks), list(states), masks, training)
