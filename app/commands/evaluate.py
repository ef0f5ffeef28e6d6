"""`rnnkit evaluate`: test-split metrics of a trained run, as one JSON object."""

from __future__ import annotations

import argparse
import json

HELP = "evaluate a trained run on the test split; prints one JSON object"
EXAMPLES = """examples:
  rnnkit evaluate sentiment --run-dir runs/sentiment/20250101-120000
  rnnkit evaluate sentiment_bow              # the task's newest trained run
  rnnkit evaluate classify --run-dir runs/classify/mine --data other_test.csv
  rnnkit evaluate language_model --run-dir runs/lm/wt2 --set cache_size=0
The result is also written to evaluation.json in the run directory (evaluation-<file stem>.json
for a file given with --data); logs go to stderr. --set changes a setting that evaluation reads
(e.g. max_eval_examples, a language model's cache_size) for this evaluation only; the run's
config.json is never changed.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    from app.commands.data_flags import add_data_arguments
    from app.commands.run_flags import add_run_arguments

    add_run_arguments(parser)
    add_data_arguments(parser, data_help="a labelled file (or data set name) to score "
                                         "instead of the run's test data")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="change one setting for this evaluation only; repeatable")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics.

    Args:
        args: the parsed command line.
    """
    from app.commands.data_flags import data_overrides
    from app.commands.run_flags import chosen_run
    from pipelines.training.evaluation import evaluate_run

    task, run_dir = chosen_run(args)
    # Evaluate's --data is the file to score: the run's test data, for this evaluation only.
    overrides = data_overrides(args, task, rename={"data": "test_data"}) + args.overrides
    result = evaluate_run(task, run_dir, overrides)
    print(json.dumps(result))
    return 0
