"""Atomic per-epoch checkpoints of model and optimizer state, keeping the last and the best.

`checkpoints/` holds one folder per kept epoch (`epoch-0003/` with `model.keras`, the whole
model including adapted vocabularies, and `optimizer.npz`, the optimizer's variables) and
`state.json`, which names the last and best folders. A folder is written under a temporary name
and renamed into place, then `state.json` is replaced; the rename of `state.json` is the commit,
so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.training.run_dir import CHECKPOINTS_DIR, MODEL_FILE, read_json, write_json
from serving.errors import UserError

if TYPE_CHECKING:
    import keras

log = logging.getLogger("pipelines.training.checkpoints")

OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"
# The object kinds whose attribute skip sets Keras's saving computes (saving_lib.get_attr_skipset).
_SKIPSET_KINDS = ("Layer", "Functional", "Sequential", "Operation", "Metric", "Optimizer", "Loss")


def _cache_keras_skipsets() -> None:
    """Make Keras's saving and loading reuse its per-kind attribute skip sets in this thread.

    Keras 3.15's `saving_lib.get_attr_skipset` stores each set under `saving_attr_skipset_KIND`
    but reads `saving_attr_skiplist_KIND`, so its cache never hits: every layer saved or loaded
    builds a throwaway Layer and lists its attributes. For the captioner (MobileNetV2 inside,
    174 layers) that was 0.53 of the 0.65 s each epoch's checkpoint took. The sets are Keras's
    own (computed by the same function), only stored where it looks; Keras keeps its global
    state per thread, hence the call before each save and load.
    """
    try:  # private modules: a Keras without them saves as it always did, only slower
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:
        return
    if not hasattr(saving_lib, "get_attr_skipset"):
        return
    for kind in _SKIPSET_KINDS:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            try:
                global_state.set_global_attribute(key, saving_lib.get_attr_skipset(kind))
            except ValueError:  # a kind this Keras does not know
                continue


class CheckpointStore:
    """The checkpoints of one run directory.

    Args:
        run_dir: the run directory; checkpoints live in its `checkpoints/` folder.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / CHECKPOINTS_DIR

    def state(self) -> dict[str, Any] | None:
        """The saved state (task, epoch, last, best, best_value, monitor, ...) or None."""
        return read_json(self.path / STATE_FILE)

    def exists(self) -> bool:
        """Whether the run has at least one complete checkpoint."""
        return self.state() is not None

    def save(self, model: keras.Model, epoch: int, monitor_value: float | None,
             is_best: bool, extra: dict[str, Any]) -> None:
        """Save model and optimizer after `epoch` (1-based count of finished epochs).

        Args:
            model: the compiled model being trained.
            epoch: how many epochs are finished.
            monitor_value: the monitored validation quantity at this epoch.
            is_best: whether this epoch is the best so far (kept as `best`).
            extra: more fields for state.json (task name, monitor name, early-stopping wait).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}"
        tmp = self.path / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        # Without its compile config the file loads anywhere with keras.saving.load_model: the
        # trainer's optimizer classes are made on first use, so a fresh process could not
        # rebuild one, and every loader here compiles itself (the optimizer's state follows).
        model.get_compile_config = lambda: None
        _cache_keras_skipsets()
        try:
            model.save(tmp / MODEL_FILE)
        finally:
            del model.get_compile_config
        store: dict[str, np.ndarray] = {}
        model.optimizer.save_own_variables(store)
        np.savez(tmp / OPTIMIZER_FILE, **store)
        final = self.path / name
        if final.exists():  # left by a run that crashed before committing state.json
            shutil.rmtree(final)
        os.rename(tmp, final)

        previous = self.state() or {}
        state = {**previous, **extra, "epoch": epoch, "last": name}
        if is_best or "best" not in previous:
            state["best"] = name
            state["best_epoch"] = epoch
            state["best_value"] = monitor_value
        write_json(self.path / STATE_FILE, state)
        self._prune(keep={state["last"], state["best"]})

    def _prune(self, keep: set[str]) -> None:
        """Delete epoch folders other than `keep`, and temporary folders left by crashes."""
        for child in self.path.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)

    def _folder(self, which: str) -> Path:
        state = self.state()
        if state is None:
            raise UserError(f"{self.run_dir} has no checkpoint yet",
                            "train it first with `rnnkit train TASK --run-dir DIR`")
        folder = self.path / state[which]
        if not (folder / MODEL_FILE).is_file():
            raise UserError(f"checkpoint {folder} is missing {MODEL_FILE}",
                            "the run directory was modified; train the run again")
        return folder

    def load_model(self, which: str = "best") -> keras.Model:
        """Load the uncompiled model of the `last` or `best` checkpoint.

        Args:
            which: `last` (to resume) or `best` (to evaluate and export).
        """
        import keras

        folder = self._folder(which)
        if not zipfile.is_zipfile(folder / MODEL_FILE):  # cut short, or overwritten
            raise UserError(f"checkpoint {folder / MODEL_FILE} is damaged (not a whole .keras "
                            "file)", "train the run again with another --run-dir, or restore "
                            "the file from a backup")
        _cache_keras_skipsets()
        try:
            return keras.saving.load_model(folder / MODEL_FILE, compile=False)
        except (ValueError, TypeError, OSError) as err:
            raise UserError(f"cannot load checkpoint {folder / MODEL_FILE}: {err}",
                            "check that rnnkit's version matches the one that trained the run"
                            ) from err

    def restore_optimizer(self, model: keras.Model, which: str = "last") -> None:
        """Give the compiled model's optimizer the variables saved with a checkpoint.

        Args:
            model: the model, compiled with a fresh optimizer of the same kind.
            which: the checkpoint whose optimizer state to restore.
        """
        folder = self._folder(which)
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        with np.load(folder / OPTIMIZER_FILE) as saved:
            store = {key: saved[key] for key in saved.files}
        if len(store) != len(optimizer.variables):
            raise UserError(f"optimizer state in {folder} has {len(store)} variables, the model's "
                            f"optimizer {len(optimizer.variables)}",
                            "resume with the same task and model settings the run started with")
        optimizer.load_own_variables(store)


def is_finite(value: Any) -> bool:
    """Whether a logged metric value is a finite number."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
