"""LayerNormLSTMCell: its math against NumPy, and use everywhere a cell goes, saved and loaded."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

from models.layers import RNN, Bidirectional, LayerNormLSTM, LSTMCell, StackedCells
from models.layers.layer_norm_lstm_cell import LayerNormLSTMCell

UNITS, FEATURES, STEPS, BATCH = 3, 4, 5, 2


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def _numpy_ln_lstm(x, weights, epsilon):
    """Ba et al. (2016)'s layer-normalised LSTM, written out step by step."""
    (kernel, recurrent_kernel, bias, in_gamma, in_beta, rec_gamma, rec_beta, cell_gamma,
     cell_beta) = weights
    h = np.zeros((x.shape[0], UNITS))
    c = np.zeros((x.shape[0], UNITS))
    outputs = []
    for t in range(x.shape[1]):
        z = (_layer_norm(x[:, t] @ kernel, in_gamma, in_beta, epsilon)
             + _layer_norm(h @ recurrent_kernel, rec_gamma, rec_beta, epsilon) + bias)
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
        c = _sigmoid(z_f) * c + _sigmoid(z_i) * np.tanh(z_c)
        h = _sigmoid(z_o) * np.tanh(_layer_norm(c, cell_gamma, cell_beta, epsilon))
        outputs.append(h)
    return np.stack(outputs, 1), h, c


def test_matches_numpy_formulas_on_random_weights():
    rng = np.random.default_rng(0)
    cell = LayerNormLSTMCell(UNITS, norm_epsilon=1e-3)
    layer = RNN(cell, return_sequences=True, return_state=True)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    layer(x)
    # Random gains and shifts too, so a swapped or missing one shows.
    weights = [rng.normal(scale=0.7, size=w.shape).astype("float32") for w in cell.weights]
    cell.set_weights(weights)
    assert [w.name for w in cell.weights] == [
        "kernel", "recurrent_kernel", "bias", "input_gamma", "input_beta", "recurrent_gamma",
        "recurrent_beta", "cell_gamma", "cell_beta"]
    outputs, h, c = layer(x)
    want_outputs, want_h, want_c = _numpy_ln_lstm(x.astype("float64"), weights, 1e-3)
    np.testing.assert_allclose(outputs, want_outputs, atol=2e-5)
    np.testing.assert_allclose(h, want_h, atol=2e-5)
    np.testing.assert_allclose(c, want_c, atol=2e-5)


def test_single_step_call_matches_driver():
    rng = np.random.default_rng(1)
    cell = LayerNormLSTMCell(UNITS)
    x = rng.normal(size=(BATCH, 1, FEATURES)).astype("float32")
    whole = RNN(cell)(x)
    states = cell.get_initial_state(BATCH)
    output, (h, _) = cell(x[:, 0], states)
    np.testing.assert_allclose(output, whole, atol=1e-6)
    np.testing.assert_allclose(h, whole, atol=1e-6)


def test_forget_bias_starts_at_one_and_norm_weights_at_identity():
    cell = LayerNormLSTMCell(UNITS)
    cell.build((None, FEATURES))
    np.testing.assert_array_equal(cell.bias.numpy()[UNITS:2 * UNITS], np.ones(UNITS))
    np.testing.assert_array_equal(cell.input_gamma.numpy(), np.ones(4 * UNITS))
    np.testing.assert_array_equal(cell.cell_beta.numpy(), np.zeros(UNITS))


def test_bidirectional_and_stacked_round_trip_through_keras_file(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    inputs = keras.Input((None, FEATURES))
    hidden = Bidirectional(RNN(LayerNormLSTMCell(UNITS, norm_epsilon=1e-4),
                               return_sequences=True))(inputs)
    hidden = RNN(StackedCells([LayerNormLSTMCell(UNITS), LSTMCell(2)]))(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    expected = model(x)
    model.save(tmp_path / "ln.keras")
    loaded = keras.saving.load_model(tmp_path / "ln.keras")
    np.testing.assert_allclose(loaded(x), expected, atol=1e-6)
    restored_cell = loaded.layers[1].forward_layer.cell
    assert isinstance(restored_cell, LayerNormLSTMCell)
    assert restored_cell.norm_epsilon == 1e-4


def test_get_config_holds_every_constructor_argument():
    cell = LayerNormLSTMCell(UNITS, norm_epsilon=1e-5, gamma_initializer="zeros",
                             unit_forget_bias=False, recurrent_dropout=0.25, seed=3)
    config = cell.get_config()
    arguments = set(inspect.signature(LayerNormLSTMCell.__init__).parameters) - {
        "self", "kwargs"}
    assert arguments <= set(config)
    clone = LayerNormLSTMCell.from_config(config)
    assert (clone.norm_epsilon, clone.unit_forget_bias, clone.recurrent_dropout, clone.seed) == (
        1e-5, False, 0.25, 3)
    assert clone.get_config() == config


def test_rejects_non_positive_epsilon():
    with pytest.raises(ValueError, match="norm_epsilon"):
        LayerNormLSTMCell(UNITS, norm_epsilon=0.0)


def test_layer_form_matches_the_cell_in_the_driver_and_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    layer = LayerNormLSTM(UNITS, return_sequences=True, norm_epsilon=1e-4, dropout=0.2, seed=7,
                          name="ln")
    driver = RNN(LayerNormLSTMCell(UNITS, norm_epsilon=1e-4), return_sequences=True)
    driver(x)
    layer(x)
    driver.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x), driver(x), atol=1e-6)

    config = layer.get_config()
    assert (config["norm_epsilon"], config["dropout"], config["seed"]) == (1e-4, 0.2, 7)
    inputs = keras.Input((None, FEATURES))
    model = keras.Model(inputs, LayerNormLSTM.from_config(config)(inputs))
    model.layers[1].set_weights(layer.get_weights())
    model.save(tmp_path / "layer.keras")
    loaded = keras.saving.load_model(tmp_path / "layer.keras")
    assert isinstance(loaded.layers[1], LayerNormLSTM)
    np.testing.assert_allclose(loaded(x), layer(x), atol=1e-6)


def test_every_task_model_takes_the_ln_lstm_cell():
    from models.captioning import Captioner
    from models.sentiment import many_to_one

    vectorizer = keras.layers.TextVectorization(max_tokens=50, output_sequence_length=6)
    vectorizer.adapt(["a good film", "a bad film"])
    sentiment = many_to_one(vectorizer, cell="ln_lstm", units=4, embedding_dim=4, dense_units=4)
    recurrent = [layer for layer in sentiment.layers if isinstance(layer, Bidirectional)]
    assert recurrent and isinstance(recurrent[0].forward_layer, LayerNormLSTM)
    assert 0.0 <= float(sentiment(np.array(["a good film"]))[0, 0]) <= 1.0

    captioner = Captioner(["", "[UNK]", "<start>", "<end>", "dog"], image_size=32, cell="ln_lstm",
                          units=8, embed_dim=4, attention=False, augment=False)
    assert isinstance(captioner.decoder, LayerNormLSTM) and len(captioner.init_states) == 2
