"""Bidirectional: runs a recurrent layer forwards and a copy backwards, and merges the two."""

from __future__ import annotations

import copy

import keras
import tensorflow as tf

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _renamed_copy(layer, name: str, go_backwards: bool):
    """A fresh, unbuilt copy of `layer` with another name and direction."""
    config = keras.saving.serialize_keras_object(layer)
    config["config"]["name"] = name
    config["config"]["go_backwards"] = go_backwards
    return keras.saving.deserialize_keras_object(config)


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


@keras.saving.register_keras_serializable(package="rnnkit")
class Bidirectional(keras.layers.Layer):
    """Runs `layer` over the sequence and a backward copy over the reversed sequence.

    On right-padded batches with a mask, each sequence is reversed within its own length: the
    backward layer meets the padding first, and masked steps leave its state untouched, so it
    starts on each sequence's last real token. Outputs at padded steps are zero and the
    returned states are those at each sequence's true end (both layers use
    zero_output_for_mask=return_sequences, as Keras's Bidirectional does).

    Args:
        layer: a recurrent layer (RNN, SimpleRNN, LSTM, GRU) running forwards; it is copied.
        merge_mode: how the two outputs combine: 'concat', 'sum', 'mul', 'ave', or None for
            the list [forward, backward].
        backward_layer: the backward layer (go_backwards=True); by default a copy of `layer`.
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    def __init__(self, layer, merge_mode: str | None = "concat", backward_layer=None,
                 **kwargs):
        if not isinstance(layer, keras.layers.Layer) or not hasattr(layer, "go_backwards"):
            raise ValueError(
                f"Bidirectional wraps a recurrent layer (RNN, SimpleRNN, LSTM, GRU), got "
                f"{layer!r}.")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"merge_mode={merge_mode!r} is not one of {_MERGE_MODES}.")
        super().__init__(**kwargs)
        base = _strip(_strip(layer.name, "forward_"), "backward_")
        self.forward_layer = _renamed_copy(layer, f"forward_{base}", layer.go_backwards)
        if backward_layer is None:
            self.backward_layer = _renamed_copy(layer, f"backward_{base}",
                                                not layer.go_backwards)
        else:
            self.backward_layer = backward_layer
        self._check_pair()
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self.supports_masking = True

    def _check_pair(self) -> None:
        fw, bw = self.forward_layer, self.backward_layer
        if fw.go_backwards == bw.go_backwards:
            raise ValueError(
                "the forward and backward layers must run in opposite directions: give "
                "backward_layer go_backwards=True.")
        for attribute in ("return_sequences", "return_state", "stateful"):
            if getattr(fw, attribute) != getattr(bw, attribute):
                raise ValueError(
                    f"layer and backward_layer must agree on {attribute}: "
                    f"{getattr(fw, attribute)} != {getattr(bw, attribute)}.")

    def build(self, sequences_shape, initial_state_shape=None):
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(sequences_shape)

    def _merge(self, y, y_rev):
        if self.merge_mode == "concat":
            return tf.concat([y, y_rev], axis=-1)
        if self.merge_mode == "sum":
            return y + y_rev
        if self.merge_mode == "ave":
            return (y + y_rev) / 2
        if self.merge_mode == "mul":
            return y * y_rev
        return [y, y_rev]

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        forward_state = backward_state = None
        if initial_state is not None:
            half = len(initial_state) // 2
            forward_state, backward_state = list(initial_state[:half]), list(initial_state[half:])
        y = self.forward_layer(sequences, initial_state=forward_state, mask=mask,
                               training=training)
        y_rev = self.backward_layer(sequences, initial_state=backward_state, mask=mask,
                                    training=training)
        states = []
        if self.return_state:
            states = [*y[1:], *y_rev[1:]]
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = tf.reverse(y_rev, axis=[1])
        output = self._merge(y, y_rev)
        if not self.return_state:
            return output
        return [*output, *states] if self.merge_mode is None else [output, *states]

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        shape = self.forward_layer.compute_output_shape(sequences_shape)
        states = []
        if self.return_state:
            shape, states = shape[0], list(shape[1:])
        if self.merge_mode == "concat":
            output = [(*shape[:-1], shape[-1] * 2)]
        elif self.merge_mode is None:
            output = [tuple(shape), tuple(shape)]
        else:
            output = [tuple(shape)]
        if not self.return_state:
            return output[0] if len(output) == 1 else output
        return [*output, *states, *copy.deepcopy(states)]

    def compute_mask(self, sequences, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        output_masks = [output_mask] if self.merge_mode else [output_mask, output_mask]
        if self.return_state:
            n_states = len(self.forward_layer.state_size) + len(self.backward_layer.state_size)
            return [*output_masks, *([None] * n_states)]
        return output_masks[0] if self.merge_mode else output_masks

    @property
    def states(self):
        """The carried states of both layers (stateful only), forward first."""
        fw, bw = self.forward_layer.states, self.backward_layer.states
        return None if fw is None or bw is None else [*fw, *bw]

    def reset_state(self) -> None:
        """Zeroes the carried states of both layers."""
        if not self.stateful:
            raise AttributeError(f"{self.name} is not stateful: there is no state to reset.")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self) -> None:
        """Alias of reset_state (Keras 2 spelling)."""
        self.reset_state()

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.forward_layer),
            "merge_mode": self.merge_mode,
            "backward_layer": keras.saving.serialize_keras_object(self.backward_layer),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"),
                                                      custom_objects=custom_objects)
        backward = config.pop("backward_layer", None)
        if backward is not None:
            backward = keras.saving.deserialize_keras_object(backward,
                                                             custom_objects=custom_objects)
        return cls(layer, backward_layer=backward, **config)
