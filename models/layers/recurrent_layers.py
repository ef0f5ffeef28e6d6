"""CellRNN, the RNN driver around a cell it builds from its arguments; SimpleRNN, LSTM, GRU, etc."""

from __future__ import annotations

import inspect
import re
from typing import ClassVar

import keras
from keras import regularizers

from models.layers.gru_cell import GRUCell
from models.layers.layer_norm_lstm_cell import LayerNormLSTMCell
from models.layers.lstm_cell import LSTMCell
from models.layers.rnn import RNN
from models.layers.rnn_cell import CELLS, RNNCell
from models.layers.simple_rnn_cell import SimpleRNNCell

# The driver's own arguments and Keras's layer arguments; every other argument is the cell's.
_RNN_ARGS = tuple(name for name in inspect.signature(RNN.__init__).parameters
                  if name not in ("self", "cell", "kwargs"))
_LAYER_ARGS = ("name", "trainable", "dtype", "autocast", "activity_regularizer", "input_dim",
               "input_shape")


def _snake_case(name: str) -> str:
    """'LayerNormLSTMCell' -> 'layer_norm_lstm_cell': the name the cell gets inside the layer."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@keras.saving.register_keras_serializable(package="rnnkit")
class CellRNN(RNN):
    """An RNN over one cell that it builds from the cell's arguments, given to the layer.

    `CellRNN(64, cell_class=LSTMCell, dropout=0.2, return_sequences=True)` is
    `RNN(LSTMCell(64, dropout=0.2), return_sequences=True)` with one flat config: the cell's
    arguments and the driver's side by side, as keras.layers.LSTM has them. The named layers
    (SimpleRNN, LSTM, ...) are this layer with their `cell_class` fixed.

    Args:
        units: size of the output and of each state.
        cell_class: the cell's class (a registered RNNCell); fixed by the named layers.
        **kwargs: the driver's arguments (return_sequences, return_state, go_backwards,
            stateful, unroll, zero_output_for_mask: see RNN), activity_regularizer (of the
            layer's output), Keras layer arguments (name, dtype, trainable) and every other
            argument of the cell's class.
    """

    cell_class: ClassVar[type[RNNCell] | None] = None

    def __init__(self, units: int, cell_class: type[RNNCell] | None = None, **kwargs):
        fixed = type(self).cell_class
        if fixed is not None and cell_class not in (None, fixed):
            raise ValueError(f"{type(self).__name__} runs {fixed.__name__}, got "
                             f"cell_class={cell_class.__name__}; use CellRNN for other cells.")
        cell_class = cell_class or fixed
        if not (isinstance(cell_class, type) and issubclass(cell_class, RNNCell)):
            raise ValueError(f"cell_class must be an RNNCell subclass such as LSTMCell, got "
                             f"{cell_class!r}.")
        rnn_args = {key: kwargs.pop(key) for key in (*_RNN_ARGS, *_LAYER_ARGS) if key in kwargs}
        cell = cell_class(units, name=_snake_case(cell_class.__name__),
                          dtype=rnn_args.get("dtype"), trainable=rnn_args.get("trainable", True),
                          **kwargs)
        super().__init__(cell, **rnn_args)

    @property
    def units(self) -> int:
        """Size of the output and of each state."""
        return self.cell.units

    def get_config(self) -> dict:
        config = super().get_config()
        del config["cell"]
        cell_args = {key: value for key, value in self.cell.get_config().items()
                     if key not in _LAYER_ARGS}
        config = {**config, **cell_args,
                  "activity_regularizer": regularizers.serialize(self.activity_regularizer)}
        if type(self).cell_class is None:
            config["cell_class"] = keras.saving.get_registered_name(type(self.cell))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "cell_class" in config:
            name = config.pop("cell_class")
            cell_class = keras.saving.get_registered_object(name, custom_objects)
            if cell_class is None:
                raise ValueError(f"cell class {name!r} is not registered; import the module "
                                 "that defines it (with @register_cell) before loading.")
            config["cell_class"] = cell_class
        return cls(**config)


@keras.saving.register_keras_serializable(package="rnnkit")
class SimpleRNN(CellRNN):
    """Vanilla RNN layer, `CellRNN(units, cell_class=SimpleRNNCell, ...)`.

    Takes keras.layers.SimpleRNN's arguments: SimpleRNNCell's and the driver's (see CellRNN).
    """

    cell_class = SimpleRNNCell


@keras.saving.register_keras_serializable(package="rnnkit")
class LSTM(CellRNN):
    """LSTM layer: LSTMCell's arguments and the driver's, as keras.layers.LSTM (see CellRNN)."""

    cell_class = LSTMCell


@keras.saving.register_keras_serializable(package="rnnkit")
class GRU(CellRNN):
    """GRU layer over GRUCell, with keras.layers.GRU's arguments (see CellRNN and GRUCell);
    reset_after=True by default, like Keras's, so its weights load into a cuDNN GRU.
    """

    cell_class = GRUCell


@keras.saving.register_keras_serializable(package="rnnkit")
class LayerNormLSTM(CellRNN):
    """Layer-normalised LSTM layer: LayerNormLSTMCell's arguments and the driver's (see CellRNN)."""

    cell_class = LayerNormLSTMCell


# The named layer of each built-in cell; other registered cells run in a plain CellRNN.
_NAMED_LAYERS: dict[type[RNNCell], type[CellRNN]] = {
    layer.cell_class: layer for layer in (SimpleRNN, LSTM, GRU, LayerNormLSTM)}

# CELLS's name before cells were registered: code written against earlier rnnkit imports it
# (tests/test_captioning.py runs such code).
RECURRENT_LAYERS = CELLS


def _cell_class(cell: str) -> type[RNNCell]:
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r} is not a registered cell; choose one of "
                         f"{sorted(CELLS)} or register yours with @register_cell.")
    return CELLS[cell]


def state_names(cell: str) -> tuple[str, ...]:
    """The states a cell type carries (`("h",)` or `("h", "c")`), by its setting name.

    Args:
        cell: a key of CELLS.
    """
    return _cell_class(cell).state_names


def recurrent_layer(cell: str, units: int, **kwargs) -> CellRNN:
    """The recurrent layer of a registered cell, by its setting name (`--cell NAME`).

    Args:
        cell: a key of CELLS, e.g. "lstm" (gives an LSTM) or a cell registered with
            @register_cell (gives a CellRNN over it).
        units: size of the output and of each state.
        **kwargs: the layer's other arguments (the cell's and the driver's).
    """
    cell_class = _cell_class(cell)
    if cell_class in _NAMED_LAYERS:
        return _NAMED_LAYERS[cell_class](units, **kwargs)
    return CellRNN(units, cell_class=cell_class, **kwargs)
