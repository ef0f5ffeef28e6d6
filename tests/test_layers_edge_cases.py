"""Edge cases of the RNN driver: mixed static batch sizes, no time steps, no sequences, fully
masked sequences, and errors that name the fix."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import layers as ours

TOL = 1e-5
UNITS, FEATURES = 4, 3


def _normal(rng, *shape) -> np.ndarray:
    return rng.normal(size=shape).astype("float32")


def _lstm(rng, steps: int | None = None, **kwargs) -> ours.LSTM:
    """A built LSTM with random weights (so that no state or output is zero by accident)."""
    layer = ours.LSTM(UNITS, return_state=True, **kwargs)
    layer.build((None, steps, FEATURES))
    layer.set_weights([_normal(rng, *w.shape) for w in layer.get_weights()])
    return layer


def _outputs_and_grads(layer, x, states, mask=None):
    """Flat outputs and d(sum sin(outputs))/d(x, states, weights)."""
    with tf.GradientTape() as tape:
        tape.watch([x, *states])
        outputs = tf.nest.flatten(layer(x, initial_state=list(states), mask=mask))
        loss = tf.add_n([tf.reduce_sum(tf.sin(o)) for o in outputs])
    return outputs, tape.gradient(loss, [x, *states, *layer.trainable_weights])


@pytest.mark.parametrize(("input_batch", "state_batch"), [(1, None), (None, 1)],
                         ids=["fixed_input", "fixed_states"])
def test_fixed_and_open_batch_sizes_mix_in_graph(input_batch, state_batch):
    """A [1, T, I] input with [None, H] states (and the reverse) traces, runs and differentiates
    as in eager mode, and the outputs keep the batch size one of them knows."""
    rng = np.random.default_rng(1)
    layer = _lstm(rng, return_sequences=True)
    x = tf.constant(_normal(rng, 1, 6, FEATURES))
    states = [tf.constant(_normal(rng, 1, UNITS)) for _ in range(2)]
    state_spec = tf.TensorSpec((state_batch, UNITS))
    traced = tf.function(lambda x, h, c: _outputs_and_grads(layer, x, [h, c]),
                         input_signature=[tf.TensorSpec((input_batch, None, FEATURES)),
                                          state_spec, state_spec])
    static = traced.get_concrete_function().structured_outputs[0]
    assert [o.shape.as_list() for o in static] == [[1, None, UNITS], [1, UNITS], [1, UNITS]]
    want_outputs, want_grads = _outputs_and_grads(layer, x, states)
    outputs, grads = traced(x, *states)
    for got, want in zip([*outputs, *grads], [*want_outputs, *want_grads], strict=True):
        np.testing.assert_allclose(got, want, atol=TOL)
    two = tf.constant(_normal(rng, 2, UNITS))
    with pytest.raises(tf.errors.InvalidArgumentError, match="different batch sizes"):
        if state_batch is None:
            traced(x, two, two)
        else:
            traced(tf.concat([x, x], 0), *states)


def _zero_step_cases() -> list:
    """(mode, unroll): eager, traced with static shapes, traced with unknown batch and time."""
    return [("eager", False), ("eager", True), ("graph", False), ("graph", True),
            ("graph_unknown_shape", False)]


@pytest.mark.parametrize(("mode", "unroll"), _zero_step_cases())
def test_sequence_without_time_steps(mode, unroll):
    """[B, 0, I] gives [B, 0, H] outputs, a zero last output and the initial states, which the
    gradient passes through unchanged."""
    rng = np.random.default_rng(2)
    sequences = _lstm(rng, 0, return_sequences=True, unroll=unroll, go_backwards=True)
    last_only = _lstm(rng, 0, unroll=unroll)
    x = tf.zeros((2, 0, FEATURES))
    states = [tf.constant(_normal(rng, 2, UNITS)) for _ in range(2)]
    probe = tf.constant(_normal(rng, 2, UNITS))

    def run(x, h, c, mask=None):
        with tf.GradientTape() as tape:
            tape.watch([h, c])
            seq, h_seq, _ = sequences(x, initial_state=[h, c], mask=mask)
            last, h_last, c_last = last_only(x, initial_state=[h, c], mask=mask)
            loss = tf.reduce_sum(h_last * probe)
        return seq, last, h_seq, h_last, c_last, tape.gradient(loss, h)

    for mask in (None, tf.zeros((2, 0), tf.bool)):
        args = [x, *states] + ([] if mask is None else [mask])
        if mode == "graph":
            fn = tf.function(run)
        elif mode == "graph_unknown_shape":
            fn = tf.function(run, input_signature=[
                tf.TensorSpec((None, None, FEATURES)), tf.TensorSpec((None, UNITS)),
                tf.TensorSpec((None, UNITS))] + ([] if mask is None else [
                    tf.TensorSpec((None, None), tf.bool)]))
        else:
            fn = run
        seq, last, h_seq, h_last, c_last, grad_h = fn(*args)
        assert seq.shape == (2, 0, UNITS)
        np.testing.assert_array_equal(last, np.zeros((2, UNITS)))
        for got in (h_seq, h_last):
            np.testing.assert_array_equal(got, states[0])
        np.testing.assert_array_equal(c_last, states[1])
        np.testing.assert_array_equal(grad_h, probe)


def test_stateful_layer_keeps_its_states_over_an_empty_chunk():
    rng = np.random.default_rng(3)
    layer = ours.GRU(UNITS, stateful=True, return_sequences=True)
    layer.build((2, None, FEATURES))
    run = tf.function(layer, input_signature=[tf.TensorSpec((2, None, FEATURES))])
    run(tf.constant(_normal(rng, 2, 5, FEATURES)))
    carried = layer.states[0].numpy()
    assert run(tf.zeros((2, 0, FEATURES))).shape == (2, 0, UNITS)
    np.testing.assert_array_equal(layer.states[0], carried)
    assert np.abs(carried).max() > 0


@pytest.mark.parametrize("mode", ["eager", "graph_unknown_shape"])
def test_batch_of_no_sequences(mode):
    rng = np.random.default_rng(4)
    layer = ours.Bidirectional(_lstm(rng, return_sequences=True))

    def run(x, mask):
        with tf.GradientTape() as tape:
            outputs = layer(x, mask=mask)
            loss = tf.add_n([tf.reduce_sum(o) for o in outputs])
        return outputs, tape.gradient(loss, layer.trainable_weights)

    if mode != "eager":
        run = tf.function(run, input_signature=[tf.TensorSpec((None, None, FEATURES)),
                                                tf.TensorSpec((None, None), tf.bool)])
    outputs, grads = run(tf.zeros((0, 5, FEATURES)), tf.zeros((0, 5), tf.bool))
    assert [tuple(o.shape) for o in outputs] == [(0, 5, 2 * UNITS)] + [(0, UNITS)] * 4
    assert len(grads) == 6
    for grad in grads:
        np.testing.assert_array_equal(grad, np.zeros(grad.shape))


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unrolled"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
def test_fully_masked_sequence_keeps_its_initial_states(go_backwards, unroll):
    """A row whose mask is all False keeps its initial states and zero outputs; the other rows
    are unaffected by it."""
    rng = np.random.default_rng(5)
    layer = _lstm(rng, 8, return_sequences=True, go_backwards=go_backwards, unroll=unroll)
    x = tf.constant(_normal(rng, 3, 8, FEATURES))
    h0, c0 = (tf.constant(_normal(rng, 3, UNITS)) for _ in range(2))
    mask = np.ones((3, 8), bool)
    mask[1] = False
    mask[2, 5:] = False
    outputs, h, c = layer(x, initial_state=[h0, c0], mask=tf.constant(mask))
    np.testing.assert_array_equal(outputs[1], np.zeros((8, UNITS)))
    np.testing.assert_array_equal(h[1], h0[1])
    np.testing.assert_array_equal(c[1], c0[1])
    for row in (0, 2):
        _, alone_h, alone_c = layer(x[row:row + 1, :mask[row].sum()],
                                    initial_state=[h0[row:row + 1], c0[row:row + 1]])
        np.testing.assert_allclose(h[row], alone_h[0], atol=TOL)
        np.testing.assert_allclose(c[row], alone_c[0], atol=TOL)


def test_shape_mistakes_raise_errors_that_name_the_fix():
    rng = np.random.default_rng(6)
    layer = _lstm(rng)
    x = tf.zeros((2, 5, FEATURES))
    with pytest.raises(ValueError, match="initial_state has batch size 3 but the input has 2"):
        layer(x, initial_state=[tf.zeros((3, UNITS))] * 2)
    with pytest.raises(ValueError, match=r"has shape \(4,\) where the cell expects \(batch, 4\)"):
        layer(x, initial_state=[tf.zeros((UNITS,))] * 2)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\).*pass a \[batch, time\] mask"):
        layer(x, mask=tf.ones((2, 4), tf.bool))
    with pytest.raises(ValueError, match="unroll=True needs a known number of time steps"):
        ours.GRU(UNITS, unroll=True)(keras.Input((None, FEATURES)))


@pytest.mark.parametrize("cell", sorted(ours.CELLS))
def test_state_names_match_the_states_a_layer_returns(cell):
    layer = ours.recurrent_layer(cell, 3, return_state=True)
    _, *states = layer(tf.zeros([2, 4, 5]))
    assert len(ours.state_names(cell)) == len(states)
    with pytest.raises(ValueError, match="not a registered cell"):
        ours.state_names("transformer")


def test_keras_still_has_the_private_helper_rnn_imports():
    """rnn.py imports keras.src.utils.tracking.no_automatic_dependency_tracking, which is private:
    when a Keras upgrade moves it, this test names it (and the import names Keras's version)."""
    try:
        tracking = importlib.import_module("keras.src.utils.tracking")
    except ImportError as err:
        pytest.fail(f"Keras {keras.__version__} has no keras.src.utils.tracking ({err}); "
                    "models/layers/rnn.py imports no_automatic_dependency_tracking from it")
    assert hasattr(tracking, "no_automatic_dependency_tracking"), (
        f"Keras {keras.__version__} moved no_automatic_dependency_tracking out of "
        "keras.src.utils.tracking; models/layers/rnn.py imports it from there")


def test_a_moved_private_helper_fails_the_import_with_the_keras_version():
    # A fresh interpreter: re-importing rnn.py here would re-register RNN for the whole session.
    code = ("import keras.src.utils.tracking as tracking; "
            "del tracking.no_automatic_dependency_tracking; import models.layers")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], timeout=300, check=False)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "no_automatic_dependency_tracking" in last_line
    assert f"Keras {keras.__version__}" in last_line


def test_another_backend_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match=r"TensorFlow backend only.*KERAS_BACKEND=tensorflow"):
        ours.LSTM(3)


def test_cell_rnn_hands_layer_arguments_to_the_layer_and_the_rest_to_the_cell():
    layer = ours.LSTM(3, name="encoder", autocast=False, dtype="float64", dropout=0.5,
                      activity_regularizer="l2", return_sequences=True)
    assert (layer.name, layer.autocast, layer.return_sequences) == ("encoder", False, True)
    assert layer.activity_regularizer is not None and layer.cell.activity_regularizer is None
    assert (layer.cell.name, layer.cell.dropout, layer.cell.dtype) == ("lstm_cell", 0.5, "float64")
    with pytest.raises(ValueError, match="Unrecognized keyword arguments passed to LSTMCell"):
        ours.LSTM(3, bogus=1)
    with pytest.raises(ValueError, match="LSTM runs LSTMCell, got cell_class=GRUCell"):
        ours.LSTM(3, cell_class=ours.GRUCell)
    with pytest.raises(ValueError, match="cell_class must be an RNNCell subclass"):
        ours.CellRNN(3)
