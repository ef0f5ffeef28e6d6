"""The driver's GPU fast path: cuDNN for standard LSTM and GRU cells, as keras.layers has.

`RNN` calls `run_cudnn` first; it returns None unless the call can run as one cuDNN kernel
(`CudnnRNNV3`) with exactly the generic loop's results, and the driver then runs its own loop
(time_loop.py). The kernel call itself is Keras's TensorFlow backend's (the one keras.layers.LSTM
and GRU use on a GPU), so the weight layout handed to cuDNN is Keras's, which ours share.

Taken only when all of these hold, else None:
- a GPU is visible and cuDNN supports the configuration (Keras's `cudnn_ok`: tanh / sigmoid,
  a bias, GRU with reset_after, no unroll);
- the cell is exactly LSTMCell or GRUCell (not a subclass such as LayerNormLSTMCell) in
  float32, and no recurrent dropout is drawn for this call;
- there is no mask (our masked results differ from cuDNN's on fully masked rows and
  left padding, so masked batches take the loop);
- the graph is not being traced for a SavedModel: exports stay device-independent (cuDNN ops
  have no CPU kernel, and TF Serving's CPU image must run them).

Not exercised on this project's CPU-only machines: tests/test_layers_cudnn.py checks that the
path declines on CPU and, where a GPU is present, compares it with the loop.
"""

from __future__ import annotations

import importlib

import tensorflow as tf
from tensorflow.python.saved_model import save_context

from models.layers.gru_cell import GRUCell
from models.layers.lstm_cell import LSTMCell

# Keras's TensorFlow-backend RNN module (its package exports a function of the same name).
keras_tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")


def cudnn_applies(cell, dropout_masks, mask, unroll: bool) -> bool:
    """Whether this call of `RNN` can run on cuDNN with the generic loop's results.

    Args:
        cell: the driver's cell.
        dropout_masks: what the cell's get_dropout_masks returned for this call.
        mask: the call's mask (None when every step is valid).
        unroll: the driver's unroll setting.
    """
    if type(cell) not in (LSTMCell, GRUCell) or mask is not None or unroll:
        return False
    if cell.compute_dtype != "float32" or save_context.in_save_context():
        return False
    if dropout_masks is not None and dropout_masks.recurrent is not None:
        return False
    return keras_tf_rnn.cudnn_ok(
        cell.activation, cell.recurrent_activation, unroll, use_bias=cell.use_bias,
        reset_after=getattr(cell, "reset_after", None))


def run_cudnn(cell, sequences, states: list, dropout_masks, go_backwards: bool,
              return_sequences: bool) -> tuple | None:
    """(last output, outputs [batch, time, units] or None, final states), or None if declined.

    Args:
        cell: an LSTMCell or GRUCell for which `cudnn_applies` held.
        sequences: [batch, time, input_dim] inputs.
        states: the flat list of initial states ([h, c] or [h]).
        dropout_masks: the cell's masks for this call (input dropout only).
        go_backwards: process the steps from last to first (outputs in processing order).
        return_sequences: whether the caller needs every step's output.
    """
    if dropout_masks is not None and dropout_masks.inputs is not None:
        sequences = sequences * tf.expand_dims(dropout_masks.inputs, 1)
    common = {"mask": None, "kernel": cell.kernel, "recurrent_kernel": cell.recurrent_kernel,
              "bias": cell.bias, "activation": cell.activation,
              "recurrent_activation": cell.recurrent_activation,
              "return_sequences": return_sequences, "go_backwards": go_backwards}
    try:
        if isinstance(cell, LSTMCell):
            last, outputs, final = keras_tf_rnn.lstm(sequences, states[0], states[1], **common)
        else:
            last, outputs, final = keras_tf_rnn.gru(sequences, states[0], reset_after=True,
                                                    **common)
    except NotImplementedError:  # no cuDNN kernel on this device after all
        return None
    return last, outputs if return_sequences else None, list(final)
