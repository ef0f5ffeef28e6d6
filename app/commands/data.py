"""`rnnkit data`: prepare real data sets into the TFDS cache (offline from RNNKIT_DATA_DIR)."""

from __future__ import annotations

import argparse
import json

HELP = "prepare a data set into the TFDS cache, once (offline from RNNKIT_DATA_DIR)"
EXAMPLES = """examples:
  rnnkit data prepare imdb
  RNNKIT_DATA_DIR=../shared/data rnnkit data prepare spa_eng
  rnnkit data prepare trec      # file-based sets (trec, ud_en_ewt, wikitext2): fetch, count
  rnnkit data list
Prepared data lands in RNNKIT_TFDS_DIR (default ~/.cache/rnnkit/tensorflow_datasets).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    from pipelines.datasets import dataset_names

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    prepare = actions.add_parser("prepare", help="prepare a data set (prints a JSON summary)")
    prepare.add_argument("name", metavar="NAME", help=f"one of {dataset_names()}")
    actions.add_parser("list", help="list the data sets that can be prepared")


def run(args: argparse.Namespace) -> int:
    """Prepare or list data sets.

    Args:
        args: the parsed command line.
    """
    from pipelines.datasets import dataset_names, prepare_dataset

    if args.action == "list":
        for name in dataset_names():
            print(name)
        return 0
    print(json.dumps(prepare_dataset(args.name)))
    return 0
