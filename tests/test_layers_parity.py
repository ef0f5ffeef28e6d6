"""Our recurrent layers against Keras's built-ins with the same weights: outputs, states, grads."""

from __future__ import annotations

import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import layers as ours

TOL = 1e-5
BATCH, STEPS, FEATURES, UNITS = 3, 8, 5, 4  # 8 steps: the loop runs 4 steps per iteration
LENGTHS = [8, 5, 1]  # right padding of different lengths, one full sequence

KINDS = {
    "simple_rnn": (lambda **kw: ours.SimpleRNN(UNITS, **kw),
                   lambda **kw: keras.layers.SimpleRNN(UNITS, **kw)),
    "lstm": (lambda **kw: ours.LSTM(UNITS, **kw), lambda **kw: keras.layers.LSTM(UNITS, **kw)),
    "gru_reset_after": (lambda **kw: ours.GRU(UNITS, **kw),
                        lambda **kw: keras.layers.GRU(UNITS, **kw)),
    "gru_reset_before": (lambda **kw: ours.GRU(UNITS, reset_after=False, **kw),
                         lambda **kw: keras.layers.GRU(UNITS, reset_after=False, **kw)),
}
N_STATES = {"simple_rnn": 1, "lstm": 2, "gru_reset_after": 1, "gru_reset_before": 1}

# (layer options, call options): each entry exercises one feature, several in combination.
CASES = {
    "last_output": ({}, {}),
    "sequences": ({"return_sequences": True}, {}),
    "state": ({"return_state": True}, {}),
    "sequences_state": ({"return_sequences": True, "return_state": True}, {}),
    "mask": ({"return_sequences": True, "return_state": True}, {"mask": "right_padded"}),
    "mask_last_output": ({"return_state": True}, {"mask": "right_padded"}),
    "mask_zero_output": ({"return_sequences": True, "zero_output_for_mask": True},
                         {"mask": "right_padded"}),
    "mixed_mask": ({"return_sequences": True, "return_state": True}, {"mask": "mixed"}),
    "go_backwards": ({"return_sequences": True, "go_backwards": True}, {}),
    "go_backwards_mask": ({"return_sequences": True, "return_state": True, "go_backwards": True},
                          {"mask": "right_padded"}),
    "initial_state": ({"return_sequences": True, "return_state": True},
                      {"initial_state": True}),
    "unroll_mask": ({"return_sequences": True, "return_state": True, "unroll": True},
                    {"mask": "right_padded"}),
    "empty_row_mask": ({"return_sequences": True, "return_state": True},
                       {"mask": "one_empty", "initial_state": True}),
}


def _masks() -> dict:
    right = np.arange(STEPS)[None, :] < np.array(LENGTHS)[:, None]
    mixed = np.array([[1, 0, 1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 1, 1, 1, 1], [1] * 8], bool)
    one_empty = right.copy()
    one_empty[1] = False  # a sequence without any valid step keeps its initial states
    return {"right_padded": tf.constant(right), "mixed": tf.constant(mixed),
            "one_empty": tf.constant(one_empty)}


def _random_like(layer, rng) -> list[np.ndarray]:
    return [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.get_weights()]


def _pair(make_ours, make_keras, rng, shape=(BATCH, STEPS, FEATURES)):
    """Built layers, ours and Keras's, with the same random weights."""
    mine, theirs = make_ours(), make_keras()
    mine.build(shape)
    theirs.build(shape)
    weights = _random_like(theirs, rng)
    theirs.set_weights(weights)
    mine.set_weights(weights)
    return mine, theirs


def _run(layer, x, call_kwargs, probe_seed=7):
    """Flat outputs and the gradients of a random projection of them w.r.t. x and weights."""
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        outputs = tf.nest.flatten(layer(x, **call_kwargs))
        rng = np.random.default_rng(probe_seed)
        loss = tf.add_n([tf.reduce_sum(o * rng.normal(size=o.shape).astype("float32"))
                         for o in outputs])
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return [o.numpy() for o in outputs], [g.numpy() for g in grads]


def _assert_same(mine, theirs, what):
    assert len(mine) == len(theirs), f"{what}: {len(mine)} tensors vs {len(theirs)}"
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert a.shape == b.shape, f"{what}[{i}]: shape {a.shape} vs {b.shape}"
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0, err_msg=f"{what}[{i}]")


def _compare(mine, theirs, x, call_kwargs):
    out_a, grad_a = _run(mine, x, call_kwargs)
    out_b, grad_b = _run(theirs, x, call_kwargs)
    _assert_same(out_a, out_b, "outputs")
    _assert_same(grad_a, grad_b, "gradients")
    return out_a


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_matches_keras(kind, case):
    # crc32, not hash(): str hashes change with every process, and so would the inputs.
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{case}".encode()))
    layer_kwargs, call_spec = CASES[case]
    mine, theirs = _pair(lambda: KINDS[kind][0](**layer_kwargs),
                         lambda: KINDS[kind][1](**layer_kwargs), rng)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    call_kwargs = {}
    if "mask" in call_spec:
        call_kwargs["mask"] = _masks()[call_spec["mask"]]
    if "initial_state" in call_spec:
        call_kwargs["initial_state"] = [
            tf.constant(rng.normal(size=(BATCH, UNITS)).astype("float32"))
            for _ in range(N_STATES[kind])]
    outputs = _compare(mine, theirs, x, call_kwargs)
    if call_spec.get("mask") == "right_padded" and layer_kwargs.get("return_sequences"):
        padded = ~_masks()["right_padded"].numpy()
        if layer_kwargs.get("zero_output_for_mask"):
            assert np.all(outputs[0][padded] == 0.0)


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_after"])
def test_stateful_matches_keras_over_two_calls(kind):
    rng = np.random.default_rng(3)
    mine, theirs = _pair(lambda: KINDS[kind][0](stateful=True, return_sequences=True),
                         lambda: KINDS[kind][1](stateful=True, return_sequences=True), rng)
    first, second = (rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
                     for _ in range(2))
    np.testing.assert_allclose(mine(first), theirs(first), atol=TOL)
    carried = mine(second)
    np.testing.assert_allclose(carried, theirs(second), atol=TOL)
    mine.reset_state()
    theirs.reset_state()
    fresh = mine(second)
    np.testing.assert_allclose(fresh, theirs(second), atol=TOL)
    assert np.abs(fresh - carried).max() > 1e-3  # the second call did start from carried states


def test_stacked_cells_match_keras():
    rng = np.random.default_rng(5)
    mine, theirs = _pair(
        lambda: ours.RNN([ours.LSTMCell(4), ours.GRUCell(3), ours.SimpleRNNCell(2)],
                         return_sequences=True, return_state=True),
        lambda: keras.layers.RNN(
            [keras.layers.LSTMCell(4), keras.layers.GRUCell(3), keras.layers.SimpleRNNCell(2)],
            return_sequences=True, return_state=True), rng)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    _compare(mine, theirs, x, {})
    _compare(mine, theirs, x, {"mask": _masks()["right_padded"]})


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "right_padded"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_matches_keras(merge_mode, return_sequences, masked):
    rng = np.random.default_rng(11)
    kwargs = {"return_sequences": return_sequences, "return_state": True}
    mine, theirs = _pair(
        lambda: ours.Bidirectional(ours.LSTM(UNITS, **kwargs), merge_mode=merge_mode),
        lambda: keras.layers.Bidirectional(keras.layers.LSTM(UNITS, **kwargs),
                                           merge_mode=merge_mode), rng)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    call_kwargs = {"mask": _masks()["right_padded"]} if masked else {}
    outputs = _compare(mine, theirs, x, call_kwargs)
    n_outputs = 2 if merge_mode is None else 1
    assert len(outputs) == n_outputs + 4  # [output(s), h_fw, c_fw, h_bw, c_bw]
    if masked and return_sequences and merge_mode in ("concat", None):
        padded = ~_masks()["right_padded"].numpy()
        assert np.all(outputs[0][padded] == 0.0)


def test_bidirectional_reverses_each_sequence_within_its_length():
    """Backward outputs of a padded sequence equal those of the unpadded sequence alone."""
    rng = np.random.default_rng(13)
    layer = ours.Bidirectional(ours.GRU(UNITS, return_sequences=True, return_state=True),
                               merge_mode=None)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    mask = _masks()["right_padded"]
    _, backward, _, backward_state = layer(x, mask=mask)
    for row, length in enumerate(LENGTHS):
        _, alone, _, alone_state = layer(x[row:row + 1, :length])
        np.testing.assert_allclose(backward[row, :length], alone[0], atol=TOL)
        np.testing.assert_allclose(backward_state[row], alone_state[0], atol=TOL)


def test_bidirectional_gru_with_initial_state_matches_keras():
    rng = np.random.default_rng(17)
    mine, theirs = _pair(
        lambda: ours.Bidirectional(ours.GRU(UNITS, return_sequences=True, return_state=True)),
        lambda: keras.layers.Bidirectional(
            keras.layers.GRU(UNITS, return_sequences=True, return_state=True)), rng)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    states = [tf.constant(rng.normal(size=(BATCH, UNITS)).astype("float32")) for _ in range(2)]
    _compare(mine, theirs, x, {"initial_state": states, "mask": _masks()["right_padded"]})


def _functional(recurrent_layers):
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(20, FEATURES, mask_zero=True,
                               embeddings_initializer=keras.initializers.RandomNormal(seed=1))(
        tokens)
    for layer in recurrent_layers:
        h = layer(h)
    return keras.Model(tokens, h)


def test_mask_propagates_from_embedding_like_keras():
    rng = np.random.default_rng(19)
    pairs = [_pair(lambda: ours.Bidirectional(ours.LSTM(UNITS, return_sequences=True)),
                   lambda: keras.layers.Bidirectional(keras.layers.LSTM(UNITS,
                                                                        return_sequences=True)),
                   rng),
             _pair(lambda: ours.GRU(UNITS, return_sequences=True),
                   lambda: keras.layers.GRU(UNITS, return_sequences=True), rng,
                   shape=(BATCH, STEPS, 2 * UNITS)),
             _pair(lambda: ours.SimpleRNN(UNITS), lambda: keras.layers.SimpleRNN(UNITS), rng,
                   shape=(BATCH, STEPS, UNITS))]
    mine = _functional([a for a, _ in pairs])
    theirs = _functional([b for _, b in pairs])
    tokens = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]], "int32")
    np.testing.assert_allclose(mine(tokens), theirs(tokens), atol=TOL)
    masked_output = pairs[1][0](pairs[0][0](mine.layers[1](tokens)))
    np.testing.assert_array_equal(masked_output._keras_mask, tokens != 0)


def test_rnn_cell_call_is_one_step_of_the_driver():
    rng = np.random.default_rng(23)
    cell = ours.LSTMCell(UNITS)
    layer = ours.RNN(cell, return_state=True)
    x = rng.normal(size=(BATCH, 1, FEATURES)).astype("float32")
    output, h, c = layer(x)
    step_output, (step_h, step_c) = cell(x[:, 0], cell.get_initial_state(BATCH))
    np.testing.assert_allclose(step_output, output, atol=1e-6)
    np.testing.assert_allclose(step_c, c, atol=1e-6)
    np.testing.assert_allclose(step_h, h, atol=1e-6)


def test_driver_errors_name_the_fix():
    with pytest.raises(ValueError, match="initial_state has 1 tensors"):
        ours.LSTM(UNITS)(np.zeros((2, 3, FEATURES), "float32"),
                         initial_state=[tf.zeros((2, UNITS))])
    with pytest.raises(ValueError, match="has size 3 where the cell expects 4"):
        ours.GRU(UNITS)(np.zeros((2, 3, FEATURES), "float32"), initial_state=[tf.zeros((2, 3))])
    with pytest.raises(ValueError, match="merge_mode"):
        ours.Bidirectional(ours.LSTM(UNITS), merge_mode="max")
    with pytest.raises(ValueError, match="not an rnnkit cell"):
        ours.RNN(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="unroll=True needs a known number of time steps"):
        tf.function(ours.GRU(UNITS, unroll=True).__call__,
                    input_signature=[tf.TensorSpec((None, None, FEATURES))]).get_concrete_function()


def test_last_output_with_zero_output_for_mask_is_the_true_end():
    """Deliberate difference from Keras, which returns zeros for every padded sequence here."""
    rng = np.random.default_rng(29)
    layer = ours.LSTM(UNITS, zero_output_for_mask=True, return_state=True)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    output, h, _ = layer(x, mask=_masks()["right_padded"])
    np.testing.assert_array_equal(output, h)
    for row, length in enumerate(LENGTHS):
        alone, _, _ = layer(x[row:row + 1, :length])
        np.testing.assert_allclose(output[row], alone[0], atol=TOL)


def _traced_with_gradients(layer):
    """A tf.function of unknown batch and length: (x, mask) -> outputs, their gradients."""
    signature = [tf.TensorSpec((None, None, FEATURES)), tf.TensorSpec((None, None), tf.bool)]

    @tf.function(input_signature=signature)
    def fn(x, mask):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = tf.nest.flatten(layer(x, mask=mask))
            loss = tf.add_n([tf.reduce_sum(tf.sin(o)) for o in outputs])
        return outputs, tape.gradient(loss, [x, *layer.trainable_weights])
    return fn


def test_unknown_length_inside_tf_function_matches_keras():
    """One traced function (unknown batch and time) over two lengths, masked, both directions."""
    rng = np.random.default_rng(31)
    kwargs = {"return_sequences": True, "return_state": True}
    mine, theirs = _pair(
        lambda: ours.Bidirectional(ours.LSTM(UNITS, **kwargs)),
        lambda: keras.layers.Bidirectional(keras.layers.LSTM(UNITS, **kwargs)), rng)
    fn_a, fn_b = _traced_with_gradients(mine), _traced_with_gradients(theirs)
    for batch, steps in ((3, 3), (2, 13)):
        x = rng.normal(size=(batch, steps, FEATURES)).astype("float32")
        mask = np.arange(steps)[None, :] < rng.integers(1, steps + 1, size=(batch, 1))
        out_a, grad_a = fn_a(x, mask)
        out_b, grad_b = fn_b(x, mask)
        _assert_same([o.numpy() for o in out_a], [o.numpy() for o in out_b], "outputs")
        _assert_same([g.numpy() for g in grad_a], [g.numpy() for g in grad_b], "gradients")


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("kind", KINDS)
def test_unknown_length_whole_chunks_then_single_steps_match_keras(kind, go_backwards):
    """With the length unknown at tracing time the loop runs whole chunks of steps, then the
    rest one by one: lengths below, at and between multiples of the chunk, masked."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{go_backwards}".encode()))
    kwargs = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards}
    mine, theirs = _pair(lambda: KINDS[kind][0](**kwargs), lambda: KINDS[kind][1](**kwargs),
                         rng)
    fn_a, fn_b = _traced_with_gradients(mine), _traced_with_gradients(theirs)
    for steps in (1, 4, 6, 9):
        x = rng.normal(size=(BATCH, steps, FEATURES)).astype("float32")
        mask = np.arange(steps)[None, :] < np.array([[steps], [max(steps - 2, 1)], [1]])
        out_a, grad_a = fn_a(x, mask)
        out_b, grad_b = fn_b(x, mask)
        _assert_same([o.numpy() for o in out_a], [o.numpy() for o in out_b], f"{steps} steps")
        _assert_same([g.numpy() for g in grad_a], [g.numpy() for g in grad_b],
                     f"{steps} steps, gradients")
