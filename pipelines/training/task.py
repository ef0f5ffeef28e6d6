"""What a task is: the contract the trainer, `evaluate_run` and `export_run` work on.

A task supplies data, model, loss, evaluation and export signatures; its `TaskInfo` line in the
registry (`pipelines.tasks.REGISTRY`) holds the facts everything else reads. The contract lives
here, beside the machinery that consumes it, so that training never imports the task modules.

The life of a run: `pipelines.training.trainer.train(task, config)` calls `datasets`,
`build_model`, `loss` and `metrics`, checkpoints the whole model every epoch (`keras.saving`
format, so every custom layer or function must be registered with
`keras.saving.register_keras_serializable`), and keeps the best epoch by `monitor`.
`pipelines.training.evaluation.evaluate_run` reloads the best checkpoint and calls `evaluate`;
`pipelines.training.export.export_run` reloads it and exports `serving_signatures`, with
`signature_methods` and `warmup_requests`.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.config import TrainConfig, make_config

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


class Task(abc.ABC):
    """One trainable, evaluable, exportable model on one data set.

    Subclasses set the class attributes and implement the abstract methods; they never write a
    training loop (the trainer owns optimizer, clipping, checkpoints and callbacks).
    """

    # get_task sets name and export_name from the task's registry line (so one class can serve
    # several presets), `info` to the line itself and `registry`; a task made without get_task
    # (tests) keeps its class's values and has neither.
    name: ClassVar[str]  # as typed on the command line, e.g. "sentiment"
    dataset: ClassVar[str]  # the data set `rnnkit data prepare` takes, e.g. "imdb"
    export_name: ClassVar[str]  # the served model's name, exports/<export_name>/<version>/
    info: TaskInfo | None = None
    registry: Registry | None = None  # set by get_task; see Registry
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

    def resume_from(self, model: keras.Model, config: TrainConfig) -> None:
        """On --resume, before the data is read: make the data agree with what the checkpoint's
        model learned from it (label names and their order), or raise a UserError saying how
        they differ. Nothing by default.

        Args:
            model: the run's last checkpoint.
            config: the resumed run's config.
        """
        del model, config

    def metrics(self, config: TrainConfig) -> list[Any]:
        """Metrics reported during training (the first is monitored if `monitor` says so)."""
        return []

    def layer_rates(self, model: keras.Model, config: TrainConfig) -> dict[str, tuple[float, int]]:
        """Per-variable learning-rate scales and start epochs (pretrained layers); {} for none."""
        return {}

    monitor: ClassVar[str] = "val_loss"  # early stopping and best-checkpoint quantity
    monitor_mode: ClassVar[str] = "min"

    @abc.abstractmethod
    def evaluate(self, model: keras.Model, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
        """Test-split metrics as a JSON-able dict; may also write plots into run_dir."""

    def trained_config(self, config: TrainConfig, run_dir: Path) -> TrainConfig:
        """The config a run trained with (its config.json), for reading its training and
        validation parts while `config` describes the file being scored (`rnnkit evaluate
        --data other.csv --text-column body` names the other file's columns, not the run's).

        Args:
            config: the evaluation's config, returned when run_dir has no config.json.
            run_dir: the run.
        """
        from pipelines.training.run_dir import CONFIG_FILE, load_config

        if not (Path(run_dir) / CONFIG_FILE).is_file():
            return config
        return load_config(Path(run_dir), type(config))

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

    def default_export_name(self, config: TrainConfig) -> str:
        """The served model's name when `rnnkit export` is given no --model-name.

        A run on a user's file (`--data reviews.csv.gz`) is named after the file's stem
        (`reviews`); a run on a named data set, or a preset, takes the registry's export name.

        Args:
            config: the run's config.
        """
        data = str(getattr(config, "data", None) or "")
        name = Path(data).name
        if "." not in name:
            return self.export_name
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.split(".")[0]).strip("_.-")
        return stem or self.export_name

    def export_metadata(self, config: TrainConfig, run_dir: Path | None) -> dict[str, Any]:
        """What a client needs beyond the signatures, written into the export's metadata file.

        E.g. {"classes": [...]} for a classifier or {"tags": [...]} for a tagger (see
        docs/app.md, "Model metadata"); the kind, task and run are added by the export.

        Args:
            config: the run's config.
            run_dir: the run directory.
        """
        return {}


# What a served model does, which picks its view on the web page and `rnnkit predict`'s inputs.
KINDS = ("classify", "tag", "seq2seq", "caption", "language_model")


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A published number a task's result is compared with (benches, README).

    Args:
        metric: the evaluation key it compares with, e.g. "accuracy" or "bleu".
        value: the published value, on the evaluation's scale.
        source: who published it and how, e.g. "Kim 2014, CNN-rand".
    """

    metric: str
    value: float
    source: str


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One registry line: where a task's class lives and the facts everything else reads.

    Args:
        name: the task as typed on the command line.
        target: "module:Class" of its Task subclass, imported only when the task is used.
        kind: one of KINDS.
        export_name: the served model's default name (`rnnkit export --model-name` overrides).
        headline: the evaluation keys `rnnkit run`'s summary shows, most important first.
        preset_of: the generic task this one is a named preset of (same model and commands,
            fixed data and settings); None for a generic task.
        dataset: the named data set it trains on (`rnnkit data prepare` / `--data` name); None
            when the user gives the data (`--data FILE`).
        anchors: published numbers to compare with.
        run_order: its place in `rnnkit run` / `make run` (ascending); None leaves it out.
    """

    name: str
    target: str
    kind: str
    export_name: str
    headline: tuple[str, ...]
    preset_of: str | None = None
    dataset: str | None = None
    anchors: tuple[Anchor, ...] = ()
    run_order: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind {self.kind!r} is not one of {KINDS}")




@dataclasses.dataclass(frozen=True)
class Registry:
    """The task registry as a task sees it: every line, and a way to make a task from its name.

    `get_task` hands it to each task it makes (`Task.registry`), so that a task learning from
    other trained runs (sentiment's self-training teachers) reaches their tasks through the
    contract instead of importing the registry, which imports every task module.

    Args:
        lines: every registry line, in registry order.
        get_task: makes a registered task by name.
    """

    lines: tuple[TaskInfo, ...]
    get_task: Callable[[str], Task]
