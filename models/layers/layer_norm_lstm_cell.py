"""LayerNormLSTMCell: the LSTM with layer normalisation (Ba, Kiros & Hinton, 2016)."""

from __future__ import annotations

import keras
from keras import initializers

from models.layers.lstm_cell import LSTMCell
from models.layers.rnn_cell import register_cell


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


@register_cell("ln_lstm")
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
        gamma_initializer: initializer of the three LN gains.
        beta_initializer: initializer of the three LN shifts.
        norm_epsilon: added to each LN's variance.
        **kwargs: LSTMCell's arguments (recurrent_activation, unit_forget_bias and DenseCell's:
            activation, use_bias, the initializers, regularizers and constraints of kernel,
            recurrent_kernel and bias, dropout, recurrent_dropout, seed) and Keras layer
            arguments (name, dtype, trainable).
    """

    def __init__(self, units: int, gamma_initializer="ones", beta_initializer="zeros",
                 norm_epsilon: float = 1e-3, **kwargs):
        if not norm_epsilon > 0:
            raise ValueError(f"`norm_epsilon` must be positive, got norm_epsilon={norm_epsilon!r}.")
        super().__init__(units, **kwargs)
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
