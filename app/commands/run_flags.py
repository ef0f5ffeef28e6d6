"""The flags naming a trained run (`TASK`, `--run-dir`) that `rnnkit evaluate` and `rnnkit export`
share, and the run they name."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.training.task import Task


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the task and `--run-dir` arguments.

    Args:
        parser: the sub-command's parser.
    """
    from pipelines.tasks import task_names

    parser.add_argument("task", metavar="TASK", help=f"one of {task_names()}")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="the trained run (default: the task's newest trained run)")


def chosen_run(args: argparse.Namespace) -> tuple[Task, Path]:
    """The task and the run directory the command line names (the newest run by default).

    Args:
        args: the parsed command line, with `task` and `run_dir`.
    """
    from pipelines.tasks import get_task
    from pipelines.training.run_dir import find_run

    task = get_task(args.task)
    return task, find_run(task.name, args.run_dir)
