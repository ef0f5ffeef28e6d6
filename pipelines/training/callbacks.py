"""The callbacks every training run gets, each with what it needs passed in explicitly.

Imported by the trainer when a run starts (it imports Keras, so TensorFlow, at the top).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import keras

from pipelines.training import run_dir as runs
from pipelines.training.checkpoints import CheckpointStore, is_finite
from serving.errors import UserError

log = logging.getLogger("pipelines.training.callbacks")


def better(value: float, best: float | None, mode: str) -> bool:
    """Whether `value` improves on `best` in the monitor's direction.

    Args:
        value: this epoch's monitored value.
        best: the best value so far; None when there is none yet.
        mode: "min" or "max".
    """
    if best is None:
        return True
    return value < best if mode == "min" else value > best


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the last (and best) model and optimizer atomically after every finite epoch.

    Args:
        store: the run's checkpoint store.
        task_name: the task, recorded in the checkpoint state (resume checks it).
        monitor: the logged quantity that picks the best epoch, e.g. "val_loss".
        mode: "min" or "max": which direction of `monitor` is better.
    """

    def __init__(self, store: CheckpointStore, task_name: str, monitor: str, mode: str) -> None:
        super().__init__()
        self.store = store
        self.task_name = task_name
        self.monitor = monitor
        self.mode = mode

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if not is_finite(logs.get("loss")):
            log.error("epoch %d: loss is %s; not checkpointing it", epoch + 1, logs.get("loss"))
            return
        value = logs.get(self.monitor)
        if value is None:
            raise UserError(f"task {self.task_name} monitors {self.monitor!r}, which training "
                            f"did not log (logged: {sorted(logs)})",
                            "set the task's monitor to a logged validation metric")
        state = self.store.state() or {}
        best = better(float(value), state.get("best_value"), self.mode)
        self.store.save(self.model, epoch + 1, float(value), best, extra={
            "task": self.task_name, "monitor": self.monitor, "mode": self.mode,
            "wait": 0 if best else state.get("wait", 0) + 1,
        })


class HistoryWriter(keras.callbacks.Callback):
    """Append each epoch's logs to `history` and write it to history.json and history.csv.

    Args:
        run_dir: the run directory the files go to (each written atomically).
        history: metric name -> one value per epoch; a resumed run passes the epochs it kept.
    """

    def __init__(self, run_dir: Path, history: dict[str, list[float]]) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        history = self.history
        for key, value in (logs or {}).items():
            history.setdefault(key, []).append(float(value))
        runs.write_json(self.run_dir / runs.HISTORY_FILE, history)
        keys = sorted(history)
        rows = [",".join(["epoch", *keys])]
        for i in range(max(len(v) for v in history.values())):
            cells = [str(history[k][i]) if i < len(history[k]) else "" for k in keys]
            rows.append(",".join([str(i + 1), *cells]))
        tmp = self.run_dir / f".tmp-{runs.HISTORY_CSV}"
        tmp.write_text("\n".join(rows) + "\n")
        tmp.replace(self.run_dir / runs.HISTORY_CSV)


class TimeBudget(keras.callbacks.Callback):
    """Stop training before an epoch that would end past a wall-clock budget (as Lightning's
    `max_time`), judging by the slowest epoch so far; the epoch that ran is checkpointed first.

    Args:
        minutes: the budget, counted from the start of this run's training.
    """

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = minutes * 60
        self.stopped = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()
        self.slowest = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        self.slowest = max(self.slowest, now - self.epoch_started)
        if now - self.started + self.slowest > self.seconds:
            log.info("stopping after epoch %d: another one (%.0f s at the slowest pace) would "
                     "end past max_minutes=%g", epoch + 1, self.slowest, self.seconds / 60)
            self.stopped = True
            self.model.stop_training = True


class WeightAveraging(keras.callbacks.SwapEMAWeights):
    """Validate, checkpoint and keep the optimizer's moving average of the weights (Polyak).

    Keras's SwapEMAWeights with `swap_on_epoch`: the average is in the model during validation
    and from each epoch's end (so checkpoints, early stopping and exports see it) to the next
    epoch's start, when training resumes from the raw weights. A checkpoint therefore holds the
    average as the model's weights and the raw weights in the optimizer's average slots; a
    resumed run starts in that swapped state and swaps back before its first epoch. Must come
    before the callbacks that read the weights at an epoch's end.

    Args:
        resumed: whether the run continues from such a checkpoint.
    """

    def __init__(self, resumed: bool) -> None:
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Not Keras's last-epoch finalize: the trainer's optimizer keeps the model's weights
        # when fit ends (pipelines.training.optimizer._averaging).
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping, continuing the best value and patience of a resumed run.

    Args:
        store: the run's checkpoint store (the best weights of a resumed run come from it).
        resume_state: the checkpoint state the run resumes from; None for a new run.
        **kwargs: EarlyStopping's own arguments (monitor, mode, patience, ...).
    """

    def __init__(self, store: CheckpointStore, resume_state: dict[str, Any] | None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.resume_state = resume_state

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        state = self.resume_state
        if state and state.get("best_value") is not None:
            self.best = state["best_value"]
            self.best_epoch = state["best_epoch"] - 1
            self.wait = state.get("wait", 0)
            if state["best"] != state["last"]:
                self.best_weights = self.store.load_model("best").get_weights()


def decayed_learning_rate(learning_rate: float, lr_decay: float) -> Any:
    """The schedule LearningRateScheduler calls: a function of the epoch alone.

    A resumed run so picks the schedule up where it was; the config is the authority, so a
    resume may also change the learning rate.

    Args:
        learning_rate: the first epoch's rate.
        lr_decay: the factor applied after every epoch.
    """
    return lambda epoch, _: learning_rate * lr_decay ** epoch
