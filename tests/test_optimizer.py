"""The trainer's Adam: the fused kernel takes Keras's step, dense and row gradients alike."""

from __future__ import annotations

import numpy as np
import pytest

ROWS, WIDTH = 12, 4


def _steps(optimizer, gradients) -> np.ndarray:
    """Apply each gradient in turn to one [ROWS, WIDTH] variable; its values after each step."""
    import keras

    variable = keras.Variable(np.linspace(-1, 1, ROWS * WIDTH, dtype="float32")
                              .reshape(ROWS, WIDTH), name="table")
    seen = []
    for gradient in gradients:
        optimizer.apply([gradient], [variable])
        seen.append(variable.numpy().copy())
    return np.stack(seen)


def _row_gradients(repeats: bool) -> list:
    """Five row gradients (IndexedSlices): 9 of 4 rows (so repeated), or 3 distinct rows."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    gradients = []
    for _ in range(5):
        rows = rng.integers(0, 4, size=9) if repeats else rng.permutation(ROWS)[:3]
        values = rng.normal(size=(len(rows), WIDTH)).astype("float32")
        gradients.append(tf.IndexedSlices(tf.constant(values), tf.constant(rows),
                                          tf.constant([ROWS, WIDTH], tf.int64)))
    return gradients


@pytest.mark.parametrize("clipnorm", [None, 0.5])
def test_dense_steps_equal_keras_adam(clipnorm):
    import keras

    from pipelines.training.optimizer import adam

    rng = np.random.default_rng(0)
    gradients = [rng.normal(size=(ROWS, WIDTH)).astype("float32") for _ in range(6)]
    ours = _steps(adam(0.01, clipnorm), gradients)
    keras_steps = _steps(keras.optimizers.Adam(0.01, clipnorm=clipnorm), gradients)
    assert np.abs(ours - ours[0]).max() > 0.01  # it moved
    np.testing.assert_allclose(ours, keras_steps, atol=1e-6)


@pytest.mark.parametrize("repeats", [True, False])
@pytest.mark.parametrize("clipnorm", [None, 0.5])
def test_row_gradient_steps_equal_keras_adam(repeats, clipnorm):
    """Rows listed several times keep Keras's meaning (each repeat squared on its own), which
    is not the dense gradient's: the profiles' learning rates are tuned with it."""
    import keras
    import tensorflow as tf

    from pipelines.training.optimizer import adam

    rows = _row_gradients(repeats)
    ours = _steps(adam(0.01, clipnorm), rows)
    np.testing.assert_allclose(ours, _steps(keras.optimizers.Adam(0.01, clipnorm=clipnorm), rows),
                               atol=1e-6)
    as_dense = _steps(keras.optimizers.Adam(0.01, clipnorm=clipnorm),
                      [tf.convert_to_tensor(gradient) for gradient in rows])
    assert (np.abs(ours - as_dense).max() > 1e-3) == repeats


def test_a_model_trains_and_resumes_its_moments(tmp_path):
    """fit through the fused step lowers the loss; the moments it keeps are Keras's slots,
    so an optimizer saved by Keras's Adam (an older checkpoint) loads into it."""
    import keras

    from pipelines.training.optimizer import adam

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 20, size=(64, 5))
    y = (x.sum(axis=1, keepdims=True) > 47).astype("float32")

    def model():
        keras.utils.set_random_seed(1)
        return keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4),
                                 keras.layers.Flatten(), keras.layers.Dense(1, "sigmoid")])

    ours = model()
    ours.compile(adam(0.05, 1.0), loss="binary_crossentropy")
    history = ours.fit(x, y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.8 * history[0]

    older = model()
    older.compile(keras.optimizers.Adam(0.05, clipnorm=1.0), loss="binary_crossentropy")
    older.fit(x, y, epochs=1, batch_size=16, verbose=0)
    store: dict = {}
    older.optimizer.save_own_variables(store)
    resumed = model()
    resumed.set_weights(older.get_weights())
    resumed.compile(adam(0.05, 1.0), loss="binary_crossentropy")
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.optimizer.load_own_variables(store)
    assert int(resumed.optimizer.iterations.numpy()) == 4
    resumed.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert int(resumed.optimizer.iterations.numpy()) == 8


def test_a_checkpoint_loads_with_plain_keras(tmp_path):
    """keras.saving.load_model (compile=True, its default) reads a checkpoint the trainer's
    optimizer wrote: the file has no compile config naming our optimizer classes."""
    import keras

    from pipelines.training.checkpoints import CheckpointStore
    from pipelines.training.optimizer import adam

    x = np.linspace(0, 1, 64, dtype="float32").reshape(16, 4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(adam(0.01, 1.0, ema_momentum=0.9), loss="mse")
    model.fit(x, x.sum(axis=1), verbose=0)
    CheckpointStore(tmp_path).save(model, 1, 0.5, True, {"task": "toy"})
    assert model.get_compile_config()  # the model itself keeps it
    loaded = keras.saving.load_model(tmp_path / "checkpoints" / "epoch-0001" / "model.keras")
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])


@pytest.mark.parametrize("ema_momentum", [0.0, 0.9])
def test_an_epoch_of_unknown_size_counts_only_its_batches(ema_momentum):
    """Data read from a stream has no known size, so each epoch ends by finding it empty; that
    call must not count a step (Keras alone counts one more an epoch)."""
    import keras
    import tensorflow as tf

    from pipelines.training.optimizer import adam

    x = np.linspace(0, 1, 400, dtype="float32").reshape(100, 4)
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(16).filter(
        lambda *_: True)  # 7 batches, of unknown number
    assert data.cardinality() == tf.data.UNKNOWN_CARDINALITY
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(adam(1e-3, 1.0, ema_momentum=ema_momentum), "mse")
    model.fit(data, epochs=2, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 14
