"""`rnnkit export`: write a trained run as a SavedModel in TF Serving's layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "export a trained run as <base-path>/<model>/<version>/ for TF Serving or `rnnkit serve`"
EXAMPLES = """examples:
  rnnkit export sentiment --run-dir runs/sentiment/20250101-120000 --base-path exports
  rnnkit export sentiment_bow                  # newest run, into ./exports
  rnnkit export seq2seq --run-dir runs/seq2seq/mine --model-name normaliser
Each export is a new integer version; existing versions are never overwritten. Prints JSON with
the version's path. The model's name defaults to the training data file's stem (`--data
reviews.csv` -> reviews), else the task's own name (sentiment, translator, ...).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    from pipelines.tasks import task_names

    parser.add_argument("task", metavar="TASK", help=f"one of {task_names()}")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="the trained run (default: the task's newest trained run)")
    parser.add_argument("--base-path", type=Path, default=Path("exports"), metavar="DIR",
                        help="the exports folder (default: %(default)s)")
    parser.add_argument("--model-name", default=None, metavar="NAME",
                        help="the served model's name (default: the data file's stem or the "
                             "task's export name)")


def run(args: argparse.Namespace) -> int:
    """Export and print where.

    Args:
        args: the parsed command line.
    """
    from pipelines.tasks import get_task
    from pipelines.training.export import export_run
    from pipelines.training.run_dir import find_run

    task = get_task(args.task)
    run_dir = find_run(task.name, args.run_dir)
    path = export_run(task, run_dir, args.base_path, args.model_name)
    print(json.dumps({"model_name": path.parent.name, "version": int(path.name),
                      "path": str(path), "run_dir": str(run_dir)}))
    return 0
