"""The driver's cuDNN path (models/layers/cudnn_path.py): when it is taken, and that it matches
the loop. This machine has no GPU: the GPU comparison is skipped there, the rest runs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import layers as ours
from models.layers.cudnn_path import cudnn_applies, keras_tf_rnn, run_cudnn
from models.layers.dropout_masks import DropoutMasks

HAS_GPU = bool(tf.config.list_logical_devices("GPU"))
UNITS, FEATURES = 4, 3


def _built(layer):
    layer.build((2, 5, FEATURES))
    return layer


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Makes Keras's cuDNN check see a GPU, to test the configuration checks on CPU."""
    monkeypatch.setattr(keras_tf_rnn, "_is_gpu_available", lambda: True)


def test_no_cudnn_without_a_gpu():
    cell = _built(ours.LSTM(UNITS)).cell
    assert cudnn_applies(cell, None, None, unroll=False) is HAS_GPU


@pytest.mark.parametrize(("layer", "expected"), [
    (lambda: ours.LSTM(UNITS), True),
    (lambda: ours.GRU(UNITS), True),
    (lambda: ours.GRU(UNITS, reset_after=False), False),
    (lambda: ours.LSTM(UNITS, activation="relu"), False),
    (lambda: ours.GRU(UNITS, recurrent_activation="hard_sigmoid"), False),
    (lambda: ours.LSTM(UNITS, use_bias=False), False),
    (lambda: ours.SimpleRNN(UNITS), False),
    (lambda: ours.LayerNormLSTM(UNITS), False),
    (lambda: ours.LSTM(UNITS, dtype="float16"), False),
], ids=["lstm", "gru", "gru_reset_before", "relu", "hard_sigmoid", "no_bias", "simple_rnn",
        "layer_norm_lstm", "float16"])
def test_cudnn_only_for_configurations_it_computes_exactly(pretend_gpu, layer, expected):
    cell = _built(layer()).cell
    assert cudnn_applies(cell, None, None, unroll=False) is expected


def test_mask_unroll_and_recurrent_dropout_take_the_loop(pretend_gpu):
    cell = _built(ours.LSTM(UNITS)).cell
    ones = tf.ones((2, UNITS))
    assert not cudnn_applies(cell, None, tf.ones((2, 5), tf.bool), unroll=False)
    assert not cudnn_applies(cell, None, None, unroll=True)
    assert not cudnn_applies(cell, DropoutMasks(None, ones), None, unroll=False)
    assert cudnn_applies(cell, DropoutMasks(tf.ones((2, FEATURES)), None), None, unroll=False)


@pytest.mark.skipif(HAS_GPU, reason="on a GPU the kernel runs instead of declining")
def test_declines_when_the_device_has_no_cudnn_kernel(pretend_gpu):
    """With Keras fooled into seeing a GPU, the cuDNN op fails on the CPU and the driver falls
    back to its loop (eager mode, where the failure shows at the call)."""
    layer = _built(ours.LSTM(UNITS, return_sequences=True, return_state=True))
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, FEATURES)), tf.float32)
    states = layer.get_initial_state(2)
    assert run_cudnn(layer.cell, x, states, None, False, True) is None
    assert [o.shape for o in layer(x)] == [(2, 5, UNITS), (2, UNITS), (2, UNITS)]


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU with cuDNN; this machine has none")
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("options", [{}, {"return_sequences": True, "return_state": True},
                                     {"return_sequences": True, "go_backwards": True}])
def test_cudnn_matches_keras_loop_on_gpu(kind, options):
    """Ours on cuDNN against Keras's layer without cuDNN: outputs, states and gradients."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
    rng = np.random.default_rng(3)
    mine = _built(getattr(ours, kind)(UNITS, **options))
    theirs = _built(getattr(keras.layers, kind)(UNITS, use_cudnn=False, **options))
    weights = [rng.normal(scale=0.5, size=w.shape).astype("float32")
               for w in theirs.get_weights()]
    mine.set_weights(weights)
    theirs.set_weights(weights)
    x = tf.Variable(rng.normal(size=(2, 5, FEATURES)).astype("float32"))
    results = []
    for layer in (mine, theirs):
        with tf.GradientTape() as tape:
            outputs = tf.nest.flatten(layer(x))
            loss = tf.add_n([tf.reduce_sum(tf.sin(o)) for o in outputs])
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        results.append([t.numpy() for t in [*outputs, *grads]])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
