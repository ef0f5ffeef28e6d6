"""LayerNormLSTMCell: the LSTM with layer normalisation (Ba, Kiros & Hinton, 2016)."""

from __future__ import annotations

import keras
from keras import initializers

from models.layers.lstm_cell import LSTMCell


def layer_norm(x, gamma, beta, epsilon: float):
    """Normalise the last axis to zero mean and unit variance, then scale by gamma, shift by beta.

    Args:
        x: [..., features].
        gamma: [features] gain.
        beta: [features] shift.
        epsilon: added to the variance so constant vectors do not divide by zero.
    """
    mean = keras.ops.mean(x, axis=-1, keepdims=True)
    variance = keras.ops.mean(keras.ops.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * keras.ops.rsqrt(variance + epsilon) * gamma + beta


@keras.saving.register_keras_serializable(package="rnnkit")
class LayerNormLSTMCell(LSTMCell):
    """LSTM step with layer normalisation of both gate projections and of the cell state.

        z = LN(x_t @ kernel; γ_x, β_x) + LN(h_{t-1} @ recurrent_kernel; γ_h, β_h) + bias
        i = σ(z_i)   f = σ(z_f)   o = σ(z_o)   c̃ = act(z_c)          (blocks i | f | c | o)
        c_t = f * c_{t-1} + i * c̃
        h_t = o * act(LN(c_t; γ_c, β_c))

    As in the paper, each LN normalises the whole 4·units gate vector (or the units-long cell
    state) of one example at one step. The input and recurrent projections are normalised
    separately so that neither dominates the gates; normalising c_t before the output keeps h_t
    in range however large the memory grows. Because LN(x_t @ kernel) depends on x_t alone, it
    is computed for all steps at once in `project_inputs`, like the plain LSTM's projection.
    Weights: those of LSTMCell plus `input_gamma`, `input_beta`, `recurrent_gamma`,
    `recurrent_beta` [4 units] and `cell_gamma`, `cell_beta` [units]. States: [h, c].

    Args:
        units: size of h_t and c_t.
        activation: act (default tanh).
        recurrent_activation: σ of the gates (default sigmoid).
        use_bias: whether to add `bias` after the two normalised projections.
        kernel_initializer: initializer of `kernel`.
        recurrent_initializer: initializer of `recurrent_kernel`.
        bias_initializer: initializer of `bias`.
        unit_forget_bias: start the forget-gate bias at 1 (Jozefowicz et al., 2015).
        gamma_initializer: initializer of the three LN gains.
        beta_initializer: initializer of the three LN shifts.
        norm_epsilon: added to each LN's variance.
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
        gamma_initializer="ones",
        beta_initializer="zeros",
        norm_epsilon: float = 1e-3,
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
        if not norm_epsilon > 0:
            raise ValueError(f"`norm_epsilon` must be positive, got norm_epsilon={norm_epsilon!r}.")
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias, kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, **kwargs)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.norm_epsilon = float(norm_epsilon)

    def build(self, input_shape):
        super().build(input_shape)
        gates = self.gates * self.units
        for name, size in (("input", gates), ("recurrent", gates), ("cell", self.units)):
            setattr(self, f"{name}_gamma", self.add_weight(
                shape=(size,), name=f"{name}_gamma", initializer=self.gamma_initializer))
            setattr(self, f"{name}_beta", self.add_weight(
                shape=(size,), name=f"{name}_beta", initializer=self.beta_initializer))

    def project_inputs(self, inputs, dropout_masks=None):
        """LN(x_t @ kernel) + bias, for [batch, input_dim] or [time, batch, input_dim]."""
        if dropout_masks is not None and dropout_masks.inputs is not None:
            inputs = inputs * dropout_masks.inputs
        projected = layer_norm(keras.ops.matmul(inputs, self.kernel), self.input_gamma,
                               self.input_beta, self.norm_epsilon)
        return projected if self.bias is None else projected + self.bias

    def step(self, projected, states, dropout_masks=None, training=False):
        h_prev, c_prev = states
        h_rec = self.recurrent_input(h_prev, dropout_masks)
        recurrent = layer_norm(keras.ops.matmul(h_rec, self.recurrent_kernel),
                               self.recurrent_gamma, self.recurrent_beta, self.norm_epsilon)
        z_i, z_f, z_c, z_o = keras.ops.split(projected + recurrent, 4, axis=-1)
        i = self.recurrent_activation(z_i)
        f = self.recurrent_activation(z_f)
        o = self.recurrent_activation(z_o)
        c = f * c_prev + i * self.activation(z_c)
        normalised = layer_norm(c, self.cell_gamma, self.cell_beta, self.norm_epsilon)
        h = o * self.activation(normalised)
        return h, [h, c]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "norm_epsilon": self.norm_epsilon,
        }
