"""A small model built from our layers learns a padded sequence task (seeded)."""

from __future__ import annotations

import keras
import numpy as np

from models import layers as ours


def _first_vs_last_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded token sequences; label 1 when the first token exceeds the LAST REAL one,
    so the model must see both ends of every sequence through the mask."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 10, size=(n, 12)).astype("int32")
    lengths = rng.integers(2, 13, size=n)
    tokens[np.arange(12)[None, :] >= lengths[:, None]] = 0
    last = tokens[np.arange(n), lengths - 1]
    return tokens, (tokens[:, 0] > last).astype("float32")


def test_small_model_learns_padded_sequence_task():
    keras.utils.set_random_seed(0)
    x, y = _first_vs_last_task(768, seed=0)
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(10, 8, mask_zero=True)(tokens)
    h = ours.Bidirectional(ours.GRU(16, return_sequences=True))(h)
    h = ours.LSTM(16)(h)
    model = keras.Model(tokens, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    initial = model.evaluate(x, y, verbose=0)[0]
    history = model.fit(x, y, batch_size=64, epochs=8, verbose=0, shuffle=True)
    final = history.history["loss"][-1]
    assert final < 0.6 * initial, (initial, history.history["loss"])
    assert history.history["accuracy"][-1] > 0.8
