"""Run directories: `runs/<task>/<run-id>/` with config, checkpoints, logs, metrics and curves.

Layout of one run (every file is written atomically, so a reader never sees half of one):

    config.json        the TrainConfig the run trains with
    checkpoints/       see pipelines.training.checkpoints (state.json: the last and best epochs)
    tensorboard/       TensorBoard event files
    history.json       per-epoch training and validation metrics
    history.csv        the same, one row per epoch
    metrics.json       the training summary written when training ends
    curves.png         training curves drawn from history.json
    evaluation.json    test-split metrics written by `rnnkit evaluate` (evaluation-<stem>.json
                       for `evaluate --data <stem>.csv`; the tasks' plots and galleries take the
                       same suffix, see scored_name)
    threshold.json     a classifier's decision threshold, chosen on validation (sentiment)

A gradient-lab run (`rnnkit lab gradients`, pipelines.gradient_lab) holds lab.json and
report.md instead, beside its plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, TypeVar

from pipelines.config import TrainConfig, runs_dir
from serving.errors import UserError

log = logging.getLogger("pipelines.training.run_dir")

C = TypeVar("C", bound=TrainConfig)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
HISTORY_CSV = "history.csv"
CURVES_FILE = "curves.png"
EVALUATION_FILE = "evaluation.json"
CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.keras"  # in each checkpoint folder (pipelines.training.checkpoints)
TENSORBOARD_DIR = "tensorboard"
LAB_FILE = "lab.json"  # a gradient-lab run's results
REPORT_FILE = "report.md"  # a gradient-lab run's written report


def scored_name(name: str, data: str) -> str:
    """The run-dir name of what scoring a file writes: `name` for the run's own test split,
    `<stem>-<file stem><ext>` for another file, so scoring one never overwrites another's.

    Args:
        name: the file (or folder) name, e.g. `confusion_matrix.png`.
        data: the scored file (`--test-data`, `evaluate --data`); empty for the test split.
    """
    if not data:
        return name
    stem = Path(data).name.split(".")[0] or "data"
    base = Path(name)
    return f"{base.stem}-{stem}{base.suffix}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and os.replace, so readers see old or new, never half.

    Args:
        path: the destination file.
        data: anything json.dumps accepts.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(_finite(data), indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)


def _finite(data: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers, and browsers reject Python's NaN."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def read_json(path: Path) -> Any:
    """Read a JSON file, or None when it does not exist.

    Args:
        path: the file to read.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err})",
                        "delete the file or the whole run directory and train again") from None


def new_run_dir(task_name: str, run_dir: Path | None = None) -> Path:
    """Create the directory of a new run.

    Args:
        task_name: the task, the parent folder under the runs directory.
        run_dir: an explicit directory (`--run-dir`); it must not hold a checkpoint already.
            None creates `runs/<task>/<timestamp>`.
    """
    if run_dir is None:
        base = runs_dir() / task_name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = base / stamp
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = base / f"{stamp}-{suffix}"
    elif (run_dir / CHECKPOINTS_DIR / "state.json").exists():
        raise UserError(f"run directory {run_dir} already holds a trained run",
                        "add --resume to continue it, or pick another --run-dir")
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not _is_run_config(run_dir):
        # A run writes its config.json before anything else, so a folder with files and
        # without one is someone else's: training would overwrite files of the same names.
        raise UserError(f"{run_dir} is a folder with files that is not a run directory",
                        "pass a new or empty folder as --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file of that name, a parent that is a file, no permission
        raise UserError(f"cannot create run directory {run_dir}: {err.strerror}",
                        "pass a --run-dir that is a new or existing folder you can write to",
                        ) from None
    return run_dir


def _is_run_config(run_dir: Path) -> bool:
    """Whether run_dir/config.json is a run's config (settings every task has had)."""
    try:
        data = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"epochs", "batch_size", "learning_rate"} <= set(data)


def save_config(run_dir: Path, config: TrainConfig) -> None:
    """Write the run's config.json.

    Args:
        run_dir: the run directory.
        config: the config the run trains with.
    """
    write_json(run_dir / CONFIG_FILE, dataclasses.asdict(config))


def load_config(run_dir: Path, config_class: type[C]) -> C:
    """Read the run's config.json as the task's config class.

    Args:
        run_dir: the run directory.
        config_class: the task's TrainConfig subclass.
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist, so {run_dir} is not a run directory",
                        "pass the --run-dir of a run made by `rnnkit train` (see `rnnkit runs`)")
    return config_class.from_json(path.read_text(), str(path))


def run_task(run_dir: Path) -> str | None:
    """The task a run directory was trained for (from its checkpoint state), or None.

    Args:
        run_dir: the run directory.
    """
    state = read_json(run_dir / CHECKPOINTS_DIR / "state.json")
    return state.get("task") if state else None


def find_run(task_name: str, run_dir: Path | None = None) -> Path:
    """Resolve the run to evaluate or export: the given one, else the task's newest trained run.

    Args:
        task_name: the task the run must belong to.
        run_dir: `--run-dir` as given, or None for the newest run of the task.
    """
    if run_dir is None:
        runs = [r for r in list_runs(task_name) if r["trained"]]
        if not runs:
            raise UserError(f"no trained run of task {task_name!r} under {runs_dir()}",
                            f"train one first: rnnkit train {task_name}")
        return Path(runs[-1]["run_dir"])
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise UserError(f"run directory {run_dir} {what}",
                        "pass the --run-dir of an existing run (see `rnnkit runs`)")
    trained_for = run_task(run_dir)
    if trained_for is None:
        raise UserError(f"run directory {run_dir} has no checkpoint",
                        f"train it first: rnnkit train {task_name} --run-dir {run_dir}")
    if trained_for != task_name:
        raise UserError(f"run directory {run_dir} was trained for task {trained_for!r}, "
                        f"not {task_name!r}", f"use: rnnkit ... {trained_for} --run-dir {run_dir}")
    return run_dir


def list_runs(task_name: str | None = None) -> list[dict[str, Any]]:
    """Every run under the runs directory, oldest first, with its metrics and evaluation.

    Args:
        task_name: only this task's runs; None for all tasks.
    """
    root = runs_dir()
    if not root.is_dir():
        return []
    task_dirs = [root / task_name] if task_name else sorted(p for p in root.iterdir() if p.is_dir())
    runs = []
    for task_dir in task_dirs:
        if not task_dir.is_dir():
            continue
        for run_dir in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            if not (run_dir / CONFIG_FILE).exists():
                continue
            problems: list[str] = []
            # One damaged file marks its run; the listing (and find_run) goes on with the rest.
            _json_object(run_dir / CONFIG_FILE, problems)
            state = _json_object(run_dir / CHECKPOINTS_DIR / "state.json", problems)
            trained_for = (state or {}).get("task")
            if trained_for and trained_for != task_dir.name:
                problems.append(f"trained for task {trained_for!r}, filed under "
                                f"{task_dir.name!r}")
            for which in ("best", "last"):  # what evaluate, export and --resume load
                folder = (state or {}).get(which)
                if folder and not (run_dir / CHECKPOINTS_DIR / str(folder) / MODEL_FILE
                                   ).is_file():
                    problems.append(f"its {which} checkpoint {folder} is missing")
            runs.append({
                "task": task_dir.name,
                "run_dir": str(run_dir),
                "trained": bool(trained_for),
                "finished": (run_dir / METRICS_FILE).exists(),
                "metrics": _json_object(run_dir / METRICS_FILE, problems),
                "evaluation": _json_object(run_dir / EVALUATION_FILE, problems),
                "problem": "; ".join(problems) or None,
            })
    return runs


def _json_object(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """A run file's JSON object, or None (missing, or damaged: then named in `problems`)."""
    try:
        value = read_json(path)
        if value is None or isinstance(value, dict):
            return value
    except UserError:  # not valid JSON
        pass
    problems.append(f"{path.name} is damaged (not a JSON object)")
    return None
