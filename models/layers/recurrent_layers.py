"""SimpleRNN, LSTM, GRU, LayerNormLSTM: the RNN driver around one cell, with Keras's arguments."""

from __future__ import annotations

from typing import ClassVar

import keras
from keras import regularizers

from models.layers.gru_cell import GRUCell
from models.layers.layer_norm_lstm_cell import LayerNormLSTMCell
from models.layers.lstm_cell import LSTMCell
from models.layers.rnn import RNN
from models.layers.simple_rnn_cell import SimpleRNNCell

_LAYER_KEYS = ("name", "trainable", "dtype")


class _CellLayer(RNN):
    """An RNN over a cell it builds itself; its config is the cell's arguments plus the RNN's."""

    # The states the cell carries, readable without making a layer (making one draws seeds).
    state_names: ClassVar[tuple[str, ...]] = ("h",)

    @property
    def units(self) -> int:
        """Size of the output and of each state."""
        return self.cell.units

    def get_config(self) -> dict:
        config = super().get_config()
        del config["cell"]
        cell_args = {k: v for k, v in self.cell.get_config().items() if k not in _LAYER_KEYS}
        return {**config, **cell_args,
                "activity_regularizer": regularizers.serialize(self.activity_regularizer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _layer_kwargs(kwargs: dict) -> dict:
    """The Keras layer arguments a built-in layer hands on to its cell."""
    return {"dtype": kwargs.get("dtype"), "trainable": kwargs.get("trainable", True)}


@keras.saving.register_keras_serializable(package="rnnkit")
class SimpleRNN(_CellLayer):
    """Vanilla RNN layer: `RNN(SimpleRNNCell(...))` with keras.layers.SimpleRNN's arguments.

    Args:
        units: size of the output.
        activation: see SimpleRNNCell.
        use_bias: see SimpleRNNCell.
        kernel_initializer: see SimpleRNNCell.
        recurrent_initializer: see SimpleRNNCell.
        bias_initializer: see SimpleRNNCell.
        kernel_regularizer: see SimpleRNNCell.
        recurrent_regularizer: see SimpleRNNCell.
        bias_regularizer: see SimpleRNNCell.
        activity_regularizer: regularizer of the layer's output.
        kernel_constraint: see SimpleRNNCell.
        recurrent_constraint: see SimpleRNNCell.
        bias_constraint: see SimpleRNNCell.
        dropout: see SimpleRNNCell.
        recurrent_dropout: see SimpleRNNCell.
        seed: see SimpleRNNCell.
        return_sequences: see RNN.
        return_state: see RNN.
        go_backwards: see RNN.
        stateful: see RNN.
        unroll: see RNN.
        zero_output_for_mask: see RNN.
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    def __init__(
        self,
        units: int,
        activation="tanh",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        **kwargs,
    ):
        cell = SimpleRNNCell(
            units, activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, name="simple_rnn_cell",
            **_layer_kwargs(kwargs))
        super().__init__(
            cell, return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards, stateful=stateful, unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            activity_regularizer=activity_regularizer, **kwargs)


@keras.saving.register_keras_serializable(package="rnnkit")
class LSTM(_CellLayer):
    """LSTM layer: `RNN(LSTMCell(...))` with keras.layers.LSTM's arguments.

    Args:
        units: size of the output and of each state.
        activation: see LSTMCell.
        recurrent_activation: see LSTMCell.
        use_bias: see LSTMCell.
        kernel_initializer: see LSTMCell.
        recurrent_initializer: see LSTMCell.
        bias_initializer: see LSTMCell.
        unit_forget_bias: see LSTMCell.
        kernel_regularizer: see LSTMCell.
        recurrent_regularizer: see LSTMCell.
        bias_regularizer: see LSTMCell.
        activity_regularizer: regularizer of the layer's output.
        kernel_constraint: see LSTMCell.
        recurrent_constraint: see LSTMCell.
        bias_constraint: see LSTMCell.
        dropout: see LSTMCell.
        recurrent_dropout: see LSTMCell.
        seed: see LSTMCell.
        return_sequences: see RNN.
        return_state: see RNN.
        go_backwards: see RNN.
        stateful: see RNN.
        unroll: see RNN.
        zero_output_for_mask: see RNN.
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    state_names: ClassVar[tuple[str, ...]] = ("h", "c")

    def __init__(
        self,
        units: int,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias: bool = True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        **kwargs,
    ):
        cell = LSTMCell(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias, kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, name="lstm_cell",
            **_layer_kwargs(kwargs))
        super().__init__(
            cell, return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards, stateful=stateful, unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            activity_regularizer=activity_regularizer, **kwargs)


@keras.saving.register_keras_serializable(package="rnnkit")
class GRU(_CellLayer):
    """GRU layer: `RNN(GRUCell(...))` with keras.layers.GRU's arguments.

    Args:
        units: size of the output and state.
        activation: see GRUCell.
        recurrent_activation: see GRUCell.
        use_bias: see GRUCell.
        kernel_initializer: see GRUCell.
        recurrent_initializer: see GRUCell.
        bias_initializer: see GRUCell.
        kernel_regularizer: see GRUCell.
        recurrent_regularizer: see GRUCell.
        bias_regularizer: see GRUCell.
        activity_regularizer: regularizer of the layer's output.
        kernel_constraint: see GRUCell.
        recurrent_constraint: see GRUCell.
        bias_constraint: see GRUCell.
        dropout: see GRUCell.
        recurrent_dropout: see GRUCell.
        seed: see GRUCell.
        return_sequences: see RNN.
        return_state: see RNN.
        go_backwards: see RNN.
        stateful: see RNN.
        unroll: see RNN.
        reset_after: see GRUCell.
        zero_output_for_mask: see RNN.
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    def __init__(
        self,
        units: int,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        reset_after: bool = True,
        zero_output_for_mask: bool = False,
        **kwargs,
    ):
        cell = GRUCell(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
            dropout=dropout, recurrent_dropout=recurrent_dropout, reset_after=reset_after,
            seed=seed, name="gru_cell", **_layer_kwargs(kwargs))
        super().__init__(
            cell, return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards, stateful=stateful, unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            activity_regularizer=activity_regularizer, **kwargs)


@keras.saving.register_keras_serializable(package="rnnkit")
class LayerNormLSTM(_CellLayer):
    """Layer-normalised LSTM layer: `RNN(LayerNormLSTMCell(...))`.

    Args:
        units: size of the output and of each state.
        return_sequences: see RNN.
        return_state: see RNN.
        go_backwards: see RNN.
        stateful: see RNN.
        unroll: see RNN.
        zero_output_for_mask: see RNN.
        activity_regularizer: regularizer of the layer's output.
        **kwargs: LayerNormLSTMCell's arguments (activation, initializers, norm_epsilon,
            dropout, seed, ...) and Keras layer arguments (name, dtype, trainable).
    """

    state_names: ClassVar[tuple[str, ...]] = ("h", "c")

    def __init__(
        self,
        units: int,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        activity_regularizer=None,
        **kwargs,
    ):
        layer_args = {key: kwargs.pop(key) for key in _LAYER_KEYS if key in kwargs}
        cell = LayerNormLSTMCell(units, name="layer_norm_lstm_cell", **kwargs,
                                 **_layer_kwargs(layer_args))
        super().__init__(
            cell, return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards, stateful=stateful, unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            activity_regularizer=activity_regularizer, **layer_args)


# The recurrent layer behind each `cell` setting of the tasks (`--cell NAME`).
RECURRENT_LAYERS: dict[str, type[_CellLayer]] = {
    "rnn": SimpleRNN, "lstm": LSTM, "gru": GRU, "ln_lstm": LayerNormLSTM}


def _layer_class(cell: str) -> type[_CellLayer]:
    if cell not in RECURRENT_LAYERS:
        raise ValueError(f"cell={cell!r} is not one of {sorted(RECURRENT_LAYERS)}.")
    return RECURRENT_LAYERS[cell]


def state_names(cell: str) -> tuple[str, ...]:
    """The states a cell type carries (`("h",)` or `("h", "c")`), by its setting name.

    Args:
        cell: a key of RECURRENT_LAYERS.
    """
    return _layer_class(cell).state_names


def recurrent_layer(cell: str, units: int, **kwargs) -> RNN:
    """The recurrent layer of a cell type by its setting name.

    Args:
        cell: a key of RECURRENT_LAYERS.
        units: size of the output and of each state.
        **kwargs: the layer's other arguments.
    """
    return _layer_class(cell)(units, **kwargs)
