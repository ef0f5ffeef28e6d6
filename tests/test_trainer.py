"""The one trainer on a tiny Dense bag-of-words model over real IMDB reviews."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from pipelines.config import TrainConfig
from pipelines.datasets import imdb
from pipelines.training.checkpoints import CheckpointStore
from pipelines.training.task import Task
from serving.errors import UserError

TRAIN_EXAMPLES = 1500
HELD_OUT = 600


@dataclasses.dataclass
class ToyConfig(TrainConfig):
    """A small, fast setting of the toy task."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 5e-3
    max_train_examples: int | None = TRAIN_EXAMPLES
    max_tokens: int = 3000
    nan_loss: bool = False


class ToyTask(Task):
    """Multi-hot bag of words -> Dense -> probability: the trainer's test subject."""

    name: ClassVar[str] = "toy"
    dataset: ClassVar[str] = "imdb"
    export_name: ClassVar[str] = "toy"
    config_class: ClassVar[type[TrainConfig]] = ToyConfig

    def datasets(self, config):
        train, val = imdb.train_validation(config.validation_fraction, config.seed,
                                           config.max_train_examples)
        return (imdb.batches(train, config.batch_size, shuffle_seed=config.seed),
                imdb.batches(val, config.batch_size))

    def build_model(self, config):
        import keras

        train, _ = imdb.train_validation(config.validation_fraction, config.seed,
                                         config.max_train_examples)
        from models.sentiment import standardize_review

        vectorizer = keras.layers.TextVectorization(
            max_tokens=config.max_tokens, output_mode="multi_hot", standardize=standardize_review)
        vectorizer.adapt(imdb.training_texts(train))
        text = keras.Input(shape=(), dtype="string")
        x = keras.layers.Dense(16, activation="relu")(vectorizer(text))
        return keras.Model(text, keras.layers.Dense(1, activation="sigmoid")(x))

    def loss(self, config):
        import keras

        if config.nan_loss:
            return lambda y_true, y_pred: keras.ops.mean(y_pred) * float("nan")
        return keras.losses.BinaryCrossentropy()

    def metrics(self, config):
        import keras

        # An object, as the tasks give: Keras builds a metric named by a string only while it
        # traces the first step, which makes TensorFlow trace that step twice.
        return [keras.metrics.BinaryAccuracy(name="accuracy")]

    def evaluate(self, model, config, run_dir) -> dict[str, Any]:

        data = imdb.load_test(HELD_OUT).batch(200)
        hits = 0
        for text, label in data:
            predicted = model(text, training=False).numpy() >= 0.5
            hits += int(np.sum(predicted == (label.numpy() >= 0.5)))
        return {"accuracy": hits / HELD_OUT}

    def serving_signatures(self, model, config, run_dir=None):
        return {}


def test_train_learns_and_fills_the_run_directory(reviews, runs_root):
    from pipelines.training.trainer import train

    task = ToyTask()
    result = train(task, ToyConfig())
    run_dir = result.run_dir
    assert run_dir.parent == runs_root / "toy"
    accuracy = task.evaluate(result.model, ToyConfig(), run_dir)["accuracy"]
    assert accuracy > 0.7, f"held-out accuracy {accuracy} is not clearly above chance"

    assert json.loads((run_dir / "config.json").read_text())["max_tokens"] == 3000
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 2 and len(history["val_loss"]) == 2
    assert history["loss"][1] < history["loss"][0]
    assert (run_dir / "history.csv").read_text().splitlines()[0].startswith("epoch,")
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # TensorBoard event files for training and validation.
    events = {p.parent.name for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")}
    assert events >= {"train", "validation"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_finished"] == 2 and not metrics["terminated_on_nan"]
    assert not metrics["stopped_by_time_budget"]
    assert metrics["best_value"] == min(history["val_loss"])
    state = CheckpointStore(run_dir).state()
    assert state["last"] == "epoch-0002" and state["task"] == "toy"
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir())
    assert kept == sorted({state["last"], state["best"]})
    # The returned model holds the best epoch's weights, the same as the best checkpoint.
    best = CheckpointStore(run_dir).load_model("best")
    for mine, saved in zip(result.model.get_weights(), best.get_weights(), strict=True):
        np.testing.assert_allclose(mine, saved)


@pytest.fixture(scope="module")
def one_epoch_run(reviews, tmp_path_factory) -> Path:
    """A finished one-epoch toy run (learning rate halved each epoch), shared by the tests
    that only read it."""
    from pipelines.training.trainer import train

    return train(ToyTask(), ToyConfig(epochs=1, lr_decay=0.5),
                 run_dir=tmp_path_factory.mktemp("runs") / "one-epoch").run_dir


def test_resume_continues_epochs_and_optimizer_state(one_epoch_run, tmp_path):
    from pipelines.training.trainer import train

    run_dir = tmp_path / "resumed"
    shutil.copytree(one_epoch_run, run_dir)
    steps = int(np.load(run_dir / "checkpoints" / "epoch-0001" / "optimizer.npz")["0"])
    assert steps > 0
    resumed = train(ToyTask(), ToyConfig(epochs=2, lr_decay=0.5), run_dir=run_dir, resume=True)
    assert int(resumed.model.optimizer.iterations.numpy()) == 2 * steps
    assert resumed.metrics["epochs_finished"] == 2
    assert len(resumed.history["loss"]) == 2
    # The schedule continues from the epoch, not from the start: 5e-3, then half of it.
    np.testing.assert_allclose(resumed.history["learning_rate"], [5e-3, 2.5e-3], rtol=1e-6)
    assert float(resumed.model.optimizer.learning_rate.numpy()) == pytest.approx(2.5e-3)
    assert CheckpointStore(run_dir).state()["epoch"] == 2


def test_resume_needs_a_checkpoint(reviews, tmp_path):
    from pipelines.training.trainer import train

    with pytest.raises(UserError, match="lr_decay"):
        train(ToyTask(), ToyConfig(lr_decay=1.5), run_dir=tmp_path / "decay")

    with pytest.raises(UserError, match="has no checkpoint"):
        train(ToyTask(), ToyConfig(), run_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match="does not exist"):
        train(ToyTask(), ToyConfig(), run_dir=tmp_path / "missing", resume=True)


def test_nan_loss_stops_training_without_a_checkpoint(reviews, runs_root):
    from pipelines.training.trainer import train

    result = train(ToyTask(), ToyConfig(nan_loss=True, epochs=3))
    assert result.terminated_on_nan
    assert len(result.history["loss"]) == 1
    assert not CheckpointStore(result.run_dir).exists()
    assert json.loads((result.run_dir / "metrics.json").read_text())["terminated_on_nan"]


def test_interrupted_checkpoint_keeps_the_previous_one(one_epoch_run, monkeypatch):
    from pipelines.training import checkpoints

    store = CheckpointStore(one_epoch_run)
    before = store.state()
    model = store.load_model("last")
    model.compile(optimizer="adam", loss="binary_crossentropy")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(model, 2, 0.1, True, extra={"task": "toy"})
    assert store.state() == before
    assert store.load_model("last").count_params() == model.count_params()


def test_checkpoints_save_and_load_without_a_throwaway_layer_per_layer(tmp_path, monkeypatch):
    """Keras's saving works out which attributes to skip once per kind of object, not once per
    layer: Keras 3.15 stored that set under another name than it looked it up, and built and
    listed a throwaway Layer for every layer saved or loaded (0.53 of the captioner's 0.65 s
    checkpoint)."""
    import keras

    model = keras.Sequential([keras.Input((4,)), *[keras.layers.Dense(4) for _ in range(20)]])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    store = CheckpointStore(tmp_path / "run")
    store.save(model, 1, 0.5, True, extra={"task": "toy"})  # may work the sets out once

    throwaway = []
    init = keras.layers.Layer.__init__

    def counting_init(self, *args, **kwargs):
        if type(self) is keras.layers.Layer:  # the model's layers are Dense and InputLayer
            throwaway.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__init__", counting_init)
    store.save(model, 2, 0.4, True, extra={"task": "toy"})
    loaded = store.load_model("last")
    assert len(loaded.layers) == 20 and throwaway == []


def test_new_run_dir_refuses_a_trained_run(one_epoch_run):
    from pipelines.training.run_dir import new_run_dir

    with pytest.raises(UserError, match="--resume"):
        new_run_dir("toy", one_epoch_run)


def test_new_run_dir_that_cannot_be_a_folder_is_a_clear_error(tmp_path):
    from pipelines.training.run_dir import new_run_dir

    (tmp_path / "notes.txt").write_text("mine")
    for where in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "run"):
        with pytest.raises(UserError, match=r"cannot create run directory .*notes\.txt"):
            new_run_dir("toy", where)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_new_run_dir_refuses_a_folder_of_someone_elses_files(tmp_path):
    """Training writes config.json, history.json, ... into --run-dir: a folder of the user's
    own files (even one named config.json) is refused, not written over; an empty folder and
    a run that stopped before its first checkpoint are taken."""
    from pipelines.training.run_dir import new_run_dir, save_config

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "notes.txt").write_text("notes")
    with pytest.raises(UserError, match="is a folder with files that is not a run directory"):
        new_run_dir("toy", mine)
    assert (mine / "config.json").read_text() == '{"my": "settings"}'
    (tmp_path / "empty").mkdir()
    assert new_run_dir("toy", tmp_path / "empty") == tmp_path / "empty"
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    save_config(crashed, ToyConfig())
    assert new_run_dir("toy", crashed) == crashed


@pytest.mark.parametrize("text", ['{"epochs": 2, "batch_', "[]", '{"bogus": 1}'])
def test_a_damaged_config_json_is_one_clear_error(tmp_path, text):
    from pipelines.training.run_dir import load_config

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(UserError, match=r"config\.json (is not|has unknown)"):
        load_config(tmp_path, ToyConfig)


def test_a_time_budget_stops_before_an_epoch_that_would_overrun_it(reviews, tmp_path):
    from pipelines.training.trainer import train

    # Any real epoch takes longer than this budget: the run stops after its first, saved.
    result = train(ToyTask(), ToyConfig(epochs=5, max_minutes=0.0005),
                   run_dir=tmp_path / "budget")
    metrics = result.metrics
    assert metrics["epochs_finished"] == 1 and metrics["stopped_by_time_budget"], metrics
    assert CheckpointStore(result.run_dir).state()["last"] == "epoch-0001"
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["stopped_by_time_budget"] and saved["stopped_early"]
    with pytest.raises(UserError, match="max_minutes=0"):
        ToyConfig(max_minutes=0).validate()


def test_a_training_step_is_traced_once(reviews, tmp_path, monkeypatch):
    """Tracing the step (forward and backward graph) is most of a small run's time: the
    optimizer's variables exist before it, or TensorFlow traces it a second time."""
    from tensorflow.python.eager.polymorphic_function import tracing_compilation

    from pipelines.training.trainer import train

    traced = []
    create = tracing_compilation._create_concrete_function

    def counting(*args, **kwargs):
        function = create(*args, **kwargs)
        traced.append(function.name.decode())
        return function

    monkeypatch.setattr(tracing_compilation, "_create_concrete_function", counting)
    train(ToyTask(), ToyConfig(epochs=1, max_train_examples=300), tmp_path / "run")
    steps = [name for name in traced if "one_step_on_data" in name]
    assert len(steps) == 2, traced  # one training step, one validation step


def test_evaluate_refuses_a_run_directory_it_cannot_write_before_the_work(one_epoch_run,
                                                                          monkeypatch):
    """A read-only run (root ignores modes, so the folder's refusal is simulated) stopped with
    a traceback after the whole evaluation, its result lost."""
    import tempfile

    from pipelines.training import evaluation

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    evaluated = []
    monkeypatch.setattr(ToyTask, "evaluate", lambda *a: evaluated.append(1) or {})
    with pytest.raises(UserError, match=r"cannot write into run directory .*Permission denied"):
        evaluation.evaluate_run(ToyTask(), one_epoch_run)
    assert evaluated == []


def test_a_cut_short_checkpoint_is_named_damaged(one_epoch_run, tmp_path):
    """It said "File not found" and blamed rnnkit's version for a file that was there."""
    run_dir = tmp_path / "run"
    shutil.copytree(one_epoch_run, run_dir)
    store = CheckpointStore(run_dir)
    model_file = run_dir / "checkpoints" / store.state()["best"] / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:300])
    with pytest.raises(UserError, match=r"model\.keras is damaged \(not a whole \.keras file\)"):
        store.load_model("best")
