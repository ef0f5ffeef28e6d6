"""The gradient probe against independent references, and clipping as the optimizer does it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.gradient_probe import (
    HiddenStateProbe,
    clip_gradients,
    gradient_norms,
    hidden_state_gradients,
)
from models.layers import RNN, Bidirectional, GRUCell, LSTMCell, SimpleRNNCell, StackedCells
from models.layers.layer_norm_lstm_cell import LayerNormLSTMCell

STEPS, UNITS, BATCH, FEATURES = 5, 3, 4, 2


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32"),
            rng.normal(size=(BATCH, 1)).astype("float32"))


def _model(cell, dtype="float32"):
    inputs = keras.Input((STEPS, FEATURES), dtype=dtype)
    return keras.Model(inputs, keras.layers.Dense(1, dtype=dtype)(RNN(cell, dtype=dtype)(inputs)))


def _run_steps(cell, head, x, y, states, first: int, tape=None, watched=None,
               loss_fn=None):
    """The loss of running the cell's one-step call from step `first` to the end, eagerly.

    With a tape, each output h_t is watched and collected in `watched`: the explicit loop the
    probe's perturbation trick must agree with.
    """
    output = states[0]
    for t in range(first, STEPS):
        output, states = cell(x[:, t], states)
        if tape is not None:
            tape.watch(output)
            watched.append(output)
    return (loss_fn or keras.losses.MeanSquaredError())(y, head(output))


def _reference_gradients(model, cell, x, y, loss_fn=None):
    """∂L/∂h_t from a tape watching every h_t of an explicit loop over the cell's steps."""
    watched = []
    with tf.GradientTape() as tape:
        loss = _run_steps(cell, model.layers[-1], x, y, cell.get_initial_state(BATCH), 0,
                          tape, watched, loss_fn)
    return np.stack([g.numpy() for g in tape.gradient(loss, watched)], axis=1)


@pytest.mark.parametrize("make_cell", [
    lambda: SimpleRNNCell(UNITS),
    lambda: LSTMCell(UNITS),
    lambda: StackedCells([GRUCell(4), LayerNormLSTMCell(UNITS)]),
], ids=["vanilla", "lstm", "stacked_gru_ln_lstm"])
def test_per_step_gradients_match_tape_reference(make_cell):
    keras.utils.set_random_seed(1)
    cell = make_cell()
    x, y = _data()
    model = _model(cell)
    probe = HiddenStateProbe(model, keras.losses.MeanSquaredError())
    probed = probe.gradients(x, y)
    reference = _reference_gradients(model, cell, x, y)
    assert probed.shape == (BATCH, STEPS, UNITS)
    assert np.abs(reference).max() > 1e-3
    np.testing.assert_allclose(probed, reference, rtol=1e-4, atol=1e-6)
    want_norms = np.linalg.norm(reference.transpose(1, 0, 2).reshape(STEPS, -1), axis=1)
    np.testing.assert_allclose(probe.norms(x, y), want_norms, rtol=1e-4)
    # The model is left as it was: its own cell and call, the same predictions.
    layer = model.layers[1]
    assert layer.cell is cell and "call" not in vars(layer)
    np.testing.assert_allclose(model(x), model.layers[-1](RNN(cell)(x)), rtol=1e-6)


def test_vanilla_gradients_match_finite_differences():
    keras.utils.set_random_seed(2)
    cell = SimpleRNNCell(UNITS, dtype="float64")
    x, y = (a.astype("float64") for a in _data(3))
    model = _model(cell, "float64")
    loss_fn = keras.losses.MeanSquaredError(dtype="float64")
    probed = hidden_state_gradients(model, x, y, loss_fn)
    delta = 1e-6
    states = cell.get_initial_state(BATCH)
    for t in range(STEPS):
        h, states = cell(x[:, t], states)
        for b, u in ((0, 0), (3, 2)):
            bump = np.zeros((BATCH, UNITS))
            bump[b, u] = delta
            # Perturb h_t, then run the remaining steps (none after the last: the head reads h).
            loss_up, loss_down = (_run_steps(cell, model.layers[-1], x, y, [h + sign * bump],
                                             t + 1, loss_fn=loss_fn) for sign in (1, -1))
            finite_difference = float(loss_up - loss_down) / (2 * delta)
            assert finite_difference == pytest.approx(probed[b, t, u], rel=1e-5, abs=1e-9)


def test_probe_reaches_the_forward_layer_of_a_bidirectional_model():
    keras.utils.set_random_seed(3)
    x, y = _data()
    inputs = keras.Input((STEPS, FEATURES))
    hidden = Bidirectional(RNN(SimpleRNNCell(UNITS)), merge_mode="sum")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    forward = model.layers[1].forward_layer

    def linear_loss(targets, predictions):
        # Linear in the predictions, so ∂L/∂prediction does not depend on the backward half.
        return tf.reduce_mean(targets * predictions)

    probed = hidden_state_gradients(model, x, y, linear_loss)
    # With merge "sum", the forward half is a plain RNN whose output feeds the head.
    plain = keras.Model(inputs, model.layers[-1](forward(inputs)))
    reference = _reference_gradients(plain, forward.cell, x, y, linear_loss)
    np.testing.assert_allclose(probed, reference, rtol=1e-4, atol=1e-6)


def test_model_without_recurrent_layer_is_rejected():
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="no rnnkit recurrent layer"):
        hidden_state_gradients(model, *_data(), keras.losses.MeanSquaredError())


def _large_gradient_model():
    keras.utils.set_random_seed(4)
    x, y = _data()
    model = _model(SimpleRNNCell(UNITS))
    return model, x, y * 100.0  # far-off targets: gradients with norms well above 1


@pytest.mark.parametrize("clipping", [{"clipnorm": 0.5}, {"global_clipnorm": 1.0}])
def test_clipping_bounds_norm_and_matches_the_optimizer_update(clipping):
    model, x, y = _large_gradient_model()
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(learning_rate=1.0, **clipping)
    norms = gradient_norms(model, x, y, loss_fn, optimizer)
    assert norms.before_clipping > 5.0
    n_weights = len(model.trainable_variables)
    if "clipnorm" in clipping:
        assert norms.after_clipping <= 0.5 * np.sqrt(n_weights) + 1e-5
    else:
        assert norms.after_clipping == pytest.approx(1.0, rel=1e-5)
    # SGD with learning rate 1 moves each weight by exactly the gradient it applies.
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    expected = clip_gradients(grads, optimizer)
    before = [v.numpy() for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    for old, variable, clipped in zip(before, model.trainable_variables, expected, strict=True):
        np.testing.assert_allclose(old - variable.numpy(), clipped, rtol=1e-5, atol=1e-7)


def test_without_clipping_norms_agree():
    model, x, y = _large_gradient_model()
    norms = gradient_norms(model, x, y, keras.losses.MeanSquaredError(),
                           keras.optimizers.Adam())
    assert norms.after_clipping == pytest.approx(norms.before_clipping)
