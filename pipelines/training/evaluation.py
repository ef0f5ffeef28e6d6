"""Evaluate a trained run on its task's test split and record the result in the run directory."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config import apply_overrides
from pipelines.training.checkpoints import CheckpointStore
from pipelines.training.run_dir import (
    EVALUATION_FILE,
    load_config,
    read_json,
    scored_name,
    write_json,
)
from serving.errors import UserError

if TYPE_CHECKING:
    from pipelines.training.task import Task

log = logging.getLogger("pipelines.training.evaluation")


def evaluate_run(task: Task, run_dir: Path, overrides: list[str] | None = None,
                 ) -> dict[str, Any]:
    """Evaluate a run's best checkpoint on the test split; writes and returns evaluation.json.

    Args:
        task: the run's task (its `evaluate` computes the metrics).
        run_dir: the trained run directory.
        overrides: `key=value` changes for this evaluation only, never saved to the run's
            config (e.g. `test_data=other.csv` to score another labelled file); the result then
            goes to evaluation-<file stem>.json, keeping the test split's evaluation.json.
    """
    started = time.monotonic()
    config = load_config(run_dir, task.config_class)
    result_file = EVALUATION_FILE
    if overrides:
        config = apply_overrides(config, overrides)
        config.validate()
        result_file = scored_name(EVALUATION_FILE, getattr(config, "test_data", ""))
    _check_writable(run_dir)
    model = CheckpointStore(run_dir).load_model("best")
    log.info("evaluating %s on the test split", run_dir)
    metrics = task.evaluate(model, config, run_dir)
    result = {"task": task.name, "run_dir": str(run_dir), **metrics,
              "wall_time_s": round(time.monotonic() - started, 2)}
    scored = getattr(config, "test_data", "") if overrides else ""
    if scored:
        result.setdefault("data", str(scored))  # the tasks name it so already
        _note_replaced(run_dir / result_file, result["data"])
    write_json(run_dir / result_file, result)
    return result


def _note_replaced(path: Path, data: str) -> None:
    """Say so when a result for another file of the same stem (a.tsv after a.jsonl) is replaced."""
    try:
        before = read_json(path)
    except UserError:  # damaged: nothing worth naming
        return
    if isinstance(before, dict) and before.get("data") not in (None, data):
        log.warning("%s held the scores of %s; it now holds those of %s (the same file stem)",
                    path.name, before["data"], data)


def _check_writable(run_dir: Path) -> None:
    """Evaluation writes its JSON and plots into the run directory: found out before the work,
    not after it (a read-only or immutable folder, a full disk)."""
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise UserError(f"cannot write into run directory {run_dir}: {err.strerror}",
                        "evaluate writes evaluation.json and its plots there: make it "
                        "writable, or copy the run and evaluate the copy") from None
