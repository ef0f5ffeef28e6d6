"""RNN: the one driver that runs any rnnkit cell over time (see rnn_cell.py for the contract).

TensorFlow backend only: the time loop is a tf.while_loop over TensorArrays, the masks and
states go through tf.nest, and the GPU path is TF's cuDNN op, so models.layers needs
KERAS_BACKEND=tensorflow (Keras's default); an RNN made under another backend raises.
"""

from __future__ import annotations

import keras
import tensorflow as tf

try:
    # Private to Keras, so any release may move it: keeps the stateful layer's state variables
    # out of its weights, as Keras's own RNN does (tests/test_layers_edge_cases.py watches it).
    from keras.src.utils.tracking import no_automatic_dependency_tracking
except ImportError as err:
    raise ImportError(
        f"models/layers/rnn.py needs keras.src.utils.tracking.no_automatic_dependency_tracking, "
        f"which Keras {keras.__version__} no longer has there; install the keras version pinned "
        "in constraints.txt, or find where this Keras keeps it and import it from there."
    ) from err

from models.layers.cudnn_path import cudnn_applies, run_cudnn
from models.layers.stacked_cells import StackedCells, check_cell
from models.layers.time_loop import run_time_loop


def _time_major(x):
    """Swaps the batch and time axes of a [batch, time, ...] tensor (and back)."""
    return tf.transpose(x, [1, 0, *range(2, x.shape.rank)])


@keras.saving.register_keras_serializable(package="rnnkit")
class RNN(keras.layers.Layer):
    """Runs a cell (or a list of cells, stacked) over the time axis of [batch, time, ...] input.

    The loop (models/layers/time_loop.py, a tf.while_loop over TensorArrays) projects a chunk
    of several steps' inputs in one matmul (the bottom cell's `project_inputs`) and then runs
    the recurrent part of those steps. Masked steps (mask False) carry the previous states and
    output forward, as Keras does. On a GPU, standard LSTM and GRU cells over unmasked input
    run as one cuDNN kernel instead (models/layers/cudnn_path.py).

    Args:
        cell: an rnnkit cell, or a list of cells (wrapped in StackedCells).
        return_sequences: return the output of every step ([batch, time, units]) instead of the
            last one.
        return_state: also return the final states: `[output, *states]`.
        go_backwards: process the sequence from last step to first; with return_sequences the
            outputs come in processing order (reversed), as Keras's.
        stateful: keep the final states of a batch as the initial states of the next one (needs
            a fixed batch size); `reset_state()` zeroes them.
        unroll: build one graph copy of the step per time step (needs a fixed time length).
        zero_output_for_mask: with return_sequences, emit zeros instead of the last output at
            masked steps. Without return_sequences the output is always the one at each
            sequence's last valid step (Keras returns zeros for padded sequences there).
        **kwargs: Keras layer arguments (name, dtype, trainable, activity_regularizer).
    """

    def __init__(
        self,
        cell,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        **kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"rnnkit's recurrent layers run on the TensorFlow backend only, and Keras runs "
                f"on {keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow.")
        if isinstance(cell, (list, tuple)):
            cell = StackedCells(cell)
        check_cell(cell)
        super().__init__(**kwargs)
        self.cell = cell
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.stateful = stateful
        self.unroll = unroll
        self.zero_output_for_mask = zero_output_for_mask
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(min_ndim=3)
        self.states = None

    @property
    def state_size(self) -> list:
        """One entry per state (a nested list for stacked cells)."""
        size = self.cell.state_size
        return list(size) if isinstance(size, (list, tuple)) else [size]

    def build(self, sequences_shape, initial_state_shape=None):
        if self.unroll and len(sequences_shape) > 1 and sequences_shape[1] is None:
            raise ValueError(
                f"{self.name}: unroll=True needs a known number of time steps, got input shape "
                f"{tuple(sequences_shape)}; give the Input layer a fixed sequence length or use "
                "unroll=False.")
        step_shape = (sequences_shape[0], *tuple(sequences_shape)[2:])
        if not self.cell.built:
            self.cell.build(step_shape)
        if self.stateful:
            if sequences_shape[0] is None:
                raise ValueError(
                    f"{self.name}: stateful=True needs a fixed batch size, got input shape "
                    f"{tuple(sequences_shape)}; pass batch_size=... to keras.Input.")
            self._create_state_variables(sequences_shape[0])

    @no_automatic_dependency_tracking
    def _create_state_variables(self, batch_size: int) -> None:
        """Variables holding the carried states; like Keras, not part of get_weights()."""
        self.states = tf.nest.map_structure(
            lambda zeros: keras.Variable(zeros, trainable=False, name="rnn_state"),
            self.get_initial_state(batch_size))

    def get_initial_state(self, batch_size) -> list:
        """The cell's zero states as a list (one entry per state).

        Args:
            batch_size: number of sequences (int or scalar tensor).
        """
        return list(self.cell.get_initial_state(batch_size))

    def reset_state(self) -> None:
        """Zeroes the carried states of a stateful layer."""
        if self.states is not None:
            for variable in tf.nest.flatten(self.states):
                variable.assign(tf.zeros_like(variable))

    def reset_states(self) -> None:
        """Alias of reset_state (Keras 2 spelling)."""
        self.reset_state()

    def _starting_states(self, sequences, initial_state) -> list:
        """The states the loop starts from, in the cell's structure, in the compute dtype."""
        if initial_state is None:
            if self.stateful:
                return tf.nest.map_structure(tf.convert_to_tensor, self.states)
            return self.get_initial_state(tf.shape(sequences)[0])
        template = self.get_initial_state(1)
        flat = tf.nest.flatten(initial_state)
        if len(flat) != len(tf.nest.flatten(template)):
            raise ValueError(
                f"{self.name}: initial_state has {len(flat)} tensors but the cell has "
                f"{len(tf.nest.flatten(template))} states (state_size={self.cell.state_size}); "
                "pass one tensor per state.")
        flat = [tf.cast(s, self.compute_dtype) for s in flat]
        for given, zeros in zip(flat, tf.nest.flatten(template), strict=True):
            if given.shape.rank is not None and given.shape.rank != zeros.shape.rank:
                raise ValueError(
                    f"{self.name}: an initial state has shape {tuple(given.shape)} where the "
                    f"cell expects (batch, {', '.join(map(str, zeros.shape[1:]))}); pass one "
                    "row per sequence.")
            size = given.shape[-1] if given.shape.rank else None
            if size is not None and size != zeros.shape[-1]:
                raise ValueError(
                    f"{self.name}: an initial state has size {size} where the cell expects "
                    f"{zeros.shape[-1]} (state_size={self.cell.state_size}).")
        return tf.nest.pack_sequence_as(template, self._same_batch(sequences, flat))

    def _same_batch(self, sequences, states: list) -> list:
        """`states`, checked to hold one row per sequence of `sequences`.

        Mismatches known at tracing time raise ValueError. Where only one side knows its batch
        size, the time loop checks it; where neither does, it is checked here when the graph
        runs, since a batch of 1 would otherwise broadcast silently against the other.
        """
        batch = sequences.shape[0]
        sizes = [s.shape[0] for s in states]
        wrong = [size for size in sizes if None not in (size, batch) and size != batch]
        if wrong:
            raise ValueError(
                f"{self.name}: initial_state has batch size {wrong[0]} but the input has "
                f"{batch}; pass one initial state row per input sequence.")
        if batch is not None or all(size is not None for size in sizes):
            return states
        checks = [tf.debugging.assert_equal(
            tf.shape(s)[0], tf.shape(sequences)[0],
            message=f"{self.name}: initial_state and the input have different batch sizes; "
                    "pass one initial state row per input sequence.") for s in states]
        with tf.control_dependencies(checks):
            return [tf.identity(s) for s in states]

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is not None:
            mask = tf.convert_to_tensor(mask)
            if not mask.shape.is_compatible_with(sequences.shape[:2]):
                raise ValueError(
                    f"{self.name}: the mask has shape {tuple(mask.shape)} but the input has "
                    f"shape {tuple(sequences.shape)}; pass a [batch, time] mask.")
        if self.stateful and self.states is not None:
            expected = tf.nest.flatten(self.states)[0].shape[0]
            actual = sequences.shape[0]
            if actual is not None and actual != expected:
                raise ValueError(
                    f"{self.name}: a stateful layer was built for batch size {expected} but "
                    f"got {actual}; feed batches of {expected} (drop_remainder=True).")
        states = self._starting_states(sequences, initial_state)
        dropout_masks = self.cell.get_dropout_masks(tf.shape(sequences)[0], training)

        def step_fn(x_t, flat_states):
            output, new_states = self.cell.step(
                x_t, tf.nest.pack_sequence_as(states, flat_states), dropout_masks, training)
            return output, tf.nest.flatten(new_states)

        flat_states = tf.nest.flatten(states)
        fused = None
        if cudnn_applies(self.cell, dropout_masks, mask, self.unroll):
            # On a GPU a standard LSTM or GRU runs as one cuDNN kernel, as Keras's do.
            fused = run_cudnn(self.cell, sequences, flat_states, dropout_masks,
                              self.go_backwards, self.return_sequences)
        if fused is not None:
            last, outputs, final = fused
        else:
            initial_output = tf.zeros((tf.shape(sequences)[0], self.cell.output_size),
                                      dtype=flat_states[0].dtype)
            last, outputs, final = run_time_loop(
                step_fn, _time_major(sequences), flat_states, initial_output,
                project_fn=lambda x: self.cell.project_inputs(x, dropout_masks),
                mask=None if mask is None else tf.transpose(tf.cast(mask, tf.bool)),
                go_backwards=self.go_backwards, return_sequences=self.return_sequences,
                zero_output_for_mask=self.zero_output_for_mask, unroll=self.unroll)
            outputs = _time_major(outputs) if self.return_sequences else None
        if self.stateful:
            for variable, value in zip(tf.nest.flatten(self.states), final, strict=True):
                variable.assign(value)
        output = outputs if self.return_sequences else last
        if self.return_state:
            return [output, *tf.nest.pack_sequence_as(states, final)]
        return output

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch = sequences_shape[0]
        if self.return_sequences:
            output_shape = (batch, sequences_shape[1], self.cell.output_size)
        else:
            output_shape = (batch, self.cell.output_size)
        if not self.return_state:
            return output_shape
        state_shapes = tf.nest.map_structure(lambda size: (batch, size), self.state_size)
        return [output_shape, *state_shapes]

    def compute_mask(self, sequences, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * len(self.state_size)
        return output_mask

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "cell": keras.saving.serialize_keras_object(self.cell),
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        cell = keras.saving.deserialize_keras_object(config.pop("cell"),
                                                     custom_objects=custom_objects)
        return cls(cell, **config)
