"""LSTMCell: the long short-term memory cell (Hochreiter & Schmidhuber, 1997)."""

from __future__ import annotations

import keras
from keras import activations, initializers

from models.layers.dense_cell import DenseCell


@keras.saving.register_keras_serializable(package="rnnkit")
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
        activation: act (default tanh).
        recurrent_activation: σ of the gates (default sigmoid).
        use_bias: whether to add `bias`.
        kernel_initializer: initializer of `kernel`.
        recurrent_initializer: initializer of `recurrent_kernel`.
        bias_initializer: initializer of `bias`.
        unit_forget_bias: start the forget-gate bias at 1 (Jozefowicz et al., 2015).
        kernel_regularizer: regularizer of `kernel`.
        recurrent_regularizer: regularizer of `recurrent_kernel`.
        bias_regularizer: regularizer of `bias`.
        kernel_constraint: constraint of `kernel`.
        recurrent_constraint: constraint of `recurrent_kernel`.
        bias_constraint: constraint of `bias`.
        dropout: fraction of x_t dropped in training (one mask per sequence).
        recurrent_dropout: fraction of h_{t-1} dropped in training (one mask per sequence).
        seed: seed of the dropout masks.
        **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    gates = 4

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
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(
            units, activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.unit_forget_bias = unit_forget_bias
        self.state_size = [units, units]

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
