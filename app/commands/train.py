"""`rnnkit train`: train a task's model with the one shared trainer."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from serving.errors import UserError

log = logging.getLogger("app.commands.train")

HELP = "train a task's model (checkpoints every epoch, early stopping, --resume)"
EXAMPLES = """examples:
  rnnkit train sentiment                       # the quick profile, a few minutes on 2 cores
  rnnkit train sentiment --profile full --cell gru
  rnnkit train sentiment_bow --set epochs=5 --set max_tokens=40000
  rnnkit train sentiment --run-dir runs/sentiment/mine
  rnnkit train classify --data train.csv --text-column text --label-column label
  rnnkit train classify --data trec --profile full       # a data set rnnkit knows by name
  rnnkit train tag --data train.conllu --validation-data dev.conllu --test-data test.conllu
  rnnkit train sentiment --run-dir runs/sentiment/mine --resume --set epochs=6
  rnnkit train sentiment --profile full --set teachers=runs/sentiment/A,runs/sentiment_bow/B
      # self-training: also learn the teachers' answers on IMDB's 50k unlabelled reviews
  TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
              "task": {"type": "worker", "index": 0}}' \\
      rnnkit train sentiment --strategy multi_worker --run-dir /shared/runs/sentiment/mw
Runs land in runs/<task>/<timestamp>/ (RNNKIT_RUNS_DIR) unless --run-dir is given; the command
prints the run's training summary as JSON. `rnnkit runs` lists runs.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    from app.commands.data_flags import add_data_arguments
    from pipelines.tasks import task_names
    from pipelines.training.distribute import STRATEGIES

    parser.add_argument("task", metavar="TASK", help=f"one of {task_names()}")
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="settings profile: quick (default) or full")
    # No `choices`: run() checks the name against models.layers.CELLS, which holds every
    # registered cell (importing it here would load TensorFlow for `--help`).
    parser.add_argument("--cell", default=None, metavar="NAME",
                        help="recurrent cell, for tasks that have one: rnn, lstm, gru, ln_lstm "
                             "or any cell registered in models.layers (same as --set cell=...)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None,
                        help="tf.distribute strategy: default (one device), mirrored (this "
                             "machine's GPUs) or multi_worker (the workers in TF_CONFIG; see "
                             "docs/distributed.md); same as --set strategy=...")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="the run directory (default: a new runs/<task>/<timestamp>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir (default: the task's newest run) "
                             "from its last checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change one setting; repeatable")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Train and print the training summary as JSON.

    Args:
        args: the parsed command line.
    """
    from app.commands.data_flags import data_overrides
    from pipelines.tasks import get_task
    from pipelines.training.run_dir import list_runs
    from pipelines.training.trainer import resume_config, train

    task = get_task(args.task)
    overrides = data_overrides(args, task) + list(args.overrides)
    if args.cell:
        if "cell" not in {f.name for f in dataclasses.fields(task.config_class)}:
            raise UserError(f"task {task.name} has no recurrent cell to choose",
                            "drop --cell")
        from models.layers import CELLS

        if args.cell not in CELLS:
            raise UserError(f"--cell {args.cell} is not a registered cell",
                            f"use one of {', '.join(sorted(CELLS))}, or register yours with "
                            "models.layers.register_cell")
        overrides.insert(0, f"cell={args.cell}")
    if args.strategy:
        overrides.insert(0, f"strategy={args.strategy}")

    run_dir = args.run_dir
    if args.resume:
        if args.profile:
            raise UserError("--profile cannot change a resumed run",
                            "drop --profile; change single settings with --set KEY=VALUE")
        if run_dir is None:
            candidates = [r for r in list_runs(task.name) if r["trained"]]
            if not candidates:
                raise UserError(f"--resume found no run of task {task.name} to continue",
                                f"start one: rnnkit train {task.name}")
            run_dir = Path(candidates[-1]["run_dir"])
        config = resume_config(task, run_dir, overrides)
    else:
        config = task.config(args.profile or "quick", overrides)

    result = train(task, config, run_dir, resume=args.resume)
    if result.terminated_on_nan:
        raise UserError(
            f"training of {result.run_dir} stopped: the loss became NaN or infinite",
            "lower the learning rate (--set learning_rate=1e-4) and keep gradient clipping "
            "on (--set clipnorm=1.0)")
    print(json.dumps({"run_dir": str(result.run_dir), **result.metrics}))
    return 0
