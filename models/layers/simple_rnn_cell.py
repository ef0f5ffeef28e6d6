"""SimpleRNNCell: the vanilla (Elman) recurrent cell."""

from __future__ import annotations

import keras

from models.layers.dense_cell import DenseCell
from models.layers.rnn_cell import register_cell


@register_cell("rnn")
class SimpleRNNCell(DenseCell):
    """h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel).

    Weights as keras.layers.SimpleRNNCell: kernel [input_dim, units], recurrent_kernel
    [units, units], bias [units]. `activation` None means linear.

    Args:
        units: size of h_t.
        **kwargs: DenseCell's arguments (activation, use_bias, the initializers, regularizers
            and constraints of kernel, recurrent_kernel and bias, dropout, recurrent_dropout,
            seed) and Keras layer arguments (name, dtype, trainable).
    """

    gates = 1

    def step(self, projected, states, dropout_masks=None, training=False):
        (h_prev,) = states
        h_rec = self.recurrent_input(h_prev, dropout_masks)
        h = self.activation(projected + keras.ops.matmul(h_rec, self.recurrent_kernel))
        return h, [h]
