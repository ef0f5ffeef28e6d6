"""`.keras` files saved by an older rnnkit still load and compute what they computed then.

The fixtures in tests/fixtures/layers_v1/ were written by make_fixtures.py there with the code of
commit 87b4d60, before SimpleRNN, LSTM, GRU and LayerNormLSTM became one generic cell-driving
layer; outputs.npz holds what each model returned on `inputs` at the time.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from models import layers as ours

FIXTURES = Path(__file__).parent / "fixtures" / "layers_v1"
LAYER_CLASSES = {"simple_rnn": ours.SimpleRNN, "lstm": ours.LSTM, "gru": ours.GRU,
                 "layer_norm_lstm": ours.LayerNormLSTM, "cells": ours.RNN,
                 "bidirectional": ours.Bidirectional}


@pytest.mark.parametrize("name", list(LAYER_CLASSES))
def test_old_keras_file_loads_and_gives_the_old_outputs(name):
    recorded = np.load(FIXTURES / "outputs.npz")
    model = keras.models.load_model(FIXTURES / f"{name}.keras")
    assert type(model.layers[-1]) is LAYER_CLASSES[name]
    outputs = keras.tree.flatten(model(recorded["inputs"], training=False))
    want = [recorded[key] for key in sorted(recorded.files) if key.startswith(f"{name}/")]
    assert len(outputs) == len(want)
    for got, expected in zip(outputs, want, strict=True):
        np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-6)
