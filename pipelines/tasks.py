"""What a task is (data, model, loss, evaluation, export signatures) and the registry of tasks.

The one trainer (`pipelines.trainer`) and the `rnnkit train|evaluate|export` commands work on any
`Task`; adding a task means writing one subclass and one line in `TASKS`.

The life of a run: `pipelines.trainer.train(task, config)` calls `datasets`, `build_model`, `loss`
and `metrics`, checkpoints the whole model every epoch (`keras.saving` format, so every custom
layer or function must be registered with `keras.saving.register_keras_serializable`), and keeps
the best epoch by `monitor`. `pipelines.evaluation.evaluate_run` reloads the best checkpoint and
calls `evaluate`; `serving.export.export_run` reloads it and exports `serving_signatures`, with
`signature_methods` and `warmup_requests`.
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from app.errors import UserError
from pipelines.config import TrainConfig, make_config

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


class Task(abc.ABC):
    """One trainable, evaluable, exportable model on one data set.

    Subclasses set the class attributes and implement the abstract methods; they never write a
    training loop (the trainer owns optimizer, clipping, checkpoints and callbacks).
    """

    name: ClassVar[str]  # as typed on the command line, e.g. "sentiment"
    dataset: ClassVar[str]  # the data set `rnnkit data prepare` takes, e.g. "imdb"
    export_name: ClassVar[str]  # the served model's name, exports/<export_name>/<version>/
    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "full": {}}

    def config(self, profile: str = "quick", overrides: list[str] | None = None) -> TrainConfig:
        """The task's config for a profile, with `key=value` overrides applied."""
        return make_config(self.config_class, self.profiles, profile, overrides)

    @abc.abstractmethod
    def datasets(self, config: TrainConfig) -> tuple[tf.data.Dataset, tf.data.Dataset]:
        """The batched (inputs, targets) training and validation sets (never the test split)."""

    @abc.abstractmethod
    def build_model(self, config: TrainConfig) -> keras.Model:
        """The uncompiled model, with any preprocessing layers already adapted on training data."""

    @abc.abstractmethod
    def loss(self, config: TrainConfig) -> Any:
        """The loss `Model.compile` takes."""

    def metrics(self, config: TrainConfig) -> list[Any]:
        """Metrics reported during training (the first is monitored if `monitor` says so)."""
        return []

    monitor: ClassVar[str] = "val_loss"  # early stopping and best-checkpoint quantity
    monitor_mode: ClassVar[str] = "min"

    @abc.abstractmethod
    def evaluate(self, model: keras.Model, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
        """Test-split metrics as a JSON-able dict; may also write plots into run_dir."""

    @abc.abstractmethod
    def serving_signatures(self, model: keras.Model, config: TrainConfig,
                           run_dir: Path | None = None) -> dict[str, Any]:
        """tf.function signatures for the SavedModel, keyed by signature name.

        Args:
            model: the model to export (the run's best).
            config: the run's config.
            run_dir: the run directory, for what evaluation decided beyond the weights (the
                sentiment decision threshold); None for a model without a run.
        """

    def signature_methods(self) -> dict[str, str]:
        """Signature name -> TF Serving method for signatures that are not Predict.

        E.g. {"classify": serving.export.CLASSIFY_METHOD} lets TF Serving's Classify API call the
        `classify` signature; signatures not named here are exported as Predict signatures.
        """
        return {}

    def warmup_requests(self) -> list[Any]:
        """A few real PredictionLog requests for assets.extra/tf_serving_warmup_requests.

        Build them with serving.export.predict_log; an empty list exports no warm-up file.
        """
        return []


# task name -> "module:Class"; imported only when used.
TASKS: dict[str, str] = {
    "sentiment": "pipelines.sentiment:SentimentTask",
    "sentiment_bow": "pipelines.sentiment:SentimentBowTask",
    "translation": "pipelines.translation:TranslationTask",
    "captioning": "pipelines.captioning:CaptioningTask",
}


def task_names() -> list[str]:
    """Every registered task name."""
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """Instantiate a registered task by name."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}", f"choose one of {task_names()}")
    module_name, _, class_name = TASKS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
