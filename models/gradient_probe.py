"""Gradient probe: ∂L/∂h_t at every time step of a recurrent layer, and global gradient norms.

Backpropagation through time made visible. For a recurrent layer inside any model, the probe adds
a zero perturbation ε_t to the layer's output state h_t at every step (inside the layer's own
time loop, so the perturbed h_t also feeds step t+1) and differentiates the loss with respect to
ε_t. Since h_t + ε_t replaces h_t everywhere, ∂L/∂ε_t is the total derivative ∂L/∂h_t: the path
through the output at t plus every path through the later steps. For an LSTM the perturbed state
is h (the output), not the cell state c.

The global norm (√ of the summed squares of every weight gradient) is reported before and after
the optimizer's clipping, with the semantics of the optimizer the trainer builds (Keras's
`clipnorm` clips each weight's gradient separately, `global_clipnorm` all of them together).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.layers import RNN, Bidirectional


class _PerturbedCell:
    """Wraps a cell whose inputs carry ε_t as their last `units` features; its step adds ε_t
    to the output state. Everything else is the inner cell's.

    Riding along with x_t, ε_t reaches step t however the driver loops (chunked, backwards,
    masked, unrolled): the driver only ever hands a step the projection of its own x_t.
    """

    def __init__(self, cell) -> None:
        self._cell = cell

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cell, name)

    def project_inputs(self, inputs, dropout_masks=None):
        units = self._cell.output_size
        return (self._cell.project_inputs(inputs[..., :-units], dropout_masks),
                inputs[..., -units:])

    def step(self, projected, states, dropout_masks=None, training=False):
        projected_t, perturbation_t = projected
        output, new_states = self._cell.step(projected_t, states, dropout_masks, training)
        flat = tf.nest.flatten(new_states)
        # The cell returns its output state object itself among the new states (h of [h, c],
        # the top cell's h in a stack): that entry is the h_t the next step reads.
        if not any(state is output for state in flat):
            raise ValueError(
                f"{type(self._cell).__name__} does not return its output among its states, so "
                "∂L/∂h_t is not defined for it; probe a cell whose output is its state h_t.")
        perturbed = output + perturbation_t
        flat = [perturbed if state is output else state for state in flat]
        return perturbed, tf.nest.pack_sequence_as(new_states, flat)


class _Perturbation:
    """Inside the block, `layer` runs with ε (zeros the tape watches) added to every h_t.

    The layer's input sequence gets ε appended to its features and its cell is wrapped to
    split them off again; both are restored on exit. `tensor` is ε, [batch, time, units].
    """

    def __init__(self, layer: RNN, tape: tf.GradientTape) -> None:
        self.layer = layer
        self.tape = tape
        self.tensor = None

    def _call(self, sequences, *args, **kwargs):
        units = self.layer.cell.output_size
        shape = tf.concat([tf.shape(sequences)[:2], [units]], 0)
        self.tensor = tf.zeros(shape, dtype=self.layer.compute_dtype)
        self.tape.watch(self.tensor)
        widened = tf.concat([tf.cast(sequences, self.tensor.dtype), self.tensor], axis=-1)
        return self._original_call(widened, *args, **kwargs)

    def __enter__(self) -> _Perturbation:
        self._cell = self.layer.cell
        self._original_call = self.layer.call
        # object.__setattr__ keeps Keras from tracking the wrapper as a sub-layer of the model.
        object.__setattr__(self.layer, "cell", _PerturbedCell(self._cell))
        object.__setattr__(self.layer, "call", self._call)
        return self

    def __exit__(self, *exc_info) -> None:
        object.__setattr__(self.layer, "cell", self._cell)
        object.__delattr__(self.layer, "call")


def find_recurrent_layer(model: keras.Model) -> RNN:
    """The first rnnkit recurrent layer of a model (the forward one inside a Bidirectional).

    Args:
        model: a Keras model built from rnnkit's recurrent layers.
    """
    for layer in model.layers:
        if isinstance(layer, RNN):
            return layer
        if isinstance(layer, Bidirectional):
            return layer.forward_layer
        if isinstance(layer, keras.Model):
            with contextlib.suppress(ValueError):
                return find_recurrent_layer(layer)
    raise ValueError(f"model {model.name!r} has no rnnkit recurrent layer (models.layers.RNN, "
                     "SimpleRNN, LSTM, GRU or Bidirectional) to probe.")


class HiddenStateProbe:
    """Measures ∂L/∂h_t of one recurrent layer of a model; traced once, callable many times.

    Args:
        model: a built model containing `layer`.
        loss_fn: (targets, predictions) -> scalar loss, e.g. a keras.losses.Loss.
        layer: the recurrent layer to probe; by default the model's first one.
    """

    def __init__(self, model: keras.Model, loss_fn: Callable, layer: RNN | None = None) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.layer = layer or find_recurrent_layer(model)
        if self.layer.stateful:
            raise ValueError(f"{self.layer.name} is stateful; probe a stateless copy of the "
                             "model, since a probe call would advance the carried states.")
        self._traced = tf.function(self._gradients)

    def _gradients(self, inputs, targets):
        # Runs while tracing only: the traced graph keeps the perturbed step.
        with tf.GradientTape() as tape, _Perturbation(self.layer, tape) as perturbation:
            predictions = self.model(inputs, training=False)
            loss = self.loss_fn(targets, predictions)
        if perturbation.tensor is None:
            raise ValueError(f"{self.layer.name} is not called by model {self.model.name!r}")
        return tape.gradient(loss, perturbation.tensor)

    def gradients(self, inputs, targets) -> np.ndarray:
        """∂L/∂h_t for every step t of a batch: [batch, time, units], L the batch loss.

        Args:
            inputs: one batch of model inputs.
            targets: the batch's targets.
        """
        return self._traced(inputs, targets).numpy()

    def norms(self, inputs, targets) -> np.ndarray:
        """‖∂L/∂h_t‖ for every step t: the norm over the whole batch and all units, [time].

        Args:
            inputs: one batch of model inputs.
            targets: the batch's targets.
        """
        grads = self.gradients(inputs, targets).astype(np.float64)
        return np.sqrt(np.sum(np.square(grads), axis=(0, 2)))


def hidden_state_gradients(model: keras.Model, inputs, targets, loss_fn: Callable,
                           layer: RNN | None = None) -> np.ndarray:
    """∂L/∂h_t for every step t of one batch: [batch, time, units] (see HiddenStateProbe).

    Args:
        model: a built model containing `layer`.
        inputs: one batch of model inputs.
        targets: the batch's targets.
        loss_fn: (targets, predictions) -> scalar loss.
        layer: the recurrent layer to probe; by default the model's first one.
    """
    return HiddenStateProbe(model, loss_fn, layer).gradients(inputs, targets)


def global_norm(gradients: list) -> tf.Tensor:
    """√(Σ ‖g‖²) over a list of gradients (None entries are skipped).

    Args:
        gradients: one gradient tensor per weight.
    """
    return tf.linalg.global_norm([g for g in gradients if g is not None])


def clip_gradients(gradients: list, optimizer: keras.optimizers.Optimizer) -> list:
    """The gradients as `optimizer` clips them before its update.

    Keras's rules: `clipnorm` rescales each gradient to norm ≤ clipnorm on its own,
    `global_clipnorm` rescales all of them by one factor so their global norm is ≤ the limit,
    `clipvalue` clips every element; at most one is set.

    Args:
        gradients: one gradient tensor per weight (None entries pass through).
        optimizer: the optimizer whose clipping settings apply.
    """
    if optimizer.clipnorm:
        return [None if g is None else tf.clip_by_norm(g, optimizer.clipnorm) for g in gradients]
    if optimizer.global_clipnorm:
        present = [g for g in gradients if g is not None]
        clipped, _ = tf.clip_by_global_norm(present, optimizer.global_clipnorm)
        it = iter(clipped)
        return [None if g is None else next(it) for g in gradients]
    if optimizer.clipvalue:
        limit = optimizer.clipvalue
        return [None if g is None else tf.clip_by_value(g, -limit, limit) for g in gradients]
    return list(gradients)


def clipping_norms(gradients: list, optimizer: keras.optimizers.Optimizer) -> tuple:
    """The global norm of `gradients` before and after `optimizer`'s clipping, as two tensors.

    Traceable, so a compiled training step can record both next to its update.

    Args:
        gradients: one gradient tensor per weight (None entries are skipped).
        optimizer: supplies the clipping settings (clipnorm, global_clipnorm or clipvalue).
    """
    return global_norm(gradients), global_norm(clip_gradients(gradients, optimizer))


@dataclasses.dataclass(frozen=True)
class GradientNorms:
    """The global gradient norm of one batch, as computed and as the optimizer applies it.

    Args:
        loss: the batch loss.
        before_clipping: global norm of the raw gradients.
        after_clipping: global norm after the optimizer's clipping.
    """

    loss: float
    before_clipping: float
    after_clipping: float


def gradient_norms(model: keras.Model, inputs, targets, loss_fn: Callable,
                   optimizer: keras.optimizers.Optimizer) -> GradientNorms:
    """The batch's global gradient norm before and after `optimizer`'s clipping (no update).

    Args:
        model: the model whose trainable weights are differentiated.
        inputs: one batch of model inputs.
        targets: the batch's targets.
        loss_fn: (targets, predictions) -> scalar loss.
        optimizer: supplies the clipping settings (clipnorm, global_clipnorm or clipvalue).
    """
    with tf.GradientTape() as tape:
        loss = loss_fn(targets, model(inputs, training=True))
    before, after = clipping_norms(tape.gradient(loss, model.trainable_variables), optimizer)
    return GradientNorms(float(loss), float(before), float(after))
