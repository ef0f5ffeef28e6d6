"""Truncated backpropagation through time, for the trainer when `config.tbptt_steps` is set.

Long sequences are split along time into chunks of k steps. The model's recurrent layers carry
their final states from one chunk into the next (in carried-state variables, as a stateful layer
does), so the forward pass sees the whole sequence; but a state read from a variable has no
gradient history, so backpropagation stops at chunk boundaries and costs k steps of memory and
compute instead of the whole sequence.

- Per-step targets (targets whose axis 1 is the inputs' time axis, e.g. language models): each
  chunk is one training step on its own k targets; the first chunk of a batch starts from zero
  states.
- One target per sequence: a training step runs the steps before the last k forward only, to
  reach the state they end in, and backpropagates through the last k steps only.

Everything happens inside `truncated_bptt`: on entry the model's Keras train step is replaced by
the chunked one and its recurrent layers get carried states; on exit both are undone, so
validation (on whole sequences), evaluation, checkpoints and export see the plain stateless model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pipelines.config import TrainConfig
from serving.errors import UserError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

log = logging.getLogger("pipelines.training.tbptt")


def recurrent_layers(model: keras.Model) -> list:
    """Every rnnkit recurrent layer of a model, nested models included, in layer order.

    Args:
        model: the model to search.
    """
    import keras

    from models.layers import RNN, Bidirectional

    found = []
    for layer in model.layers:
        if isinstance(layer, Bidirectional):
            raise UserError(
                f"truncated BPTT cannot train {model.name!r}: its Bidirectional layer "
                f"{layer.name!r} reads each sequence backwards from its end, which a chunk does "
                "not have", "set tbptt_steps=none for this task")
        if isinstance(layer, RNN):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(recurrent_layers(layer))
    return found


def _check(model: keras.Model, steps: int) -> list:
    """The layers to carry states in; UserError when truncated BPTT cannot apply."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"tbptt_steps={steps!r} is not a positive number of time steps",
                        "use e.g. --set tbptt_steps=50, or tbptt_steps=none for full BPTT")
    layers = recurrent_layers(model)
    if not layers:
        raise UserError(f"tbptt_steps is set but model {model.name!r} has no rnnkit "
                        "recurrent layer to truncate", "set tbptt_steps=none for this task")
    for layer in layers:
        if layer.stateful or layer.go_backwards:
            raise UserError(
                f"truncated BPTT cannot train layer {layer.name!r}: it is already "
                f"{'stateful' if layer.stateful else 'go_backwards'}",
                "set tbptt_steps=none, or build the layer with the defaults")
    return layers


@contextlib.contextmanager
def _stateful(layers: list) -> Iterator[None]:
    """Make the layers read and write their carried states for the calls in the block."""
    for layer in layers:
        layer.stateful = True
    try:
        yield
    finally:
        for layer in layers:
            layer.stateful = False


def _per_step_targets(data: tf.data.Dataset) -> bool:
    """Whether the targets have the inputs' time axis (axis 1), judged from the element spec."""
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise UserError("truncated BPTT needs (inputs, targets) batches",
                        "set tbptt_steps=none for this task")
    inputs, targets = spec[0], spec[1]
    if not hasattr(inputs, "shape") or inputs.shape.rank is None or inputs.shape.rank < 3:
        raise UserError(
            f"truncated BPTT needs one input tensor [batch, time, ...], got {inputs}",
            "set tbptt_steps=none for this task")
    return (hasattr(targets, "shape") and targets.shape.rank is not None
            and targets.shape.rank >= 2 and targets.shape[1] == inputs.shape[1])


def chunk_batches(data: tf.data.Dataset, steps: int, batch_size: int) -> tf.data.Dataset:
    """The training batches rearranged for the chunked train step (see the module docstring).

    Per-step targets: every batch becomes ceil(time / k) elements ((chunk, is_first), targets).
    One target per sequence: ((steps before the last k, last k steps), targets). Batches other
    than `batch_size` sequences (a last partial batch) are dropped: the carried states have a
    fixed batch size.

    Args:
        data: batched (inputs, targets) or (inputs, targets, sample_weight).
        steps: the chunk length k.
        batch_size: the batch size of the carried states.
    """
    import tensorflow as tf

    per_step = _per_step_targets(data)
    data = data.filter(lambda x, *rest: tf.equal(tf.shape(x)[0], batch_size))
    if not per_step:
        def split_last(x, y, *weight):
            cut = tf.maximum(tf.shape(x)[1] - steps, 0)
            return ((x[:, :cut], x[:, cut:]), y, *weight)

        return data.map(split_last)

    def chunks(x, y, *weight):
        count = (tf.shape(x)[1] + steps - 1) // steps

        def chunk(i):
            window = slice(i * steps, (i + 1) * steps)
            sliced = [w[:, window] if len(w.shape) >= 2 else w for w in weight]
            return ((x[:, window], tf.equal(i, 0)), y[:, window], *sliced)

        return tf.data.Dataset.range(tf.cast(count, tf.int64)).map(chunk)

    return data.flat_map(chunks)


def _chunked_train_step(model: keras.Model, layers: list) -> Callable:
    """A Keras train step on chunk_batches' elements, keeping states across chunks."""
    import keras
    import tensorflow as tf

    base_step = type(model).train_step  # the model class's own step (loss, metrics, update)

    def train_step(data: Any) -> dict[str, Any]:
        (inputs, marker), y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = [v for layer in layers for v in tf.nest.flatten(layer.states)]
        with _stateful(layers):
            if marker.dtype == tf.bool:  # per-step targets: marker says "first chunk"
                for variable in variables:
                    variable.assign(tf.where(marker, tf.zeros_like(variable), variable))
                return base_step(model, (inputs, y, sample_weight))
            # One target per sequence: `inputs` holds the steps before the last chunk.
            for variable in variables:
                variable.assign(tf.zeros_like(variable))
            model(inputs, training=True)
            return base_step(model, (marker, y, sample_weight))

    return train_step


@contextlib.contextmanager
def truncated_bptt(model: keras.Model, config: TrainConfig
                   ) -> Iterator[Callable[[tf.data.Dataset], tf.data.Dataset]]:
    """Train `model` with truncated BPTT inside the block when `config.tbptt_steps` is set.

    Yields the function to pass the training data through (`chunk_batches`); with tbptt_steps
    None it changes nothing.

    Args:
        model: the compiled model about to be fit.
        config: `tbptt_steps` is the chunk length k, `batch_size` the batch size of the data.
    """
    if config.tbptt_steps is None:
        yield lambda data: data
        return
    layers = _check(model, config.tbptt_steps)
    batch_size = config.batch_size
    for layer in layers:
        # The carried-state variables, made directly: building the layer again would record
        # (batch, None, None) as its build shape, which a saved checkpoint cannot rebuild from.
        layer._create_state_variables(batch_size)
    object.__setattr__(model, "train_step", _chunked_train_step(model, layers))
    model.train_function = None
    log.info("truncated BPTT: chunks of %d steps through %d recurrent layer(s)",
             config.tbptt_steps, len(layers))
    try:
        yield lambda data: chunk_batches(data, config.tbptt_steps, batch_size)
    finally:
        object.__delattr__(model, "train_step")
        model.train_function = None
        for layer in layers:
            layer.states = None
