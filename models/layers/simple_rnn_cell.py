"""SimpleRNNCell: the vanilla (Elman) recurrent cell."""

from __future__ import annotations

import keras

from models.layers.dense_cell import DenseCell


@keras.saving.register_keras_serializable(package="rnnkit")
class SimpleRNNCell(DenseCell):
    """h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel).

    Weights as keras.layers.SimpleRNNCell: kernel [input_dim, units], recurrent_kernel
    [units, units], bias [units].

    Args:
        units: size of h_t.
        activation: activation (default tanh; None means linear).
        use_bias: whether to add `bias`.
        kernel_initializer: initializer of `kernel`.
        recurrent_initializer: initializer of `recurrent_kernel`.
        bias_initializer: initializer of `bias`.
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

    gates = 1

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
        self.state_size = units

    def step(self, projected, states, dropout_masks=None, training=False):
        (h_prev,) = states
        h_rec = self.recurrent_input(h_prev, dropout_masks)
        h = self.activation(projected + keras.ops.matmul(h_rec, self.recurrent_kernel))
        return h, [h]
