"""`rnnkit lab gradients`: the gradient lab (vanishing/exploding gradients, LSTM, GRU, clipping)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from serving.errors import UserError

log = logging.getLogger("app.commands.lab")

HELP = "run an experiment lab: `gradients` shows vanishing/exploding gradients and their cures"
EXAMPLES = """examples:
  rnnkit lab gradients                     # the full lab, under 15 minutes on 2 cores
  rnnkit lab gradients --quick             # a few seconds: every output, nothing learned
  rnnkit lab gradients --run-dir runs/lab-gradients/mine
  rnnkit lab gradients --lengths 10 50 100 200 400   # longer sequences: about 21 minutes
Writes lab.json, report.md and three PNG plots into runs/lab-gradients/<timestamp>/
(RNNKIT_RUNS_DIR) unless --run-dir is given, and prints a JSON summary.
"""

EXPERIMENTS = ("gradients",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("experiment", choices=EXPERIMENTS,
                        help="the lab to run: gradients (adding and copy/recall problems, "
                             "vanilla RNN, LSTM, GRU and LayerNormLSTM, with and without "
                             "clipping)")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="where the outputs go (default: a new runs/lab-gradients/<timestamp>)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, metavar="T",
                        help="sequence lengths of the sweep (default: 10 50 100 200)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that finish in seconds (checks the outputs; too short "
                             "to learn anything)")


def run(args: argparse.Namespace) -> int:
    """Run the lab and print where its outputs are and what it found, as JSON.

    Args:
        args: the parsed command line.
    """
    from pipelines.gradient_lab import lab as gradient_lab
    from pipelines.training.run_dir import new_run_dir

    if args.run_dir is not None and args.run_dir.exists() and not args.run_dir.is_dir():
        raise UserError(f"--run-dir {args.run_dir} is a file", "pass a directory path")
    if args.run_dir is not None and args.run_dir.is_dir() and any(args.run_dir.iterdir()):
        held = "a lab's results" if (args.run_dir / gradient_lab.LAB_FILE).exists() else "files"
        raise UserError(f"{args.run_dir} already holds {held}",
                        "pick a new or empty --run-dir (or leave it out for a new folder)")
    config = gradient_lab.LabConfig.quick() if args.quick else gradient_lab.LabConfig()
    if args.lengths:
        lengths = tuple(sorted(set(args.lengths)))
        curve = config.curve_length if config.curve_length in lengths else lengths[0]
        # The clipping comparison runs at the curve's length, one of those asked for.
        config = dataclasses.replace(config, lengths=lengths, curve_length=curve,
                                     unclipped_lengths=(curve,))
    try:
        config.check()
    except ValueError as err:
        raise UserError(f"cannot run the lab: {err}", "fix --lengths") from None
    run_dir = new_run_dir("lab-gradients", args.run_dir)  # after the checks: none left empty
    log.info("gradient lab (%s settings) into %s", "quick" if args.quick else "default", run_dir)
    lab = gradient_lab.run_lab(config, run_dir)
    print(json.dumps({
        "run_dir": str(run_dir),
        "report": str(run_dir / gradient_lab.REPORT_FILE),
        "lab_json": str(run_dir / gradient_lab.LAB_FILE),
        "plots": [str(run_dir / name) for name in (
            gradient_lab.GRADIENT_PLOT, gradient_lab.SUCCESS_PLOT, gradient_lab.NORM_PLOT)],
        "wall_time_s": lab["wall_time_s"],
        "learned": lab["summary"]["learned"],
    }, indent=2))
    return 0
