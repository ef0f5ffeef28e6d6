"""LSTMCell: the long short-term memory cell (Hochreiter & Schmidhuber, 1997)."""

from __future__ import annotations

import keras
from keras import activations, initializers

from models.layers.dense_cell import DenseCell
from models.layers.rnn_cell import register_cell


@register_cell("lstm")
class LSTMCell(DenseCell):
    """LSTM step with input (i), forget (f), candidate (c) and output (o) gates.

        z = x_t @ kernel + bias + h_{t-1} @ recurrent_kernel      (blocks i | f | c | o)
        i = σ(z_i)   f = σ(z_f)   o = σ(z_o)   c̃ = act(z_c)
        c_t = f * c_{t-1} + i * c̃
        h_t = o * act(c_t)

    σ is `recurrent_activation`, act is `activation`. Weights as keras.layers.LSTMCell: kernel
    [input_dim, 4 units], recurrent_kernel [units, 4 units], bias [4 units]. States: [h, c].

    Args:
        units: size of h_t and c_t.
        recurrent_activation: σ of the gates (default sigmoid).
        unit_forget_bias: start the forget-gate bias at 1 (Jozefowicz et al., 2015).
        **kwargs: DenseCell's arguments (activation: act, default tanh; use_bias; the
            initializers, regularizers and constraints of kernel, recurrent_kernel and bias;
            dropout, recurrent_dropout, seed) and Keras layer arguments (name, dtype, trainable).
    """

    gates = 4
    state_names = ("h", "c")

    def __init__(self, units: int, recurrent_activation="sigmoid",
                 unit_forget_bias: bool = True, **kwargs):
        super().__init__(units, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.unit_forget_bias = unit_forget_bias

    def bias_initializer_for_build(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        units, base = self.units, self.bias_initializer

        def forget_bias_one(shape, dtype=None):
            del shape
            return keras.ops.concatenate([
                base((units,), dtype=dtype),
                initializers.get("ones")((units,), dtype=dtype),
                base((2 * units,), dtype=dtype),
            ])

        return forget_bias_one

    def step(self, projected, states, dropout_masks=None, training=False):
        h_prev, c_prev = states
        h_rec = self.recurrent_input(h_prev, dropout_masks)
        z = projected + keras.ops.matmul(h_rec, self.recurrent_kernel)
        z_i, z_f, z_c, z_o = keras.ops.split(z, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        o = self.recurrent_activation(z_o)
        c = f * c_prev + i * self.activation(z_c)
        h = o * self.activation(c)
        return h, [h, c]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "unit_forget_bias": self.unit_forget_bias,
        }
