"""Small real training runs the task tests share: one task's quick profile, changed by overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def quick_run(task_name: str, overrides: list[str], run_dir: Path) -> tuple[Any, Any, Any]:
    """Train a registered task's quick profile with `key=value` overrides into run_dir.

    Args:
        task_name: the registry's task name.
        overrides: `key=value` changes to the quick profile (tiny subsets for tests).
        run_dir: the run directory to create.

    Returns:
        (task, config, TrainResult).
    """
    from pipelines.tasks import get_task
    from pipelines.training.trainer import train

    task = get_task(task_name)
    config = task.config("quick", overrides)
    return task, config, train(task, config, run_dir)
