"""`rnnkit evaluate`: test-split metrics of a trained run, as one JSON object."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "evaluate a trained run on the test split; prints one JSON object"
EXAMPLES = """examples:
  rnnkit evaluate sentiment --run-dir runs/sentiment/20250101-120000
  rnnkit evaluate sentiment_bow              # the task's newest trained run
  rnnkit evaluate classify --run-dir runs/classify/mine --data other_test.csv
The result is also written to evaluation.json in the run directory (evaluation-<file stem>.json
for a file given with --data); logs go to stderr.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    from app.commands.data_flags import add_data_arguments
    from pipelines.tasks import task_names

    parser.add_argument("task", metavar="TASK", help=f"one of {task_names()}")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="the trained run (default: the task's newest trained run)")
    add_data_arguments(parser, data_help="a labelled file (or data set name) to score "
                                         "instead of the run's test data")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics.

    Args:
        args: the parsed command line.
    """
    from app.commands.data_flags import data_overrides
    from pipelines.tasks import get_task
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.run_dir import find_run

    task = get_task(args.task)
    # Evaluate's --data is the file to score: the run's test data, for this evaluation only.
    overrides = data_overrides(args, task, rename={"data": "test_data"})
    result = evaluate_run(task, find_run(task.name, args.run_dir), overrides)
    print(json.dumps(result))
    return 0
