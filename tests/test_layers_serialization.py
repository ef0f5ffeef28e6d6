"""Every public layer and cell: full get_config, .keras and SavedModel round trips, dropout."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import layers as ours

NON_DEFAULT = {
    "gamma_initializer": "zeros", "beta_initializer": "ones", "norm_epsilon": 0.01,
    "activation": "relu", "recurrent_activation": "hard_sigmoid", "use_bias": False,
    "kernel_initializer": "he_normal", "recurrent_initializer": "glorot_normal",
    "bias_initializer": "ones", "unit_forget_bias": False,
    "kernel_regularizer": "l2", "recurrent_regularizer": "l1", "bias_regularizer": "l2",
    "activity_regularizer": "l2", "kernel_constraint": "non_neg",
    "recurrent_constraint": "unit_norm", "bias_constraint": "max_norm", "dropout": 0.25,
    "recurrent_dropout": 0.125, "seed": 42, "reset_after": False, "return_sequences": True,
    "return_state": True, "go_backwards": True, "stateful": True, "unroll": True,
    "zero_output_for_mask": True, "merge_mode": "sum",
}


def _arguments(cls, cell_class=None) -> list[inspect.Parameter]:
    """Every named constructor argument of one of our classes: its own, those of its bases that
    it hands `**kwargs` on to, and for a layer over one cell (CellRNN), the cell's."""
    classes = list(cls.__mro__)
    own = {}
    if issubclass(cls, ours.CellRNN):
        classes += list((cell_class or cls.cell_class).__mro__)
        own["activity_regularizer"] = inspect.Parameter(
            "activity_regularizer", inspect.Parameter.KEYWORD_ONLY, default=None)
    skipped = {"self", "cell_class"} | ({"cell"} if issubclass(cls, ours.CellRNN) else set())
    for klass in classes:
        if not klass.__module__.startswith("models.") or "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name not in skipped and p.kind is not p.VAR_KEYWORD:
                own.setdefault(p.name, p)
    return list(own.values())


def _instances() -> dict:
    """Each public class, built with a non-default value for every constructor argument."""
    def kwargs(cls) -> dict:
        names = {p.name for p in _arguments(cls)}
        return {k: v for k, v in NON_DEFAULT.items() if k in names}

    made = {cls.__name__: cls(3, **kwargs(cls))
            for cls in (ours.SimpleRNNCell, ours.LSTMCell, ours.GRUCell, ours.LayerNormLSTMCell,
                        ours.SimpleRNN, ours.LSTM, ours.GRU, ours.LayerNormLSTM)}
    # A cell no named layer runs: the config names the cell's class.
    made["CellRNN"] = ours.CellRNN(3, cell_class=ours.LayerNormLSTMCell,
                                   **kwargs(ours.LayerNormLSTM))
    made["StackedCells"] = ours.StackedCells([ours.LSTMCell(3), ours.GRUCell(2)])
    made["RNN"] = ours.RNN(ours.GRUCell(3), **kwargs(ours.RNN))
    made["Bidirectional"] = ours.Bidirectional(
        ours.LSTM(3, return_sequences=True), merge_mode="sum",
        backward_layer=ours.LSTM(3, return_sequences=True, go_backwards=True, dropout=0.5))
    return made


def _spelled(value):
    """A config value reduced to comparable form: 'he_normal' and {'class_name': 'HeNormal'}."""
    if isinstance(value, dict):
        value = value["class_name"]
    return value.replace("_", "").lower() if isinstance(value, str) else value


@pytest.mark.parametrize("name", list(_instances()))
def test_get_config_carries_every_constructor_argument(name):
    layer = _instances()[name]
    config = layer.get_config()
    arguments = _arguments(type(layer), type(getattr(layer, "cell", None)))
    assert arguments
    missing = [p.name for p in arguments if p.name not in config]
    assert not missing, f"{name}.get_config() lacks {missing}"
    for p in arguments:
        if p.name in NON_DEFAULT:
            assert _spelled(config[p.name]) == _spelled(NON_DEFAULT[p.name]), p.name
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def _all_layers_model() -> keras.Model:
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(30, 6, mask_zero=True)(tokens)
    h = ours.Bidirectional(ours.LSTM(5, return_sequences=True), merge_mode="concat")(h)
    h = ours.GRU(4, return_sequences=True, go_backwards=False)(h)
    h = ours.RNN([ours.LSTMCell(4), ours.SimpleRNNCell(3)], return_sequences=True)(h)
    h = ours.SimpleRNN(4, return_sequences=True)(h)
    h, *_ = ours.RNN(ours.GRUCell(3, reset_after=False), return_state=True)(h)
    return keras.Model(tokens, keras.layers.Dense(2)(h))


def _tokens(batch: int, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 30, size=(batch, steps)).astype("int32")
    lengths = rng.integers(1, steps + 1, size=batch)
    tokens[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    return tokens


def test_model_of_every_layer_survives_keras_save_and_export(tmp_path):
    model = _all_layers_model()
    batches = [_tokens(4, 9, 0), _tokens(2, 5, 1)]  # unknown batch and time dimensions
    expected = [model.predict(b, verbose=0) for b in batches]

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    for tokens, want in zip(batches, expected, strict=True):
        np.testing.assert_allclose(loaded.predict(tokens, verbose=0), want, atol=1e-6)

    model.export(str(tmp_path / "export"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    for tokens, want in zip(batches, expected, strict=True):
        np.testing.assert_allclose(reloaded.serve(tf.constant(tokens)), want, atol=1e-6)


def test_stateful_bidirectional_survives_keras_save(tmp_path):
    tokens = keras.Input((None, 3), batch_size=2)
    layer = ours.Bidirectional(ours.LSTM(4, stateful=True, return_sequences=True))
    model = keras.Model(tokens, layer(tokens))
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    model.save(tmp_path / "stateful.keras")
    loaded = keras.models.load_model(tmp_path / "stateful.keras")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)  # both carried their states
    layer.reset_state()
    assert all(np.all(v.numpy() == 0) for v in layer.states)


@pytest.mark.parametrize("cls", [ours.SimpleRNN, ours.LSTM, ours.GRU])
def test_dropout_only_in_training(cls):
    x = np.random.default_rng(1).normal(size=(4, 6, 5)).astype("float32")
    layer = cls(8, dropout=0.4, recurrent_dropout=0.3, return_sequences=True, seed=3)
    plain = cls(8, return_sequences=True)
    layer.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    first, second = layer(x, training=True), layer(x, training=True)
    assert np.abs(first - second).max() > 1e-3
    np.testing.assert_array_equal(layer(x, training=False), layer(x, training=False))
    np.testing.assert_allclose(layer(x, training=False), plain(x), atol=1e-6)


def _identity_rnn(**kwargs) -> ours.SimpleRNN:
    """h_t = (x_t * m) @ I + (h_{t-1} * m_rec) @ R: masks readable from the outputs."""
    layer = ours.SimpleRNN(6, activation=None, use_bias=False, return_sequences=True, **kwargs)
    layer.build((5, 4, 6))
    return layer


def test_one_input_dropout_mask_per_sequence():
    layer = _identity_rnn(dropout=0.5, recurrent_initializer="zeros")
    layer.cell.kernel.assign(np.eye(6, dtype="float32"))
    out = layer(np.ones((5, 4, 6), "float32"), training=True).numpy()
    assert set(np.unique(out)) <= {0.0, 2.0} and 0 < (out == 0).mean() < 1
    for t in range(1, 4):
        np.testing.assert_array_equal(out[:, t], out[:, 0])


def test_one_recurrent_dropout_mask_per_sequence():
    layer = _identity_rnn(recurrent_dropout=0.5)
    layer.cell.kernel.assign(np.eye(6, dtype="float32"))
    layer.cell.recurrent_kernel.assign(np.eye(6, dtype="float32"))
    out = layer(np.ones((5, 4, 6), "float32"), training=True).numpy()
    mask = out[:, 1] - 1.0  # h_2 = 1 + h_1 * m with h_1 = 1
    assert set(np.unique(mask)) <= {0.0, 2.0} and 0 < (mask == 0).mean() < 1
    np.testing.assert_allclose(out[:, 2], 1.0 + out[:, 1] * mask)
    np.testing.assert_allclose(out[:, 3], 1.0 + out[:, 2] * mask)


def test_encoder_decoder_with_initial_state_survives_keras_save(tmp_path):
    """The seq2seq pattern: encoder states (return_state) start the decoder (initial_state)."""
    source = keras.Input((None,), dtype="int32")
    target = keras.Input((None,), dtype="int32")
    encoded = keras.layers.Embedding(30, 6, mask_zero=True)(source)
    _, h_fw, c_fw, h_bw, c_bw = ours.Bidirectional(ours.LSTM(4, return_state=True))(encoded)
    h = keras.layers.Concatenate()([h_fw, h_bw])
    c = keras.layers.Concatenate()([c_fw, c_bw])
    decoded = keras.layers.Embedding(30, 6, mask_zero=True)(target)
    decoded = ours.LSTM(8, return_sequences=True)(decoded, initial_state=[h, c])
    model = keras.Model([source, target], keras.layers.Dense(30)(decoded))
    inputs = [_tokens(3, 7, 2), _tokens(3, 5, 3)]
    model.save(tmp_path / "seq2seq.keras")
    loaded = keras.models.load_model(tmp_path / "seq2seq.keras")
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0),
                               model.predict(inputs, verbose=0), atol=1e-6)
