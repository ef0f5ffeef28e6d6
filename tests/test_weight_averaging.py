"""Weight averaging (`ema_momentum`): what validation and checkpoints see, and resuming it."""

from __future__ import annotations

import numpy as np
import pytest

from serving.errors import UserError

MOMENTUM = 0.5  # the warm-up reaches it at step 8 of the 10 below


def _raw_weights_recorder():
    """A callback recording the model's (raw) weights after every training step."""
    import keras

    class Recorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[list[np.ndarray]] = []

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.steps.append([w.copy() for w in self.model.get_weights()])

    return Recorder()


def _model_and_data(seed: int = 3):
    import keras

    from pipelines.training import optimizer

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=optimizer.adam(0.05, None, ema_momentum=MOMENTUM), loss="mse")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    return model, x, y


def _average(steps: list[list[np.ndarray]]):
    """The moving average written out: the first step's weights, then at step t (0-based)
    m * avg + (1 - m) * w with m = min(MOMENTUM, (1 + t) / (10 + t))."""
    average = [w.copy() for w in steps[0]]
    for t, weights in enumerate(steps[1:], start=1):
        m = min(MOMENTUM, (1 + t) / (10 + t))
        average = [m * a + (1 - m) * w for a, w in zip(average, weights, strict=True)]
    return average


def _fit(model, x, y, callbacks, epochs: int, initial_epoch: int = 0):
    model.fit(x, y, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
              callbacks=callbacks, verbose=0, validation_data=(x[:8], y[:8]))


def test_the_model_holds_the_average_after_each_epoch_and_trains_on_the_raw_weights():
    from pipelines.training.callbacks import WeightAveraging

    model, x, y = _model_and_data()
    raw = _raw_weights_recorder()
    _fit(model, x, y, [WeightAveraging(resumed=False), raw], epochs=2)
    assert len(raw.steps) == 10
    # After fit the model holds the moving average of every raw step (not the last raw
    # weights, which Keras's own finalize would have left there) ...
    for got, want in zip(model.get_weights(), _average(raw.steps), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # ... and the optimizer's average slots hold the raw weights training continues from.
    slots = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    for got, want in zip(slots, raw.steps[-1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(model.get_weights()[0], raw.steps[-1][0])


def test_validation_scores_the_averaged_weights():
    from pipelines.training.callbacks import WeightAveraging

    model, x, y = _model_and_data()
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                        validation_data=(x[:8], y[:8]),
                        callbacks=[WeightAveraging(resumed=False)])
    # After the epoch the model holds the average: its loss on the validation rows is the
    # one validation logged.
    prediction = model.predict(x[:8], verbose=0)
    assert float(np.mean((prediction - y[:8]) ** 2)) == pytest.approx(
        history.history["val_loss"][0], rel=1e-5)


def test_a_resumed_run_continues_from_the_raw_weights_like_an_uninterrupted_one():
    from pipelines.training.callbacks import WeightAveraging

    # One epoch, then a checkpoint as the trainer writes it (the model's weights, i.e. the
    # average, and the optimizer's variables); then one more epoch from that checkpoint.
    model, x, y = _model_and_data()
    averaging = WeightAveraging(resumed=False)
    _fit(model, x, y, [averaging], epochs=1)
    weights = model.get_weights()
    optimizer_state = [v.numpy() for v in model.optimizer.variables]
    _fit(model, x, y, [averaging], epochs=2, initial_epoch=1)
    uninterrupted = model.get_weights()

    def from_checkpoint(resumed: bool):
        model, _, _ = _model_and_data()
        model.optimizer.build(model.trainable_variables)
        model.set_weights(weights)
        for variable, value in zip(model.optimizer.variables, optimizer_state, strict=True):
            variable.assign(value)
        _fit(model, x, y, [WeightAveraging(resumed=resumed)], epochs=2, initial_epoch=1)
        return model

    for got, want in zip(from_checkpoint(resumed=True).get_weights(), uninterrupted,
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Without being told it resumes, the callback would train on from the average instead.
    wrong = from_checkpoint(resumed=False)
    assert not np.allclose(wrong.get_weights()[0], uninterrupted[0], rtol=1e-4)


def test_ema_momentum_is_checked_and_fixed_for_a_run(tmp_path):
    from pipelines.config import TrainConfig
    from pipelines.training import run_dir as runs
    from pipelines.training.trainer import resume_config

    with pytest.raises(UserError, match=r"ema_momentum=1\.0 must be in \[0, 1\)"):
        TrainConfig(ema_momentum=1.0).validate()
    with pytest.raises(UserError, match="ema_momentum"):
        TrainConfig(ema_momentum=-0.1).validate()

    # A run without averaging cannot resume with it (its optimizer state has no average).
    from tests.test_trainer import ToyTask

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs.save_config(run_dir, ToyTask.config_class())
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "state.json").write_text(
        '{"task": "toy", "epoch": 1, "last": "epoch-0001", "best": "epoch-0001"}')
    with pytest.raises(UserError, match="on or off for a whole run"):
        resume_config(ToyTask(), run_dir, ["ema_momentum=0.999"])
    assert resume_config(ToyTask(), run_dir, ["epochs=3"]).ema_momentum == 0.0


def test_the_trainer_checkpoints_the_averaged_weights(reviews, tmp_path):
    from pipelines.training.checkpoints import CheckpointStore
    from pipelines.training.trainer import train
    from tests.test_trainer import ToyConfig, ToyTask

    result = train(ToyTask(), ToyConfig(epochs=2, ema_momentum=0.9), run_dir=tmp_path / "ema")
    store = CheckpointStore(result.run_dir)
    best = store.load_model("best").get_weights()
    for got, want in zip(result.model.get_weights(), best, strict=True):
        np.testing.assert_allclose(got, want)
    # The raw weights are the optimizer's average slots; the checkpoint is not them.
    slots = [v.numpy() for v in result.model.optimizer._model_variables_moving_average]
    assert not np.allclose(slots[0], best[0])
    accuracy = ToyTask().evaluate(result.model, ToyConfig(), result.run_dir)["accuracy"]
    assert accuracy > 0.7, accuracy
    resumed = train(ToyTask(), ToyConfig(epochs=3, ema_momentum=0.9), run_dir=result.run_dir,
                    resume=True)
    assert resumed.metrics["epochs_finished"] == 3
