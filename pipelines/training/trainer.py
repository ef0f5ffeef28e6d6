"""The one trainer: every task trains through `train`, which owns the optimizer and callbacks.

A task supplies data, model, loss and metrics (pipelines.tasks.Task); `train` compiles with Adam
and gradient clipping, seeds everything, checkpoints atomically every epoch (last and best, with
optimizer state, so `resume=True` continues where a run stopped), stops early on the task's
validation monitor, stops on NaN, and writes TensorBoard logs, history, metrics and curves into
the run directory. Distribution strategies and truncated BPTT plug in at `distribution_scope` and
`_fit`, the only places that know about them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import TrainConfig
from pipelines.training import distribute
from pipelines.training import run_dir as runs
from pipelines.training.checkpoints import CheckpointStore, is_finite
from pipelines.training.optimizer import adam, optimizer_epoch_callback
from pipelines.training.plots import plot_curves
from pipelines.training.tbptt import truncated_bptt
from serving.errors import UserError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from pipelines.training.task import Task

log = logging.getLogger("pipelines.training.trainer")


@dataclasses.dataclass
class TrainResult:
    """What `train` hands back.

    Args:
        model: the trained model, holding the best epoch's weights.
        run_dir: the run directory everything was written to.
        history: metric name -> one value per finished epoch, across resumes.
        metrics: the training summary also written to metrics.json.
        terminated_on_nan: whether training stopped because the loss became NaN or infinite.
    """

    model: keras.Model
    run_dir: Path
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    terminated_on_nan: bool


@contextlib.contextmanager
def distribution_scope(config: TrainConfig) -> Iterator[Any]:
    """Enter the tf.distribute strategy named by `config.strategy` for model building.

    Args:
        config: the run's config; `strategy` picks the strategy (see pipelines.training.distribute).
    """
    strategy = distribute.strategy_for(config)
    with strategy.scope():
        yield strategy


def compile_model(model: keras.Model, task: Task, config: TrainConfig) -> None:
    """Compile with Adam (clipped by `config.clipnorm`) and the task's loss and metrics.

    Args:
        model: the model to compile (inside the distribution scope).
        task: supplies loss and metrics.
        config: learning rate and clipping.
    """
    optimizer = adam(config.learning_rate, config.clipnorm, task.layer_rates(model, config),
                     config.ema_momentum)
    model.compile(optimizer=optimizer, loss=task.loss(config), metrics=task.metrics(config))
    if model.built and model.trainable_variables:
        # Built here, not by the first training step: variables created while tf.function
        # traces make it trace that step twice (the whole forward and backward graph; 7 of
        # a small seq2seq run's 35 s). Keras does the same when a strategy is set.
        optimizer.build(model.trainable_variables)


def _callbacks(task: Task, config: TrainConfig, run_dir: Path, store: CheckpointStore,
               history: dict[str, list[float]], resume_state: dict[str, Any] | None,
               ) -> list[keras.callbacks.Callback]:
    """The callbacks every run gets, in the order they must run at each epoch's end."""
    import keras

    from pipelines.training.callbacks import (
        EpochCheckpoint,
        HistoryWriter,
        ResumableEarlyStopping,
        TimeBudget,
        WeightAveraging,
        decayed_learning_rate,
    )

    if not task.monitor.startswith("val_"):
        raise UserError(f"task {task.name} monitors {task.monitor!r}",
                        "early stopping and best checkpoints must monitor a val_ metric")
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        optimizer_epoch_callback(),
        # Before EpochCheckpoint and early stopping: they read the averaged weights.
        *([WeightAveraging(resumed=resume_state is not None)] if config.ema_momentum > 0 else []),
        # Before HistoryWriter: it logs `learning_rate` at each epoch's end.
        keras.callbacks.LearningRateScheduler(
            decayed_learning_rate(config.learning_rate, config.lr_decay)),
        EpochCheckpoint(store, task.name, task.monitor, task.monitor_mode),
        HistoryWriter(run_dir, history),
        ResumableEarlyStopping(store, resume_state, monitor=task.monitor,
                               mode=task.monitor_mode,
                               patience=config.early_stopping_patience,
                               restore_best_weights=True),
    ]
    if config.max_minutes is not None:
        callbacks.append(TimeBudget(config.max_minutes))
    # tf.summary needs the tensorboard package; without it training still runs.
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=str(run_dir / runs.TENSORBOARD_DIR), write_graph=False,
            update_freq="epoch"))
    else:
        log.warning("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
    return callbacks


def _fit(model: keras.Model, train_data: tf.data.Dataset, val_data: tf.data.Dataset,
         config: TrainConfig, callbacks: list[Any], initial_epoch: int) -> None:
    """Run Keras's fit loop, with truncated BPTT when `config.tbptt_steps` is set.

    Args:
        model: the compiled model.
        train_data: batched (inputs, targets) training data.
        val_data: batched (inputs, targets) validation data (always whole sequences).
        config: epochs and the truncated BPTT chunk length.
        callbacks: the run's callbacks.
        initial_epoch: epochs already finished (resume).
    """
    # Keras writes its progress bar to stdout; rnnkit keeps stdout for results.
    verbose = 1 if sys.stderr.isatty() else 2
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings(), \
            truncated_bptt(model, config) as chunked:
        # Length-bucketed datasets have no known size, so Keras finds each epoch's end by
        # running out of data, and warns about it; that is expected here.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        model.fit(chunked(train_data), validation_data=val_data, epochs=config.epochs,
                  initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                  shuffle=False)  # the task's dataset shuffles itself


def _resumable_state(task: Task, run_dir: Path | None) -> dict[str, Any]:
    """The checkpoint state of a run that `task` can resume, or a UserError saying why not."""
    if run_dir is None or not run_dir.is_dir():
        what = "is a file" if run_dir is not None and run_dir.exists() else "does not exist"
        raise UserError(f"cannot resume: run directory {run_dir} {what}",
                        "pass the --run-dir of an interrupted run (see `rnnkit runs`)")
    state = CheckpointStore(run_dir).state()
    if state is None:
        raise UserError(f"cannot resume: {run_dir} has no checkpoint",
                        f"start it without --resume: rnnkit train {task.name} --run-dir "
                        f"{run_dir}")
    if state.get("task") != task.name:
        raise UserError(f"cannot resume: {run_dir} is a run of task {state.get('task')!r}, "
                        f"not {task.name!r}",
                        f"resume it with: rnnkit train {state.get('task')} --resume "
                        f"--run-dir {run_dir}")
    return state


# The settings a run's labels, vocabularies and held-out rows were read with: resuming with
# others would go on training on rows whose label or word ids mean something else.
FIXED_ON_RESUME = ("data", "validation_data", "validation_fraction", "seed", "text_column",
                   "label_column", "token_column", "tag_column", "source_column",
                   "target_column", "image_column", "caption_column", "max_tokens",
                   "max_train_examples", "documents", "tokenize")
# Settings the model is built from (the tasks' configs): a resumed run loads its model from
# the checkpoint, so these cannot change either.
MODEL_SETTINGS = ("model", "cell", "layers", "units", "embedding_dim", "embed_dim",
                  "dense_units", "pooling", "attention", "dropout", "recurrent_dropout",
                  "embedding_dropout", "word_dropout", "unknown_dropout", "char_features",
                  "max_chars", "char_dim", "char_filters", "max_length", "keep", "ngrams",
                  "output_mode", "source_vocab_size", "target_vocab_size", "vocab_size",
                  "min_word_count", "encoder", "encoder_alpha", "encoder_weights",
                  "image_size", "normalize_features", "residual_attention", "encoder_from",
                  "word_vectors", "train_embedding")


def resume_config(task: Task, run_dir: Path | None, overrides: list[str] | None = None,
                  ) -> TrainConfig:
    """The config a resumed run continues with: its config.json plus `key=value` overrides.

    Args:
        task: the run's task.
        run_dir: the run to resume.
        overrides: changes, e.g. ["epochs=6"] to train longer.
    """
    from pipelines.config import apply_overrides

    _resumable_state(task, run_dir)
    saved = runs.load_config(run_dir, task.config_class)
    config = apply_overrides(saved, overrides)
    for name in FIXED_ON_RESUME + MODEL_SETTINGS:
        before, after = getattr(saved, name, None), getattr(config, name, None)
        if before == after:
            continue
        if name in MODEL_SETTINGS:
            # The model comes back from the checkpoint: the new value would be written to
            # config.json and never used.
            raise UserError(f"cannot resume {run_dir} with {name}={after}: its checkpoint is a "
                            f"model built with {name}={before}",
                            "a resumed run continues the model it saved; drop that change, or "
                            "start a new run with another --run-dir")
        raise UserError(
            f"cannot resume {run_dir} with {name}={after}: it trained with {name}={before}",
            "a resumed run reads the data it started with (its labels, vocabulary and "
            f"held-out rows come from it); drop that change, or start a new run. If only "
            f"the file moved, put its new path in {run_dir / runs.CONFIG_FILE}")
    if (saved.ema_momentum > 0) != (config.ema_momentum > 0):
        # The average lives in the optimizer's state, which a checkpoint has or has not.
        raise UserError(f"cannot resume {run_dir} with ema_momentum={config.ema_momentum}: it "
                        f"trained with ema_momentum={saved.ema_momentum}",
                        "weight averaging is on or off for a whole run; change only its "
                        "momentum, or start a new run")
    return config


def train(task: Task, config: TrainConfig, run_dir: Path | None = None,
          resume: bool = False) -> TrainResult:
    """Train a task's model, writing everything into a run directory.

    Args:
        task: what to train (data, model, loss, metrics, monitor).
        config: the settings; on resume pass `resume_config(task, run_dir, overrides)`, the
            run's own config with any changes (e.g. more epochs).
        run_dir: the run directory; None creates runs/<task>/<timestamp>. With resume=True it
            must be an existing run with a checkpoint.
        resume: continue from the run's last checkpoint: weights, optimizer state and epoch.
    """
    config.validate()
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = distribute.strategy_for(config)
    distribute.check_batch_size(config.batch_size, strategy)
    with distribute.writable_run_dir(strategy, run_dir, resume) as own_run_dir:
        result = _train(task, config, own_run_dir, resume)
    if own_run_dir != run_dir:  # a worker other than the chief: the chief wrote the run
        result.run_dir = Path(run_dir)
    return result


def _train(task: Task, config: TrainConfig, run_dir: Path | None, resume: bool) -> TrainResult:
    """`train` in this process's own run directory (see distribute.writable_run_dir)."""
    import keras

    started = time.monotonic()
    model = None
    if resume:
        resume_state = _resumable_state(task, run_dir)
        store = CheckpointStore(run_dir)
    else:
        created = run_dir is None or not run_dir.exists()
        run_dir = runs.new_run_dir(task.name, run_dir)
        store = CheckpointStore(run_dir)
        resume_state = None
    log.info("run directory: %s", run_dir)

    keras.utils.set_random_seed(config.seed)
    try:
        if resume_state:
            with distribution_scope(config):
                model = store.load_model("last")
            task.resume_from(model, config)
        train_data, val_data = task.datasets(config)
        # Only now: a resume refused for its data keeps the config.json it trained with.
        runs.save_config(run_dir, config)
        train_data = distribute.shard_by_data(train_data)
        val_data = distribute.shard_by_data(val_data)
        with distribution_scope(config):
            if model is None:
                model = task.build_model(config)  # e.g. encoder_from refused here
            compile_model(model, task, config)
            distribute.prepare_fit(model, train_data)
            if resume_state:
                store.restore_optimizer(model, "last")
    except BaseException:
        if not resume and created:  # refused before training: leave no run behind
            (run_dir / runs.CONFIG_FILE).unlink(missing_ok=True)
            if not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise

    initial_epoch = resume_state["epoch"] if resume_state else 0
    history: dict[str, list[float]] = {}
    if resume_state:
        saved = runs.read_json(run_dir / runs.HISTORY_FILE) or {}
        history = {k: list(v)[:initial_epoch] for k, v in saved.items()}
        log.info("resuming %s at epoch %d of %d (optimizer step %d)", run_dir, initial_epoch,
                 config.epochs, int(model.optimizer.iterations.numpy()))

    callbacks = _callbacks(task, config, run_dir, store, history, resume_state)
    _fit(model, train_data, val_data, config, callbacks, initial_epoch)
    wall = time.monotonic() - started

    from pipelines.training.callbacks import TimeBudget

    state = store.state() or {}
    nan = bool(history.get("loss")) and not is_finite(history["loss"][-1])
    best_epoch = state.get("best_epoch")
    at_best = {k: v[best_epoch - 1] for k, v in history.items()
               if best_epoch and len(v) >= best_epoch}
    metrics = {
        "task": task.name,
        "epochs_finished": state.get("epoch", 0),
        "epochs_requested": config.epochs,
        "best_epoch": best_epoch,
        "monitor": task.monitor,
        "best_value": state.get("best_value"),
        "at_best_epoch": at_best,
        "stopped_early": bool(state.get("epoch", 0) < config.epochs and not nan),
        "stopped_by_time_budget": any(isinstance(c, TimeBudget) and c.stopped
                                      for c in callbacks),
        "terminated_on_nan": nan,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "train_wall_time_s": round(wall, 2),
        "resumed": resume,
    }
    runs.write_json(run_dir / runs.METRICS_FILE, metrics)
    if history:
        plot_curves(history, run_dir / runs.CURVES_FILE,
                    title=f"{task.name} — {run_dir.name}", best_epoch=best_epoch)
    log.info("finished %s in %.1f s: best %s=%s at epoch %s", task.name, wall, task.monitor,
             state.get("best_value"), best_epoch)
    return TrainResult(model=model, run_dir=run_dir, history=history, metrics=metrics,
                       terminated_on_nan=nan)
