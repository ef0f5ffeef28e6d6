"""The data flags `rnnkit train` and `rnnkit evaluate` share (`--data`, `--text-column`, ...).

Each flag is the same as `--set FIELD=VALUE` for the task config's field of that name (so it is
saved in the run's config.json like every other setting); a flag whose field the task's config
lacks is a UserError.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from serving.errors import UserError

# flag -> (config field, help)
DATA_FLAGS: dict[str, tuple[str, str]] = {
    "--data": ("data", "training data: a .csv/.tsv/.jsonl file (CoNLL for tag), optionally .gz, "
                       "or a data set name such as trec or ud_en_ewt"),
    "--validation-data": ("validation_data", "validation file (default: a seeded "
                                             "validation_fraction of --data)"),
    "--test-data": ("test_data", "test file that `rnnkit evaluate` scores"),
    "--text-column": ("text_column", "column of the input text (classify)"),
    "--label-column": ("label_column", "column of the label (classify)"),
    "--token-column": ("token_column", "tag: the token column (1-based number, CoNLL-U name "
                                       "or JSONL key; default first / FORM / tokens)"),
    "--tag-column": ("tag_column", "tag: the tag column (default last / UPOS / tags)"),
    "--source-column": ("source_column", "seq2seq: the source text column"),
    "--target-column": ("target_column", "seq2seq: the target text column"),
    "--image-column": ("image_column", "caption: the image path column"),
    "--caption-column": ("caption_column", "caption: the caption column"),
    "--images": ("images", "caption: the folder image paths are relative to"),
}


def add_data_arguments(parser: argparse.ArgumentParser, data_help: str | None = None) -> None:
    """Add every data flag to a command's parser.

    Args:
        parser: the sub-command's parser.
        data_help: a command's own help for --data (evaluate scores the file instead).
    """
    group = parser.add_argument_group("data (each is the same as --set FIELD=VALUE)")
    for flag, (field, text) in DATA_FLAGS.items():
        if flag == "--data" and data_help:
            text = data_help
        group.add_argument(flag, dest=f"data_flag_{field}", default=None, metavar="VALUE",
                           help=text)


def data_overrides(args: argparse.Namespace, task: Any,
                   rename: dict[str, str] | None = None) -> list[str]:
    """The `field=value` overrides the data flags given on the command line stand for.

    Args:
        args: the parsed command line.
        task: the task; its config class must have a field for each flag given.
        rename: flag field -> config field, for a command whose flag means another field
            (evaluate's --data is the test data).
    """
    fields = {f.name for f in dataclasses.fields(task.config_class)}
    overrides = []
    for flag, (field, _) in DATA_FLAGS.items():
        value = getattr(args, f"data_flag_{field}", None)
        if value is None:
            continue
        target = (rename or {}).get(field, field)
        if target not in fields:
            raise UserError(f"task {task.name} takes no {flag}",
                            f"drop {flag}; see `rnnkit {args.command} --help`")
        overrides.append(f"{target}={value}")
    return overrides
