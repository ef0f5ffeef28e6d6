"""`rnnkit runs`: list training runs with their metrics."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

HELP = "list training runs with their validation and test metrics"
EXAMPLES = """examples:
  rnnkit runs
  rnnkit runs sentiment
  rnnkit runs --json
Runs are read from RNNKIT_RUNS_DIR (default ./runs). While `rnnkit run` (`make run`) works, or
after it, the list starts with what it is doing: each task waiting, preparing data, training
(epoch k of n), evaluating, served, or failed with its error.
"""


# Test metrics shown first when an evaluation has them.
HEADLINE = ("accuracy", "f1", "roc_auc", "bleu", "chrf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("task", nargs="?", default=None, metavar="TASK",
                        help="only this task's runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def _test_summary(evaluation: dict[str, Any] | None) -> str:
    """The first few test metrics of an evaluation, e.g. `accuracy=0.8712 f1=0.8690`."""
    if not evaluation:
        return "-"
    skip = {"wall_time_s", "threshold", "n_examples"}
    numbers = {k: v for k, v in evaluation.items() if isinstance(v, float) and k not in skip}
    shown = [k for k in HEADLINE if k in numbers] or list(numbers)
    return " ".join(f"{k}={numbers[k]:.4f}" for k in shown[:3]) or "-"


def _job_lines(progress: dict[str, Any], task: str | None) -> list[str]:
    """The main job's state and one line per task, as the web page's progress view shows it."""
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(progress.get("started", 0)))
    serving = progress.get("serving") or {}
    where = f", serving at {serving['app']}" if serving.get("app") else ""
    lines = [f"rnnkit run ({progress.get('profile')} profile, started {started}): "
             f"{progress.get('state')}{where}"]
    lines += [f"  {entry['task']:<14} {entry['label']}" for entry in progress["tasks"]
              if task is None or entry["task"] == task]
    return [*lines, ""]


def run(args: argparse.Namespace) -> int:
    """Print the main job's progress, then the runs, oldest first.

    Args:
        args: the parsed command line.
    """
    from app.run_progress import read_progress
    from pipelines.config import runs_dir
    from pipelines.training.run_dir import list_runs

    if args.task is not None and not (runs_dir() / args.task).is_dir():
        from pipelines.tasks import task_info

        task_info(args.task)  # an unknown name is an error naming the known ones
    runs = list_runs(args.task)
    if args.json:
        for item in runs:
            print(json.dumps(item))
        return 0
    progress = read_progress(runs_dir())
    if progress is not None:
        print("\n".join(_job_lines(progress, args.task)))
    rows = [("TASK", "RUN", "STATUS", "EPOCHS", "MONITOR", "BEST", "TEST")]
    for item in runs:
        metrics = item["metrics"] or {}
        status = ("finished" if item["finished"]
                  else "interrupted" if item["trained"] else "no checkpoint")
        if item.get("problem"):
            status = f"damaged: {item['problem']}"
        rows.append((item["task"], item["run_dir"], status,
                     _number(metrics.get("epochs_finished")), metrics.get("monitor", "-"),
                     _number(metrics.get("best_value")), _test_summary(item["evaluation"])))
    if len(rows) == 1:
        print(f"no runs yet under {runs_dir()}: train one with `rnnkit train TASK`")
        return 0
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())
    return 0
