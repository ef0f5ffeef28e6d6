"""rnnkit's recurrent layers: cells, the RNN driver, SimpleRNN/LSTM/GRU and Bidirectional."""

from models.layers.bidirectional import Bidirectional
from models.layers.dense_cell import DenseCell
from models.layers.dropout_masks import DropoutMasks
from models.layers.gru_cell import GRUCell
from models.layers.lstm_cell import LSTMCell
from models.layers.recurrent_layers import GRU, LSTM, SimpleRNN
from models.layers.rnn import RNN
from models.layers.rnn_cell import RNNCell
from models.layers.simple_rnn_cell import SimpleRNNCell
from models.layers.stacked_cells import StackedCells

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bidirectional",
    "DenseCell",
    "DropoutMasks",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "StackedCells",
]
