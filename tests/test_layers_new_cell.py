"""README's "Adding a cell": one cell class and its registration are all a new cell needs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import layers as ours
from models.layers.dense_cell import DenseCell


@pytest.fixture
def minimal_gated_cell():
    """A cell none of our modules knows, registered as "mgu" for the test only."""

    @ours.register_cell("mgu")
    class MinimalGatedCell(DenseCell):
        """Minimal gated unit (Zhou et al., 2016): one forget gate (blocks f | h).

            f = σ(x_f + h_{t-1} @ U_f)    h̃ = tanh(x_h + (f * h_{t-1}) @ U_h)
            h_t = (1 - f) * h_{t-1} + f * h̃
        """

        gates = 2

        def step(self, projected, states, dropout_masks=None, training=False):
            (h_prev,) = states
            h_rec = self.recurrent_input(h_prev, dropout_masks)
            x_f, x_h = keras.ops.split(projected, 2, axis=-1)
            u_f, u_h = keras.ops.split(self.recurrent_kernel, 2, axis=-1)
            f = keras.ops.sigmoid(x_f + keras.ops.matmul(h_rec, u_f))
            candidate = self.activation(x_h + keras.ops.matmul(f * h_rec, u_h))
            h = (1.0 - f) * h_prev + f * candidate
            return h, [h]

    yield MinimalGatedCell
    del ours.CELLS["mgu"]


def _sign_of_sum(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of numbers; the label says whether they add up to more than zero."""
    x = np.random.default_rng(seed).normal(size=(n, 10, 1)).astype("float32")
    return x, (x.sum(axis=(1, 2)) > 0).astype("float32")


def test_a_registered_cell_trains_saves_and_loads_through_recurrent_layer(
        minimal_gated_cell, tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _sign_of_sum(512, seed=0)
    inputs = keras.Input((None, 1))
    layer = ours.recurrent_layer("mgu", 8, dropout=0.1, seed=1)
    assert type(layer) is ours.CellRNN and type(layer.cell) is minimal_gated_cell
    assert ours.state_names("mgu") == ("h",)
    h = ours.Bidirectional(layer)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(keras.optimizers.Adam(0.02), "binary_crossentropy", metrics=["accuracy"])
    initial = model.evaluate(x, y, verbose=0)[0]
    history = model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    assert history.history["loss"][-1] < 0.5 * initial, (initial, history.history["loss"])
    assert history.history["accuracy"][-1] > 0.85

    model.save(tmp_path / "mgu.keras")
    loaded = keras.models.load_model(tmp_path / "mgu.keras")
    assert type(loaded.layers[1].forward_layer.cell) is minimal_gated_cell
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0),
                               atol=1e-6)


def test_every_task_model_takes_a_registered_cell(minimal_gated_cell):
    from models.sentiment import many_to_one

    vectorizer = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=6)
    vectorizer.adapt(["a good film", "a bad film"])
    model = many_to_one(vectorizer, cell="mgu", units=4, embedding_dim=4, dense_units=4)
    cells = [type(layer.forward_layer.cell) for layer in model.layers
             if isinstance(layer, ours.Bidirectional)]
    assert cells == [minimal_gated_cell]
    assert 0.0 <= float(model(np.array(["a good film"]))[0, 0]) <= 1.0


def test_a_cell_name_is_registered_once(minimal_gated_cell):
    with pytest.raises(ValueError, match="'mgu' is taken by"):
        @ours.register_cell("mgu")
        class OtherCell(DenseCell):
            pass
