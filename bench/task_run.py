"""What the task benchmarks share: their flags and one timed prepare -> train -> evaluate run.

Imported by bench/sentiment.py, bench/translation.py and bench/captioning.py (bench/ is first on
sys.path when one of them runs as a script).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on sys.path, and bench/serving.py would shadow the serving
# package: the repo root goes before it.
sys.path.insert(0, str(REPO))

QUICK_BUDGET_S = 300  # the quick profiles' wall-time budget on 2 cores (the project's spec)


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def task_parser(description: str) -> argparse.ArgumentParser:
    """The flags every task benchmark takes: --profile, --set KEY=VALUE, --runs-dir.

    Args:
        description: the benchmark's one-line description.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where the run goes (default: a temporary folder)")
    return parser


@dataclasses.dataclass
class TimedRun:
    """One benchmarked run: what it trained, what evaluation said, and what it cost."""

    task: Any
    config: Any
    result: Any
    evaluation: dict[str, Any]
    splits: dict[str, int]
    timings: dict[str, Any]

    def budget_note(self, seconds: float) -> str:
        """`(budget 300 s: ratio r)` for the quick profile, else nothing."""
        if self.timings["profile"] != "quick":
            return ""
        return f" (budget {QUICK_BUDGET_S} s: ratio {seconds / QUICK_BUDGET_S:.2f})"

    def cost_lines(self) -> list[str]:
        """The run's wall and CPU times as printed lines."""
        t = self.timings
        # On a busy machine wall time overstates the cost; CPU time / cores is what the run
        # would take on dedicated cores with perfect parallelism (a lower bound).
        return [
            f"  wall time: train {t['train_wall_time_s']:.0f} s"
            f"{self.budget_note(t['train_wall_time_s'])}, evaluate {t['eval_wall_time_s']:.0f} s,"
            f" total {t['total_wall_time_s']:.0f} s",
            f"  training CPU time {t['train_cpu_time_s']:.0f} s: at least "
            f"{t['train_cpu_time_s'] / t['cores']:.0f} s of wall time on {t['cores']} dedicated "
            "cores",
        ]


def timed_run(task_name: str, args: argparse.Namespace, run_name: str | None = None,
              ) -> TimedRun:
    """Prepare the task's data, train a profile through the shared trainer and evaluate it.

    Args:
        task_name: a registered task.
        args: parsed task_parser flags (profile, overrides, runs_dir).
        run_name: the run directory's name under the runs dir; default `<task>-<profile>`.
    """
    from pipelines.datasets import prepare_dataset
    from pipelines.tasks import get_task
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.trainer import train

    task = get_task(task_name)
    load_before = os.getloadavg()[0]
    started, cpu_started = time.monotonic(), cpu_seconds()
    splits = prepare_dataset(task.dataset)["splits"]
    prepared = time.monotonic()
    config = task.config(args.profile, args.overrides)
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
    result = train(task, config, runs_dir / (run_name or f"{task_name}-{args.profile}"))
    trained, cpu_trained = time.monotonic(), cpu_seconds()
    evaluation = evaluate_run(task, result.run_dir)
    done = time.monotonic()
    timings = {
        "task": task_name, "profile": args.profile, "overrides": args.overrides,
        "epochs": result.metrics["epochs_finished"],
        "prepare_wall_time_s": round(prepared - started, 1),
        "train_wall_time_s": round(trained - prepared, 1),
        "eval_wall_time_s": round(done - trained, 1),
        "total_wall_time_s": round(done - started, 1),
        "train_cpu_time_s": round(cpu_trained - cpu_started, 1),
        "cpu_time_s": round(cpu_seconds() - cpu_started, 1),
        "cores": cores(), "load_before": load_before, "load_after": os.getloadavg()[0],
        "run_dir": str(result.run_dir),
    }
    return TimedRun(task, config, result, evaluation, splits, timings)
