"""GRUCell: the gated recurrent unit (Cho et al., 2014), both reset-gate placements."""

from __future__ import annotations

import keras
from keras import activations

from models.layers.dense_cell import DenseCell
from models.layers.rnn_cell import register_cell


@register_cell("gru")
class GRUCell(DenseCell):
    """GRU step with update (z), reset (r) and candidate (h̃) blocks, in that order.

        x = x_t @ kernel + b_x                         (blocks z | r | h)
        z = σ(x_z + h_{t-1} @ U_z + b_hz)    r = σ(x_r + h_{t-1} @ U_r + b_hr)
        reset_after=True:   h̃ = act(x_h + r * (h_{t-1} @ U_h + b_hh))     (cuDNN's form)
        reset_after=False:  h̃ = act(x_h + (r * h_{t-1}) @ U_h)            (the 2014 paper's)
        h_t = z * h_{t-1} + (1 - z) * h̃

    U = recurrent_kernel, σ = recurrent_activation, act = activation. Weights as
    keras.layers.GRUCell: kernel [input_dim, 3 units], recurrent_kernel [units, 3 units], bias
    [3 units], or [2, 3 units] with reset_after (row 0: b_x, row 1: the recurrent b_h).

    Args:
        units: size of h_t.
        recurrent_activation: σ of the gates (default sigmoid).
        reset_after: apply the reset gate after the recurrent product (default, cuDNN-compatible).
        **kwargs: DenseCell's arguments (activation: act, default tanh; use_bias; the
            initializers, regularizers and constraints of kernel, recurrent_kernel and bias;
            dropout, recurrent_dropout, seed) and Keras layer arguments (name, dtype, trainable).
    """

    gates = 3

    def __init__(self, units: int, recurrent_activation="sigmoid", reset_after: bool = True,
                 **kwargs):
        super().__init__(units, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.reset_after = reset_after

    def bias_shape(self) -> tuple:
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def input_bias(self):
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def step(self, projected, states, dropout_masks=None, training=False):
        (h_prev,) = states
        h_rec = self.recurrent_input(h_prev, dropout_masks)
        x_z, x_r, x_h = keras.ops.split(projected, 3, axis=-1)
        if self.reset_after:
            inner = keras.ops.matmul(h_rec, self.recurrent_kernel)
            if self.bias is not None:
                inner = inner + self.bias[1]
            h_z, h_r, h_h = keras.ops.split(inner, 3, axis=-1)
            z = self.recurrent_activation(x_z + h_z)
            r = self.recurrent_activation(x_r + h_r)
            candidate = self.activation(x_h + r * h_h)
        else:
            u_zr, u_h = self.recurrent_kernel[:, : 2 * self.units], self.recurrent_kernel[
                :, 2 * self.units:]
            h_z, h_r = keras.ops.split(keras.ops.matmul(h_rec, u_zr), 2, axis=-1)
            z = self.recurrent_activation(x_z + h_z)
            r = self.recurrent_activation(x_r + h_r)
            candidate = self.activation(x_h + keras.ops.matmul(r * h_rec, u_h))
        h = z * h_prev + (1.0 - z) * candidate
        return h, [h]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "reset_after": self.reset_after,
        }
