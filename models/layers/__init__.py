"""rnnkit's recurrent layers: cells, the RNN driver, the layers over one cell, Bidirectional."""

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
    LayerNormLSTM,
    SimpleRNN,
    recurrent_layer,
    state_names,
)
from models.layers.rnn import RNN
from models.layers.rnn_cell import RNNCell
from models.layers.simple_rnn_cell import SimpleRNNCell
from models.layers.stacked_cells import StackedCells

__all__ = [
    "GRU",
    "LSTM",
    "RECURRENT_LAYERS",
    "RNN",
    "Bidirectional",
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
    "state_names",
]
