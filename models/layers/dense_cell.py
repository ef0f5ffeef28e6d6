"""DenseCell: the weights, options, dropout and input projection every built-in cell shares."""

from __future__ import annotations

import keras
from keras import activations, constraints, initializers, regularizers

from models.layers.dropout_masks import make_dropout_masks
from models.layers.rnn_cell import RNNCell


def _matmul_last_axis(inputs, kernel):
    """inputs @ kernel over the last axis as ONE 2-D matmul (a broadcast batched matmul over
    [time, batch, features] is ~40% slower on CPU)."""
    if len(inputs.shape) == 2:
        return keras.ops.matmul(inputs, kernel)
    leading = keras.ops.shape(inputs)[:-1]
    flat = keras.ops.reshape(inputs, (-1, inputs.shape[-1]))
    return keras.ops.reshape(keras.ops.matmul(flat, kernel), (*leading, kernel.shape[-1]))


class DenseCell(RNNCell):
    """A cell whose gates are dense maps of x_t and h_{t-1}, stored Keras-style.

    Weights: `kernel` [input_dim, gates * units], `recurrent_kernel` [units, gates * units] and
    `bias` (shape from `bias_shape()`), gate blocks side by side in the order the subclass
    documents, so weights copy one-to-one from Keras's built-in cells. Its arguments are every
    built-in cell's; a cell adds only its own and hands the rest on as `**kwargs`.

    Args:
        units: size of the output h_t.
        activation: activation of the candidate / output.
        use_bias: whether the cell adds a bias.
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
        recurrent_dropout: fraction of h_{t-1} dropped in training in the recurrent products.
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
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"`units` must be a positive integer, got units={units!r}.")
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"`{name}` must be a fraction in [0, 1], got {name}={rate!r}.")
        super().__init__(**kwargs)
        self.units = units
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.output_size = units
        # Every state is `units` wide: h, or h and c.
        self.state_size = units if len(self.state_names) == 1 else [units] * len(self.state_names)

    def bias_shape(self) -> tuple:
        """Shape of `bias`; GRU with reset_after keeps input and recurrent biases apart."""
        return (self.gates * self.units,)

    def bias_initializer_for_build(self):
        """Initializer used to create `bias`; LSTM overrides it for unit_forget_bias."""
        return self.bias_initializer

    def input_bias(self):
        """The bias added to x_t @ kernel (None without bias)."""
        return self.bias

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{self.name}: the last input dimension must be known, got shape {input_shape}; "
                "give the Input layer a feature size.")
        self.kernel = self.add_weight(
            shape=(input_dim, self.gates * self.units), name="kernel",
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.gates * self.units), name="recurrent_kernel",
            initializer=self.recurrent_initializer, regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=self.bias_shape(), name="bias",
                initializer=self.bias_initializer_for_build(), regularizer=self.bias_regularizer,
                constraint=self.bias_constraint)

    def get_dropout_masks(self, batch_size, training: bool = False):
        return make_dropout_masks(
            batch_size, self.kernel.shape[0], self.units, self.dropout, self.recurrent_dropout,
            self.seed_generator, self.compute_dtype, training)

    def project_inputs(self, inputs, dropout_masks=None):
        """x_t @ kernel + input bias, for [batch, input_dim] or [time, batch, input_dim]."""
        if dropout_masks is not None and dropout_masks.inputs is not None:
            inputs = inputs * dropout_masks.inputs
        projected = _matmul_last_axis(inputs, self.kernel)
        bias = self.input_bias()
        return projected if bias is None else projected + bias

    def recurrent_input(self, h_prev, dropout_masks):
        """h_{t-1} as it enters the recurrent products (recurrent dropout applied)."""
        if dropout_masks is not None and dropout_masks.recurrent is not None:
            return h_prev * dropout_masks.recurrent
        return h_prev

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
