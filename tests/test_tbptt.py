"""Truncated BPTT: it trains on long sequences, carries state across chunks, and cleans up."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.layers import GRU, LSTM, Bidirectional
from pipelines.config import TrainConfig
from pipelines.training.task import Task
from pipelines.training.tbptt import chunk_batches, truncated_bptt
from pipelines.training.trainer import train
from serving.errors import UserError

LENGTH, CHUNK, DELAY, BATCH = 120, 10, 3, 16


def echo_data(n_examples: int, seed: int):
    """Per-step targets y_t = x_{t-DELAY}: long sequences, a short memory."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_examples, LENGTH, 1)).astype("float32")
    y = np.zeros_like(x)
    y[:, DELAY:] = x[:, :-DELAY]
    return x, y


def echo_model(layer=GRU):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 1))
    hidden = layer(16, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.01, clipnorm=1.0), loss="mse")
    return model


def test_trains_on_long_sequences_and_carries_state_across_chunks():
    x, y = echo_data(96, seed=1)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    model = echo_model()
    config = TrainConfig(batch_size=BATCH, tbptt_steps=CHUNK)
    with truncated_bptt(model, config) as prepare:
        history = model.fit(prepare(data), epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    # Were states reset at every chunk, the first DELAY targets of each chunk would be
    # unpredictable: an MSE floor of DELAY / CHUNK * Var(x) = 0.3 on the whole sequence.
    test_x, test_y = echo_data(64, seed=2)
    mse = float(np.mean((model.predict(test_x, verbose=0) - test_y) ** 2))
    assert mse < 0.15


class _CountSteps(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def test_one_step_per_chunk_and_model_is_plain_again_after_the_block():
    x, y = echo_data(BATCH * 2 + 3, seed=3)  # a last partial batch, dropped while chunking
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    model = echo_model(LSTM)
    layer = model.layers[1]
    counter = _CountSteps()
    with truncated_bptt(model, TrainConfig(batch_size=BATCH, tbptt_steps=50)) as prepare:
        model.fit(prepare(data), epochs=1, verbose=0, callbacks=[counter])
    assert counter.steps == 2 * 3  # 2 full batches, chunks of 50 + 50 + 20 steps
    assert not layer.stateful and layer.states is None
    assert "train_step" not in vars(model)
    # Stateless again: the same input gives the same output twice, for any batch size.
    first, second = model.predict(x[:5], verbose=0), model.predict(x[:5], verbose=0)
    np.testing.assert_array_equal(first, second)
    assert not model.get_config()["layers"][1]["config"]["stateful"]


def test_one_target_per_sequence_runs_the_prefix_then_trains_the_last_chunk():
    x = np.random.default_rng(5).normal(size=(BATCH, 25, 1)).astype("float32")
    y = x[:, :1, 0] + x[:, -1:, 0]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    (prefix, last), _ = next(iter(chunk_batches(data, 10, BATCH)))
    assert prefix.shape == (BATCH, 15, 1) and last.shape == (BATCH, 10, 1)
    np.testing.assert_array_equal(np.concatenate([prefix, last], axis=1), x)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 1))
    model = keras.Model(inputs, keras.layers.Dense(1)(GRU(8)(inputs)))
    model.compile(optimizer="adam", loss="mse")
    with truncated_bptt(model, TrainConfig(batch_size=BATCH, tbptt_steps=10)) as prepare:
        history = model.fit(prepare(data), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert all(np.isfinite(history.history["loss"]))


def test_without_tbptt_steps_nothing_changes():
    model = echo_model()
    data = tf.data.Dataset.from_tensor_slices(echo_data(4, seed=4)).batch(BATCH)
    with truncated_bptt(model, TrainConfig(tbptt_steps=None)) as prepare:
        assert prepare(data) is data
        assert "train_step" not in vars(model)


@pytest.mark.parametrize("steps", [0, -5])
def test_rejects_non_positive_chunk_length(steps):
    with pytest.raises(UserError, match="tbptt_steps"), truncated_bptt(
            echo_model(), TrainConfig(tbptt_steps=steps)):
        pass


def test_rejects_bidirectional_models():
    inputs = keras.Input((None, 1))
    outputs = Bidirectional(GRU(4))(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(UserError, match="Bidirectional"), truncated_bptt(
            model, TrainConfig(tbptt_steps=10)):
        pass


class EchoTask(Task):
    """The echo problem as a Task, to train through the shared trainer."""

    name = "echo_tbptt"
    dataset = "synthetic"
    export_name = "echo_tbptt"

    def datasets(self, config):
        train = tf.data.Dataset.from_tensor_slices(echo_data(96, seed=6))
        val = tf.data.Dataset.from_tensor_slices(echo_data(32, seed=7))
        return train.batch(config.batch_size), val.batch(config.batch_size)

    def build_model(self, config):
        inputs = keras.Input((None, 1))
        return keras.Model(inputs, keras.layers.Dense(1)(GRU(16, return_sequences=True)(inputs)))

    def loss(self, config):
        return "mse"

    def evaluate(self, model, config, run_dir):
        return {}

    def serving_signatures(self, model, config, run_dir=None):
        return {}


def test_shared_trainer_uses_tbptt_when_configured(tmp_path):
    config = TrainConfig(epochs=4, batch_size=BATCH, learning_rate=0.01, tbptt_steps=CHUNK,
                         early_stopping_patience=4)
    result = train(EchoTask(), config, run_dir=tmp_path / "run")
    losses = result.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    # Validation runs the plain model on whole sequences: below the no-carry floor of 0.3.
    assert min(result.history["val_loss"]) < 0.15
    assert not result.model.layers[1].stateful
