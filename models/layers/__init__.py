"""rnnkit's recurrent layers: cells, the RNN driver, the layers over one cell, Bidirectional.

Importing this package registers the built-in cells in CELLS; a new cell's module is imported
here too, so that its @register_cell runs before any task looks a cell up.
"""

from models.layers.bidirectional import Bidirectional
from models.layers.dense_cell import DenseCell
from models.layers.dropout_masks import DropoutMasks
from models.layers.gru_cell import GRUCell
from models.layers.layer_norm_lstm_cell import LayerNormLSTMCell
from models.layers.lstm_cell import LSTMCell
from models.layers.recurrent_layers import (
    GRU,
    LSTM,
    RECURRENT_LAYERS,
    CellRNN,
    LayerNormLSTM,
    SimpleRNN,
    recurrent_layer,
    state_names,
)
from models.layers.rnn import RNN
from models.layers.rnn_cell import CELLS, RNNCell, register_cell
from models.layers.simple_rnn_cell import SimpleRNNCell
from models.layers.stacked_cells import StackedCells

__all__ = [
    "CELLS",
    "GRU",
    "LSTM",
    "RECURRENT_LAYERS",
    "RNN",
    "Bidirectional",
    "CellRNN",
    "DenseCell",
    "DropoutMasks",
    "GRUCell",
    "LSTMCell",
    "LayerNormLSTM",
    "LayerNormLSTMCell",
    "RNNCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "StackedCells",
    "recurrent_layer",
    "register_cell",
    "state_names",
]
